"""A notice the mail server did not take is sent again, as it was composed, after a doubling
delay, until it goes through or NOTICE_MAX_ATTEMPTS is reached. The mail server is a real one
(aiosmtpd, tests/smtp_support.py); "down" is a local port nobody listens on."""

import datetime

import pytest
from django.utils import timezone

from portal.hubs.services import decisions
from portal.notifications import mail
from portal.notifications.models import Notice
from portal.notifications.tasks import retry_notices
from tests.factories import AdminFactory, HubFactory, UserFactory
from tests.support import free_port, needs_postgresql, race

pytestmark = pytest.mark.django_db

MINUTE = datetime.timedelta(minutes=1)


@pytest.fixture
def server_down(smtp_server, settings):
    """The SMTP server runs, but the portal is pointed at a closed port; `up()` fixes that."""
    port = settings.EMAIL_PORT
    settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = free_port(), 2
    settings.NOTICE_RETRY_SECONDS, settings.NOTICE_MAX_ATTEMPTS = 300, 3

    def up():
        settings.EMAIL_PORT = port

    smtp_server.up = up
    return smtp_server


@pytest.fixture
def failed(server_down, django_capture_on_commit_callbacks, queued):
    """The approval notice of alice's hub, which the mail server did not take."""
    hub = HubFactory(owner=UserFactory(username="alice", email="alice@example.org"), slug="lab")
    with django_capture_on_commit_callbacks(execute=True):
        decisions.approve(hub, AdminFactory())
    return Notice.objects.get(hub=hub)


def test_a_failed_notice_is_kept_with_its_message_and_its_next_attempt(failed):
    assert (failed.status, failed.attempts) == (Notice.Status.FAILED, 1)
    assert "ConnectionRefusedError" in failed.detail
    assert failed.subject and "approved" in failed.text.lower() and "<html" in failed.html.lower()
    assert failed.recipients.split() == ["alice@example.org"]
    assert abs(failed.next_attempt - failed.created - 5 * MINUTE) < MINUTE


def test_it_is_sent_again_unchanged_when_due_and_not_before(failed, server_down):
    server_down.up()
    assert mail.retry_failed(failed.next_attempt - MINUTE) == 0
    assert server_down.envelopes == []

    assert mail.retry_failed(failed.next_attempt) == 1

    ((to, message),) = server_down.messages()
    assert to == ["alice@example.org"]
    assert message["Subject"] == failed.subject
    body = message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    assert body.strip() == failed.text.strip()
    notice = Notice.objects.get(pk=failed.pk)
    assert (notice.status, notice.attempts, notice.next_attempt) == ("sent", 2, None)
    assert notice.sent == failed.next_attempt and notice.detail == ""
    assert mail.retry_failed(failed.next_attempt + 60 * MINUTE) == 0  # sent once only


def test_the_delay_doubles_and_it_is_given_up_after_the_last_attempt(failed, server_down):
    first = failed.next_attempt
    assert mail.retry_failed(first) == 0  # still down: attempt 2
    second = Notice.objects.get(pk=failed.pk)
    assert (second.attempts, second.next_attempt) == (2, first + 10 * MINUTE)

    assert mail.retry_failed(second.next_attempt) == 0  # attempt 3 of 3: given up
    last = Notice.objects.get(pk=failed.pk)
    assert (last.status, last.attempts, last.next_attempt) == ("failed", 3, None)
    server_down.up()
    assert mail.retry_failed(first + 24 * 60 * MINUTE) == 0
    assert server_down.envelopes == []


def test_the_beat_task_sends_what_is_due(failed, server_down, settings):
    Notice.objects.filter(pk=failed.pk).update(next_attempt=timezone.now() - MINUTE)
    server_down.up()
    assert retry_notices() == 1
    assert len(server_down.envelopes) == 1
    assert "retry-notices" in settings.CELERY_BEAT_SCHEDULE


def test_an_admin_sends_a_failed_notice_again_from_the_django_admin(failed, server_down, client):
    server_down.up()
    client.force_login(AdminFactory(username="postmaster"))
    response = client.post(
        "/admin/notifications/notice/",
        {"action": "send_again", "_selected_action": [failed.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert Notice.objects.get(pk=failed.pk).status == Notice.Status.SENT
    assert len(server_down.envelopes) == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_workers_retrying_at_once_send_a_notice_once(server_down, queued):
    hub = HubFactory(owner=UserFactory(username="alice", email="alice@example.org"))
    decisions.approve(hub, AdminFactory())  # its notice fails at commit: the server is down
    notice = Notice.objects.get(hub=hub)
    assert notice.status == Notice.Status.FAILED
    server_down.up()
    due = notice.next_attempt

    race(lambda: mail.retry_failed(due), lambda: mail.retry_failed(due), losing=())

    assert len(server_down.envelopes) == 1
    assert Notice.objects.get(pk=notice.pk).attempts == 2


def test_a_run_stops_at_the_first_failure_and_leaves_the_rest_due(failed, server_down):
    """With the server still down, one attempt is made per run, not one per due notice (each
    could wait out EMAIL_TIMEOUT); the others are tried on a later run."""
    others = []
    for n in range(2):
        notice = Notice.objects.get(pk=failed.pk)
        notice.pk, notice.key = None, f"copy:{n}"
        notice.save()
        others.append(notice)
    due = failed.next_attempt

    assert mail.retry_failed(due) == 0

    attempts = dict(Notice.objects.values_list("key", "attempts"))
    assert sorted(attempts.values()) == [1, 1, 2]  # one of the three was tried again
    server_down.up()
    assert mail.retry_failed(due) == 2  # the two still due go out; the third waits its delay
    assert len(server_down.envelopes) == 2
