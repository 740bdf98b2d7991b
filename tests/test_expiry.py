"""Expiry over a hub's timeline, with the clock injected (no sleeps): warnings 14, 3 and 1 days
before the end, each exactly once even when the pass runs twice; an extension re-arms them;
suspension at the end queues provisioning (scale to zero); deletion after the grace period."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.hubs import expiry, lifecycle, tasks
from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, Member
from portal.notifications.models import Notice
from tests.factories import HubFactory, UserFactory

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def running(alice, today):
    """Alice's running hub, ending 30 days from today, with a co-owner and a member."""
    hub = HubFactory(
        owner=alice,
        slug="alice-course",
        display_name="Alice's course",
        state=HubState.RUNNING,
        start_date=today - 10 * DAY,
        end_date=today + 30 * DAY,
    )
    Member.objects.create(hub=hub, user=UserFactory(username="dave"), role="co-owner")
    Member.objects.create(hub=hub, user=UserFactory(username="erin"), role="member")
    return hub


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """One expiry pass at `now`, with its after-commit work (mails, queued tasks) executed."""

    def run_at(now):
        with django_capture_on_commit_callbacks(execute=True):
            return expiry.run(now)

    return run_at


def warnings_in(outbox):
    return [m for m in outbox if "ends in" in m.subject]


def test_timeline_warns_once_per_threshold_then_suspends_then_deletes(
    running, run, mailoutbox, queued
):
    end = running.ends_at()
    assert end == timezone.make_aware(
        datetime.datetime.combine(running.end_date + DAY, datetime.time.min)
    )

    run(end - 15 * DAY)
    assert mailoutbox == [] and Hub.objects.get(pk=running.pk).state == HubState.RUNNING

    expected_subjects = []
    for days in (14, 3, 1):
        now = end - days * DAY + HOUR
        first, second = run(now), run(now)  # the second pass (a restart, a duplicate) is a no-op
        assert first.warned == [running.pk] and second.warned == []
        expected_subjects.append(f'Your hub "Alice\'s course" ends in {days} day')
        assert [m.subject.rstrip("s") for m in mailoutbox] == expected_subjects
        # In between thresholds nothing is sent.
        run(now + DAY - 2 * HOUR)
        assert len(mailoutbox) == len(expected_subjects)
    assert Hub.objects.get(pk=running.pk).state == HubState.EXPIRING
    assert mailoutbox[0].subject.endswith("ends in 14 days") and mailoutbox[2].subject.endswith(
        "ends in 1 day"
    )

    # Past the end date: suspended once, provisioning queued to scale it to zero.
    assert run(end + HOUR).suspended == [running.pk]
    assert run(end + 2 * HOUR).suspended == []
    hub = Hub.objects.get(pk=running.pk)
    assert hub.state == HubState.SUSPENDED
    assert queued == [("provision", (running.pk,), {"queue": "provisioning"})]
    suspended = [m for m in mailoutbox if "suspended" in m.subject]
    assert len(suspended) == 1
    kept = timezone.localtime(end + 14 * DAY)
    assert hub.data_kept_until() == end + 14 * DAY
    assert kept.strftime("%A, %-d %B %Y") in suspended[0].body

    # Grace period: kept until `end + 14 days`, deleted right after.
    assert run(end + 14 * DAY - HOUR).deleted == []
    assert run(end + 14 * DAY + HOUR).deleted == [running.pk]
    assert run(end + 14 * DAY + 2 * HOUR).deleted == []
    assert Hub.objects.get(pk=running.pk).state == HubState.DEPROVISIONING
    assert queued[1:] == [("deprovision", (running.pk,), {"queue": "provisioning"})]

    path = [(e.from_state, e.to_state) for e in running.events.order_by("created", "pk")]
    assert path == [
        (HubState.RUNNING, HubState.EXPIRING),
        (HubState.EXPIRING, HubState.SUSPENDED),
        (HubState.SUSPENDED, HubState.DEPROVISIONING),
    ]
    assert len(warnings_in(mailoutbox)) == 3
    for message in warnings_in(mailoutbox):
        assert message.to == ["alice@example.org", "dave@example.org"]  # not erin, a member


def test_extension_rearms_the_warnings(running, run, mailoutbox):
    end = running.ends_at()
    run(end - 14 * DAY + HOUR)
    run(end - 3 * DAY + HOUR)
    assert len(warnings_in(mailoutbox)) == 2

    # An approved change moves the end date by 30 days (the change service updates the row).
    Hub.objects.filter(pk=running.pk).update(end_date=running.end_date + 30 * DAY)
    result = run(end - 3 * DAY + 2 * HOUR)
    assert result.extended == [running.pk] and result.warned == []
    assert Hub.objects.get(pk=running.pk).state == HubState.RUNNING

    running.refresh_from_db()
    new_end = running.ends_at()
    assert new_end == end + 30 * DAY
    assert run(new_end - 14 * DAY + HOUR).warned == [running.pk]
    assert run(new_end - 3 * DAY + HOUR).warned == [running.pk]
    assert len(warnings_in(mailoutbox)) == 4
    assert warnings_in(mailoutbox)[2].subject.endswith("ends in 14 days")
    # The link offers the new end date + 30 days.
    proposed = (running.end_date + 30 * DAY).isoformat()
    link = f"http://127.0.0.1:8000/hubs/{running.pk}/change/?end_date={proposed}"
    assert link in warnings_in(mailoutbox)[2].body


