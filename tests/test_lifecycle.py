"""The transitions table, transition() as a conditional update, and the mark_* services."""

from functools import partial

import pytest

from portal.hubs import lifecycle
from portal.hubs.lifecycle import (
    FINAL_STATES,
    TRANSITIONS,
    HubState,
    StateConflict,
    TransitionNotAllowed,
    sources,
    transition,
)
from portal.hubs.models import Hub, HubEvent
from tests.factories import HubFactory
from tests.support import needs_postgresql, race, won_or_lost

# The lifecycle as the README promises it, written out by hand and not derived from the
# product's table: a new edge (pending -> running, say) or a dropped one fails these tests.
PROMISED = {
    # pending -> approved, or the request ends: rejected by an admin, cancelled by its owner.
    ("pending", "approved"),
    ("pending", "rejected"),
    ("pending", "cancelled"),
    # approved -> provisioning; a request saved as approved may fail or be deleted at once.
    ("approved", "provisioning"),
    ("approved", "failed"),
    ("approved", "deprovisioning"),
    # provisioning -> running once its Deployments are available (or failed, or deleted).
    ("provisioning", "running"),
    ("provisioning", "failed"),
    ("provisioning", "deprovisioning"),
    # running -> (updating -> running) -> expiring -> suspended; an admin may suspend at once.
    ("running", "updating"),
    ("running", "expiring"),
    ("running", "suspended"),
    ("running", "failed"),
    ("running", "deprovisioning"),
    ("updating", "running"),
    ("updating", "failed"),
    ("updating", "deprovisioning"),
    # An extension brings an expiring hub back to running; otherwise its end suspends it.
    ("expiring", "running"),
    ("expiring", "suspended"),
    ("expiring", "deprovisioning"),
    # A suspended hub is resumed (re-applied) or, after the grace period, deleted.
    ("suspended", "provisioning"),
    ("suspended", "deprovisioning"),
    ("deprovisioning", "deleted"),
    ("deprovisioning", "failed"),
    # Failed is retryable: approve again, re-provision, or delete.
    ("failed", "approved"),
    ("failed", "provisioning"),
    ("failed", "deprovisioning"),
}
ALLOWED = sorted((HubState(a), HubState(b)) for a, b in PROMISED)
FORBIDDEN = [(a, b) for a in HubState for b in HubState if (a.value, b.value) not in PROMISED]


def test_transition_table_is_the_documented_lifecycle():
    edges = {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    assert edges - PROMISED == set(), "transitions the README does not promise"
    assert PROMISED - edges == set(), "promised transitions the table lacks"


def test_every_state_has_a_row():
    assert set(TRANSITIONS) == set(HubState)
    assert {HubState.DELETED, HubState.REJECTED, HubState.CANCELLED} == FINAL_STATES


def test_failed_is_retryable_and_most_live_states_can_be_deleted():
    assert {HubState.APPROVED, HubState.PROVISIONING} <= TRANSITIONS[HubState.FAILED]
    assert sources(HubState.DEPROVISIONING) == {
        HubState.APPROVED,
        HubState.PROVISIONING,
        HubState.RUNNING,
        HubState.UPDATING,
        HubState.EXPIRING,
        HubState.SUSPENDED,
        HubState.FAILED,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("from_state", "to_state"), ALLOWED)
def test_allowed_transition_moves_and_records(from_state, to_state, charlie):
    hub = HubFactory(state=from_state)

    event = transition(hub.pk, from_state, to_state, charlie, "because")

    hub.refresh_from_db()
    assert hub.state == to_state
    assert hub.state_reason == "because"
    assert (event.from_state, event.to_state, event.actor, event.reason) == (
        from_state,
        to_state,
        charlie,
        "because",
    )
    assert hub.state_changed == event.created
    assert list(hub.events.values_list("to_state", flat=True)) == [to_state]


@pytest.mark.django_db
@pytest.mark.parametrize(("from_state", "to_state"), FORBIDDEN)
def test_forbidden_transition_is_refused(from_state, to_state):
    hub = HubFactory(state=from_state)

    with pytest.raises(TransitionNotAllowed):
        transition(hub.pk, from_state, to_state)

    hub.refresh_from_db()
    assert hub.state == from_state
    assert not hub.events.exists()


@pytest.mark.django_db
def test_second_of_two_identical_transitions_loses():
    hub = HubFactory(state=HubState.PENDING)

    transition(hub.pk, HubState.PENDING, HubState.APPROVED, reason="first")
    with pytest.raises(StateConflict) as lost:
        transition(hub.pk, HubState.PENDING, HubState.APPROVED, reason="second")

    assert lost.value.current_state == HubState.APPROVED
    assert "approved now" in str(lost.value)
    hub.refresh_from_db()
    assert hub.state_reason == "first"
    assert HubEvent.objects.filter(hub=hub).count() == 1


@pytest.mark.django_db
def test_transition_of_a_missing_hub_is_a_conflict():
    with pytest.raises(StateConflict) as lost:
        transition(999999, HubState.PENDING, HubState.APPROVED)
    assert lost.value.current_state is None


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_concurrent_transitions_exactly_one_wins():
    hub = HubFactory(state=HubState.PENDING)
    targets = [HubState.APPROVED, HubState.REJECTED, HubState.CANCELLED, HubState.APPROVED]
    outcomes = race(
        *[partial(transition, hub.pk, HubState.PENDING, to_state) for to_state in targets],
        losing=(StateConflict,),
    )

    assert won_or_lost(outcomes) == ["lost", "lost", "lost", "won"]
    assert HubEvent.objects.filter(hub=hub).count() == 1


@pytest.mark.django_db
class TestMarks:
    """The transitions provisioning reports."""

    def test_provisioning_then_running(self):
        hub = HubFactory(state=HubState.APPROVED)
        assert lifecycle.mark_provisioning(hub.pk).to_state == HubState.PROVISIONING
        assert lifecycle.mark_running(hub.pk).to_state == HubState.RUNNING
        hub.refresh_from_db()
        assert hub.state == HubState.RUNNING
        assert [e.actor for e in hub.events.all()] == [None, None]

    def test_delivered_twice_the_second_has_nothing_to_do(self):
        hub = HubFactory(state=HubState.APPROVED)
        lifecycle.mark_provisioning(hub.pk)
        with pytest.raises(StateConflict):
            lifecycle.mark_provisioning(hub.pk)
        assert hub.events.count() == 1

    def test_failed_keeps_the_api_servers_message(self):
        hub = HubFactory(state=HubState.PROVISIONING)
        message = 'ResourceQuota "quota" is invalid: spec.hard[cpu]: must be positive'
        lifecycle.mark_failed(hub.pk, message)
        hub.refresh_from_db()
        assert (hub.state, hub.state_reason) == (HubState.FAILED, message)

    def test_deleted_only_from_deprovisioning(self):
        running = HubFactory(state=HubState.RUNNING)
        with pytest.raises(StateConflict):
            lifecycle.mark_deleted(running.pk)
        going = HubFactory(state=HubState.DEPROVISIONING)
        lifecycle.mark_deleted(going.pk)
        assert Hub.objects.get(pk=going.pk).state == HubState.DELETED
