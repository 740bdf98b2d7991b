"""A real SMTP server (aiosmtpd, on a free local port) receives a hub's expiry warnings and its
suspension notice when the clock is moved past the dates (injected time, no sleeps)."""

import datetime

import pytest

from portal.hubs import expiry
from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, Member
from portal.notifications.models import Notice
from tests.factories import HubFactory, UserFactory

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)


def parts(message):
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_smtp_server_receives_warnings_and_suspension_notice(
    smtp_server, alice, today, queued, django_capture_on_commit_callbacks
):
    hub = HubFactory(
        owner=alice,
        slug="alice-course",
        display_name="Alice's course",
        state=HubState.RUNNING,
        start_date=today - 10 * DAY,
        end_date=today + 20 * DAY,
    )
    Member.objects.create(hub=hub, user=UserFactory(username="dave"), role="co-owner")
    Member.objects.create(hub=hub, user=UserFactory(username="erin"), role="member")
    end = hub.ends_at()

    def run(now):
        with django_capture_on_commit_callbacks(execute=True):
            return expiry.run(now)

    # The clock moves past each warning date (twice per date: still one mail each), then past
    # the end date.
    for days in (14, 3, 1):
        run(end - days * DAY + datetime.timedelta(hours=2))
        run(end - days * DAY + datetime.timedelta(hours=3))
    run(end + datetime.timedelta(hours=1))
    run(end + datetime.timedelta(hours=2))

    assert Hub.objects.get(pk=hub.pk).state == HubState.SUSPENDED
    received = smtp_server.messages()
    subjects = [message["Subject"] for _, message in received]
    assert subjects == [
        'Your hub "Alice\'s course" ends in 14 days',
        'Your hub "Alice\'s course" ends in 3 days',
        'Your hub "Alice\'s course" ends in 1 day',
        'Your hub "Alice\'s course" was suspended',
    ]
    proposed = (hub.end_date + 30 * DAY).isoformat()
    link = f"https://portal.example.org/hubs/{hub.pk}/change/?end_date={proposed}"
    for rcpt_tos, message in received:
        assert sorted(rcpt_tos) == ["alice@example.org", "dave@example.org"]  # not erin
        assert message["From"] == "Hub on Demand <hubs@portal.example.org>"
        assert message.get_content_type() == "multipart/alternative"
        text, html = parts(message)
        assert "Alice's course" in text and "Alice&#x27;s course" in html
        assert f"https://portal.example.org/hubs/{hub.pk}/" in text
    for _, message in received[:3]:
        text, html = parts(message)
        assert link in text and f'href="{link}"' in html
    text, html = parts(received[3][1])
    kept = (end + 14 * DAY).strftime("%-d %B %Y")
    assert "kept until" in text and kept in text and kept in html
    assert Notice.objects.filter(hub=hub, status=Notice.Status.SENT).count() == 4
    assert [name for name, *_ in queued] == ["provision"]
