"""E-mails for each lifecycle step: who gets them, what they say, and that each goes once
(Django's locmem outbox; tests/test_expiry_smtp.py sends through a real SMTP server)."""

import types

import pytest
from django.db import transaction

from portal.hubs import expiry, lifecycle
from portal.hubs.lifecycle import HubState, transition
from portal.hubs.models import HubEvent, Member
from portal.hubs.services import decisions
from portal.notifications import mail
from portal.notifications.models import Notice
from tests.factories import AdminFactory, HubFactory, UserFactory

pytestmark = pytest.mark.django_db

OWNERS = ["alice@example.org", "dave@example.org"]


@pytest.fixture
def people(hub):
    """Alice owns the hub, dave co-owns it, erin is a member (members get no mail)."""
    Member.objects.create(hub=hub, user=UserFactory(username="dave"), role="co-owner")
    Member.objects.create(hub=hub, user=UserFactory(username="erin"), role="member")
    return hub


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run an action and then its after-commit callbacks, as a real commit would."""

    def run(action, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return action(*args, **kwargs)

    return run


def only(outbox):
    assert len(outbox) == 1, [m.subject for m in outbox]
    message = outbox[0]
    (html, mimetype) = message.alternatives[0]
    assert mimetype == "text/html"
    return message, html


def at_state(hub, state):
    type(hub).objects.filter(pk=hub.pk).update(state=state)


def test_approved(people, charlie, committed, mailoutbox, queued):
    committed(decisions.approve, people, charlie)
    message, html = only(mailoutbox)
    assert message.to == OWNERS
    assert message.subject == 'Your hub "Alice\'s course" was approved'
    assert "approved by charlie" in message.body and "approved by charlie" in html
    assert f"http://127.0.0.1:8000/hubs/{people.pk}/" in message.body


def test_approved_inside_policy_on_submit(alice, spec, committed, mailoutbox, queued):
    hub = committed(decisions.submit, alice, spec())
    assert hub.state == HubState.APPROVED
    message, _ = only(mailoutbox)
    assert message.to == ["alice@example.org"]
    assert "inside the self-service policy" in message.body


def test_rejected_with_reason(people, charlie, committed, mailoutbox):
    committed(decisions.reject, people, charlie, "GPUs are booked until May; ask for CPUs & RAM.")
    message, html = only(mailoutbox)
    assert message.to == OWNERS
    assert "rejected" in message.subject
    assert "Reason: GPUs are booked until May; ask for CPUs & RAM." in message.body
    assert "ask for CPUs &amp; RAM." in html  # escaped in HTML, plain in text


def test_running_with_the_url(people, committed, mailoutbox, settings):
    settings.HUBS_DOMAIN = "hubs.example.org"
    at_state(people, HubState.PROVISIONING)
    committed(lifecycle.mark_running, people.pk)
    message, html = only(mailoutbox)
    assert message.subject == 'Your hub "Alice\'s course" is running'
    assert "https://alice-course.hubs.example.org" in message.body
    assert 'href="https://alice-course.hubs.example.org"' in html


def test_failed_goes_to_admins_too(people, committed, mailoutbox):
    AdminFactory(username="charlie")
    AdminFactory(username="nomail", email="")  # admins without an address are skipped
    at_state(people, HubState.PROVISIONING)
    committed(lifecycle.mark_failed, people.pk, "quota exceeded: requested.cpu=80")
    message, html = only(mailoutbox)
    assert message.to == [*OWNERS, "charlie@example.org"]
    assert "Reason: quota exceeded: requested.cpu=80" in message.body
    assert "quota exceeded" in html and "while provisioning" in message.body


def test_suspended_with_the_data_kept_until_date(people, committed, mailoutbox, settings, queued):
    settings.EXPIRY_GRACE_DAYS = 21
    at_state(people, HubState.EXPIRING)
    committed(expiry.suspend, people, "Usage period ended")
    message, html = only(mailoutbox)
    assert message.to == OWNERS
    event = people.events.get(to_state=HubState.SUSPENDED)

    kept = people.data_kept_until(event.created)
    assert (kept - max(event.created, people.ends_at())).days == 21
    assert kept.strftime("%-d %B %Y") in message.body and kept.strftime("%-d %B %Y") in html


def test_deleted(people, committed, mailoutbox):
    at_state(people, HubState.DEPROVISIONING)
    committed(lifecycle.mark_deleted, people.pk)
    message, _ = only(mailoutbox)
    assert message.subject == 'Your hub "Alice\'s course" was deleted'
    assert "https://alice-course." in message.body


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (HubState.UPDATING, HubState.RUNNING),  # a change applied: the change mails cover it
        (HubState.EXPIRING, HubState.RUNNING),  # an extension
        (HubState.FAILED, HubState.APPROVED),  # a retry
        (HubState.RUNNING, HubState.EXPIRING),  # the expiry warning covers it
        (HubState.SUSPENDED, HubState.DEPROVISIONING),  # the "deleted" mail follows
        (HubState.PENDING, HubState.CANCELLED),
    ],
)
def test_transitions_without_a_mail(people, committed, mailoutbox, source, target):
    at_state(people, source)
    committed(transition, people.pk, source, target)
    assert mailoutbox == []


def test_each_event_mails_once(people, charlie, committed, mailoutbox, queued):
    committed(decisions.approve, people, charlie)
    event = people.events.get(to_state=HubState.APPROVED)
    assert mail.notify_event(event.pk) is None  # a second delivery finds the notice
    assert len(mailoutbox) == 1
    notice = Notice.objects.get(hub=people)
    assert (notice.kind, notice.key, notice.status) == ("approved", f"event:{event.pk}", "sent")
    assert notice.recipients.split() == OWNERS


def test_a_rolled_back_transition_sends_nothing(people, charlie, committed, mailoutbox):
    def approve_then_fail():
        with transaction.atomic():
            transition(people.pk, HubState.PENDING, HubState.APPROVED, charlie, "ok")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        committed(approve_then_fail)
    assert mailoutbox == [] and not HubEvent.objects.filter(to_state=HubState.APPROVED).exists()


def test_a_mail_server_failure_does_not_break_the_transition(
    people, charlie, committed, settings, queued
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    settings.EMAIL_HOST_PASSWORD = "s3cret-never-logged"
    hub = committed(decisions.approve, people, charlie)
    assert hub.state == HubState.APPROVED
    notice = Notice.objects.get(hub=people)
    assert notice.status == Notice.Status.FAILED
    assert notice.detail and "s3cret" not in notice.detail
    assert [name for name, *_ in queued] == ["provision"]


def test_nobody_to_tell(alice, committed, mailoutbox, charlie, queued):
    hub = HubFactory(owner=UserFactory(username="noaddress", email=""))
    committed(decisions.approve, hub, charlie)
    assert mailoutbox == []
    assert Notice.objects.get(hub=hub).status == Notice.Status.SKIPPED


@pytest.mark.parametrize("decision", ["approved", "rejected"])
def test_notify_change_for_a_revision(people, committed, mailoutbox, decision):
    # Any object with .hub, .pk and .number stands for a HubRevision (the versioned changes
    # call this with theirs).
    revision = types.SimpleNamespace(hub=people, pk=41, number=3)
    committed(mail.notify_change, revision, decision, "More GPUs are free now.")
    committed(mail.notify_change, revision, decision, "More GPUs are free now.")  # once only
    message, html = only(mailoutbox)
    assert message.to == OWNERS
    assert message.subject == f'A change to your hub "Alice\'s course" was {decision}'
    assert "revision 3" in message.body and "More GPUs are free now." in message.body
    assert "revision 3" in html


def test_notify_change_for_a_hub_without_revisions(people, committed, mailoutbox):
    committed(mail.notify_change, people, "rejected", "Too many users.")
    message, _ = only(mailoutbox)
    assert "Reason: Too many users." in message.body and "revision" not in message.body
    with pytest.raises(ValueError):
        mail.notify_change(people, "maybe")