def test_a_short_period_gets_only_the_most_urgent_warning(running, run, mailoutbox):
    end = running.ends_at()
    # Beat was down (or the hub is short): 2 days left, the 14- and 3-day windows both apply.
    assert run(end - 2 * DAY).warned == [running.pk]
    assert [m.subject for m in mailoutbox] == ['Your hub "Alice\'s course" ends in 2 days']
    skipped = Notice.objects.get(hub=running, key=f"{running.end_date}:14")
    assert skipped.status == Notice.Status.SKIPPED
    assert run(end - 2 * DAY + HOUR).warned == []  # no stale 14-day warning afterwards
    assert run(end - DAY + HOUR).warned == [running.pk]
    assert len(mailoutbox) == 2


def test_a_missed_window_still_passes_through_expiring(running, run, mailoutbox, queued):
    end = running.ends_at()
    assert run(end + HOUR).suspended == [running.pk]
    path = [e.to_state for e in running.events.order_by("created", "pk")]
    assert path == [HubState.EXPIRING, HubState.SUSPENDED]
    assert [name for name, *_ in queued] == ["provision"]
    assert [m.subject for m in mailoutbox] == ['Your hub "Alice\'s course" was suspended']


def test_the_warning_mail_holds_the_extension_link(running, run, mailoutbox, settings):
    settings.PORTAL_URL = "https://portal.example.org"
    run(running.ends_at() - 14 * DAY + HOUR)
    (message,) = mailoutbox
    proposed = (running.end_date + 30 * DAY).isoformat()
    link = f"https://portal.example.org/hubs/{running.pk}/change/?end_date={proposed}"
    html = message.alternatives[0][0]
    assert link in message.body and f'href="{link}"' in html
    assert f"https://portal.example.org/hubs/{running.pk}/" in message.body
    assert "kept for 14 more days" in message.body


def test_thresholds_and_grace_are_configurable(running, run, mailoutbox, settings):
    settings.EXPIRY_WARNING_DAYS = "7"
    settings.EXPIRY_GRACE_DAYS = 2
    end = running.ends_at()
    assert run(end - 14 * DAY + HOUR).warned == []
    assert Hub.objects.get(pk=running.pk).state == HubState.RUNNING  # outside the 7-day window
    assert run(end - 7 * DAY + HOUR).warned == [running.pk]
    run(end + HOUR)
    assert run(end + 2 * DAY - HOUR).deleted == []
    assert run(end + 2 * DAY + HOUR).deleted == [running.pk]


@pytest.mark.parametrize(
    "state",
    [HubState.PENDING, HubState.APPROVED, HubState.PROVISIONING, HubState.FAILED, HubState.DELETED],
)
def test_hubs_not_in_service_are_left_alone(alice, today, run, mailoutbox, state):
    hub = HubFactory(owner=alice, state=state, start_date=today - 40 * DAY, end_date=today - DAY)
    result = run(timezone.now() + 60 * DAY)
    assert result.suspended == result.deleted == result.warned == []
    assert Hub.objects.get(pk=hub.pk).state == state
    assert mailoutbox == []


def test_an_updating_hub_is_warned_but_suspended_only_once_running(alice, today, run, mailoutbox):
    hub = HubFactory(owner=alice, state=HubState.UPDATING, start_date=today, end_date=today + DAY)
    end = hub.ends_at()
    assert run(end - DAY).warned == [hub.pk]
    assert run(end + HOUR).suspended == []
    assert Hub.objects.get(pk=hub.pk).state == HubState.UPDATING
    lifecycle.mark_running(hub.pk)
    assert run(end + 2 * HOUR).suspended == [hub.pk]


def test_the_celery_task_runs_a_pass_now(alice, today, queued, django_capture_on_commit_callbacks):
    over = HubFactory(
        owner=alice, state=HubState.RUNNING, start_date=today - 9 * DAY, end_date=today - DAY
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = tasks.run_expiry.apply().get()
    assert result["suspended"] == [over.pk]
    assert Hub.objects.get(pk=over.pk).state == HubState.SUSPENDED


def test_the_pass_is_scheduled_by_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["expire-hubs"]
    assert entry["task"] == tasks.run_expiry.name == "portal.hubs.tasks.run_expiry"
    assert entry["schedule"] == 3600


# --- Admin actions on a suspended hub -----------------------------------------------------------


@pytest.fixture
def suspended(alice, today):
    return HubFactory(owner=alice, state=HubState.SUSPENDED, start_date=today, end_date=today + DAY)


def test_resume_queues_provisioning(suspended, charlie, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        hub = expiry.resume(suspended, charlie)
    assert hub.state == HubState.PROVISIONING
    assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]
    assert hub.events.get().actor == charlie


def test_resume_refuses_a_hub_past_its_end_date(alice, charlie, today, queued):
    hub = HubFactory(
        owner=alice, state=HubState.SUSPENDED, start_date=today - 9 * DAY, end_date=today - DAY
    )
    with pytest.raises(expiry.EndDatePassed, match="extend it first"):
        expiry.resume(hub, charlie)
    assert Hub.objects.get(pk=hub.pk).state == HubState.SUSPENDED


def test_delete_now_queues_deprovisioning(
    suspended, charlie, queued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        hub = expiry.delete_now(suspended, charlie)
    assert hub.state == HubState.DEPROVISIONING
    assert queued == [("deprovision", (hub.pk,), {"queue": "provisioning"})]


def test_hub_page_says_until_when_data_is_kept(client, alice, running, run, queued):
    end = running.ends_at()
    run(end + HOUR)
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[running.pk])).content.decode()
    kept = timezone.localtime(end + 14 * DAY).strftime("%Y-%m-%d %H:%M")
    assert "data is kept until" in page and kept in page
    assert "Resume" not in page  # admins only
