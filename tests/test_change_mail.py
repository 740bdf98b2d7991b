"""Owners hear about an admin's decision on their change by mail."""

import pytest

from portal.hubs.services import changes
from tests.test_revisions import change

pytestmark = pytest.mark.django_db


def request_beyond_policy(hub, owner, capture):
    with capture(execute=True):
        return changes.request_change(hub, owner, change(hub, expected_users=80))


def test_an_approved_change_is_mailed_to_the_owner(
    running_hub, alice, charlie, queued, mailoutbox, django_capture_on_commit_callbacks
):
    revision = request_beyond_policy(running_hub, alice, django_capture_on_commit_callbacks)
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        changes.approve_change(revision, charlie, "Big course")
    approved = [m for m in mailoutbox if "approved" in m.subject.lower()]
    assert len(approved) == 1
    assert approved[0].to == [alice.email]
    assert f"revision {revision.number}" in approved[0].body
    assert "Big course" in approved[0].body


def test_a_rejected_change_is_mailed_with_its_reason(
    running_hub, alice, charlie, queued, mailoutbox, django_capture_on_commit_callbacks
):
    revision = request_beyond_policy(running_hub, alice, django_capture_on_commit_callbacks)
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        changes.reject_change(revision, charlie, "Not this semester")
    (mail,) = mailoutbox
    assert mail.to == [alice.email]
    assert "Not this semester" in mail.body
    assert "rejected" in mail.subject.lower()
