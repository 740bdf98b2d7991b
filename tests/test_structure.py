"""The shapes the rest of the portal relies on: the revision state machine, the one HubEvent
writer and its signal, the queue hand-over and its routing, and the HubSpec adapter."""

import datetime

import pytest

from portal.celery import app
from portal.hubs import hubspec, lifecycle, members, queue, revisions
from portal.hubs.lifecycle import (
    REVISION_TRANSITIONS,
    ChangeNotAllowed,
    HubState,
    RevisionState,
)
from portal.hubs.models import HubEvent, HubRevision, Member
from tests.factories import HubFactory, UserFactory

pytestmark = pytest.mark.django_db

# Written out by hand, not derived from the table: a wrong new edge breaks these tests.
REVISION_EDGES = {
    ("pending", "approved"),
    ("pending", "rejected"),
    ("approved", "applied"),
    ("applied", "superseded"),
}


# Written out by hand: every periodic task, and how often beat runs it by default.
BEAT = {
    "sweep-stuck-hubs": ("portal.hubs.tasks.sweep_stuck_hubs", 60),
    "reconcile-hubs": ("portal.hubs.tasks.reconcile_hubs", 300),
    "expire-hubs": ("portal.hubs.tasks.run_expiry", 3600),
    "collect-usage": ("portal.usage.tasks.collect_usage", 300),
    "prune-usage": ("portal.usage.tasks.prune_usage", 24 * 3600),
    "keep-classes-warm": ("portal.hubs.tasks.keep_classes_warm", 60),
    "enforce-server-policy": ("portal.hubs.tasks.enforce_server_policies", 60),
    "refresh-identities": ("portal.accounts.tasks.refresh_identities", 900),
    "clear-expired-sessions": ("portal.accounts.tasks.clear_expired_sessions", 24 * 3600),
    "retry-notices": ("portal.notifications.tasks.retry_notices", 60),
}
BEAT_SETTINGS = {
    "sweep-stuck-hubs": "SWEEP_INTERVAL_SECONDS",
    "reconcile-hubs": "RECONCILE_INTERVAL_SECONDS",
    "expire-hubs": "EXPIRY_INTERVAL_SECONDS",
    "collect-usage": "USAGE_COLLECT_INTERVAL_SECONDS",
    "keep-classes-warm": "WARM_INTERVAL_SECONDS",
    "enforce-server-policy": "SERVER_POLICY_INTERVAL_SECONDS",
    "refresh-identities": "OIDC_REFRESH_INTERVAL_SECONDS",
    "retry-notices": "NOTICE_RETRY_INTERVAL_SECONDS",
}


def test_beat_runs_every_periodic_task_at_its_interval():
    schedule = {name: (e["task"], e["schedule"]) for name, e in app.conf.beat_schedule.items()}
    assert schedule == BEAT
    app.loader.import_default_modules()
    assert [task for task, _ in BEAT.values() if task not in app.tasks] == []


def test_each_interval_setting_reaches_beat():
    """Settings are read when the process starts, so a fresh one reads them."""
    import json
    import os
    import subprocess
    import sys

    # Above every setting's lower bound (the identity refresh runs at most once a minute).
    wanted = {name: 61 + n for n, name in enumerate(BEAT_SETTINGS)}
    env = {**os.environ, **{BEAT_SETTINGS[name]: str(value) for name, value in wanted.items()}}
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, json; django.setup(); from portal.celery import app; "
            "print(json.dumps({k: v['schedule'] for k, v in app.conf.beat_schedule.items()}))",
        ],
        env={**env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    schedule = json.loads(shown.stdout.strip().splitlines()[-1])
    assert schedule == {**{name: every for name, (_, every) in BEAT.items()}, **wanted}


def test_revision_transition_table_is_the_documented_one():
    edges = {(a.value, b.value) for a, targets in REVISION_TRANSITIONS.items() for b in targets}
    assert edges == REVISION_EDGES
    assert set(REVISION_TRANSITIONS) == set(RevisionState)


def _revision(state: str) -> HubRevision:
    hub = HubFactory(state=HubState.RUNNING)
    return lifecycle.create_revision(
        hub=hub,
        number=2,
        spec={},
        state=state,
        author=hub.owner,
        created=hub.created,
    )


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [(a, b) for a in RevisionState for b in RevisionState if (a.value, b.value) in REVISION_EDGES],
)
def test_allowed_revision_transition_is_one_update_and_a_signal(from_state, to_state):
    revision = _revision(from_state)
    seen = []

    def receiver(sender, **kwargs):
        seen.append((kwargs["from_state"], kwargs["to_state"]))

    lifecycle.revision_transitioned.connect(receiver)
    try:
        lifecycle.transition_revision(revision, to_state, reason="because")
    finally:
        lifecycle.revision_transitioned.disconnect(receiver)
    revision.refresh_from_db()
    assert (revision.state, revision.reason) == (to_state, "because")
    assert seen == [(from_state, to_state)]


@pytest.mark.parametrize(
    ("from_state", "to_state"),
    [
        (a, b)
        for a in RevisionState
        for b in RevisionState
        if (a.value, b.value) not in REVISION_EDGES
    ],
)
def test_forbidden_revision_transition_changes_nothing(from_state, to_state):
    revision = _revision(from_state)
    with pytest.raises(ChangeNotAllowed, match=f"Change #2 is {from_state.label.lower()} now"):
        lifecycle.transition_revision(revision, to_state, reason="no")
    revision.refresh_from_db()
    assert (revision.state, revision.reason) == (from_state, "")


def test_record_event_writes_one_event_and_sends_the_signal():
    hub = HubFactory(state=HubState.RUNNING)
    seen = []

    def receiver(sender, event, **kwargs):
        seen.append(event.pk)

    lifecycle.hub_event_recorded.connect(receiver)
    try:
        event = lifecycle.record_event(hub.pk, hub.state, hub.state, reason="Repaired: x")
    finally:
        lifecycle.hub_event_recorded.disconnect(receiver)
    assert seen == [event.pk]
    assert list(HubEvent.objects.filter(hub=hub).values_list("from_state", "to_state")) == [
        ("running", "running")
    ]
    hub.refresh_from_db()
    assert hub.state == HubState.RUNNING  # an event that changes no state moves nothing


def test_every_queued_task_is_registered_and_routed_to_the_provisioning_queue():
    app.loader.import_default_modules()
    for name in queue.TASKS:
        assert name in app.tasks, name
        assert app.amqp.router.route({}, name)["queue"].name == "provisioning"


@pytest.fixture
def catalogue_hub():
    owner, ta, student = UserFactory(username="owner"), UserFactory(username="ta"), UserFactory()
    hub = HubFactory(owner=owner, state=HubState.RUNNING, expected_users=5)
    tier = members.create_tier(hub, owner, {"name": "students", "shared_access": "ro"})
    Member.objects.create(hub=hub, user=ta, role=Member.Role.CO_OWNER)
    Member.objects.create(hub=hub, user=student, role=Member.Role.MEMBER, tier=tier)
    return hub, student


def test_a_revision_spec_that_equals_the_hub_gives_the_hubs_spec(catalogue_hub):
    hub, _ = catalogue_hub
    assert hubspec.from_revision(hub, revisions.spec_of_hub(hub)) == hubspec.from_hub(hub)


def test_a_revision_spec_reads_names_and_keeps_members_tiers(catalogue_hub):
    hub, student = catalogue_hub
    spec = {
        **revisions.spec_of_hub(hub),
        "expected_users": 40,
        "end_date": (hub.end_date + datetime.timedelta(days=30)).isoformat(),
        "hardware_options": ["small", "no-such-option"],
        "members": [student.username, "nobody-of-that-name"],
    }
    proposed = hubspec.from_revision(hub, spec)
    assert proposed.expected_users == 40
    assert proposed.end_date == hub.end_date + datetime.timedelta(days=30)
    assert proposed.period_days == hub.period_days + 30
    assert [option.name for option in proposed.server_options] == ["small"]
    assert proposed.members == (student.username,)
    assert proposed.co_owners == ("ta",)
    assert proposed.member_tiers == ((student.username, "students"),)
    # Nothing was written: the hub still says what it said.
    hub.refresh_from_db()
    assert hub.expected_users == 5
    assert hubspec.from_hub(hub).members == (student.username,)
