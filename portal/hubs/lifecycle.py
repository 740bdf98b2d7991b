"""A hub's lifecycle: its states, the one table of allowed transitions, and `transition()`.

The database is the source of truth. A transition is a single conditional UPDATE
(``Hub.objects.filter(pk=..., state=expected).update(state=new)``) plus a HubEvent row, both in
one transaction: one row changed means this caller won; zero rows means someone else moved the
hub first, and the caller gets a StateConflict instead of silently overwriting their work.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import models, transaction
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from portal.hubs.models import HubEvent


class State(models.TextChoices):
    """Where a hub is in its life; Hub.state_reason says why it got there."""

    PENDING = "pending", "Pending approval"
    APPROVED = "approved", "Approved"
    PROVISIONING = "provisioning", "Provisioning"
    RUNNING = "running", "Running"
    UPDATING = "updating", "Updating"
    EXPIRING = "expiring", "Expiring"
    SUSPENDED = "suspended", "Suspended"
    DEPROVISIONING = "deprovisioning", "Deprovisioning"
    DELETED = "deleted", "Deleted"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"
    FAILED = "failed", "Failed"


# The only place that says which state may follow which.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.APPROVED, State.REJECTED, State.CANCELLED}),
    State.APPROVED: frozenset({State.PROVISIONING, State.FAILED, State.DEPROVISIONING}),
    State.PROVISIONING: frozenset({State.RUNNING, State.FAILED, State.DEPROVISIONING}),
    State.RUNNING: frozenset(
        {State.UPDATING, State.EXPIRING, State.SUSPENDED, State.FAILED, State.DEPROVISIONING}
    ),
    State.UPDATING: frozenset({State.RUNNING, State.FAILED, State.DEPROVISIONING}),
    # An extension brings an expiring hub back to running.
    State.EXPIRING: frozenset({State.RUNNING, State.SUSPENDED, State.DEPROVISIONING}),
    # Restoring a suspended hub re-applies its objects.
    State.SUSPENDED: frozenset({State.PROVISIONING, State.DEPROVISIONING}),
    State.DEPROVISIONING: frozenset({State.DELETED, State.FAILED}),
    # Failed is retryable: approve again (re-queue provisioning) or delete.
    State.FAILED: frozenset({State.APPROVED, State.PROVISIONING, State.DEPROVISIONING}),
    State.DELETED: frozenset(),
    State.REJECTED: frozenset(),
    State.CANCELLED: frozenset(),
}

# States whose hub still holds its slug (and possibly a namespace).
FINAL_STATES = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
LIVE_STATES = frozenset(State) - FINAL_STATES


def sources(to_state: State) -> frozenset[State]:
    """Return every state from which `to_state` may be reached."""
    return frozenset(state for state, targets in TRANSITIONS.items() if to_state in targets)


class LifecycleError(Exception):
    """Base class for lifecycle errors that callers turn into a 409 or a message."""


class TransitionNotAllowed(LifecycleError):
    """The transitions table does not allow this move at all."""

    def __init__(self, from_state: str, to_state: str):
        self.from_state, self.to_state = from_state, to_state
        super().__init__(f"A hub cannot go from {from_state} to {to_state}.")


class StateConflict(LifecycleError):
    """The hub was not in an expected state: someone else moved it first, or it is gone."""

    def __init__(self, hub_id: int, current_state: str | None, to_state: str):
        self.hub_id, self.current_state, self.to_state = hub_id, current_state, to_state
        if current_state is None:
            message = f"Hub {hub_id} does not exist."
        else:
            label = State(current_state).label.lower()
            message = (
                f"The hub is {label} now, so it cannot become {State(to_state).label.lower()}."
            )
        super().__init__(message)


def transition(
    hub_id: int,
    from_states: State | Iterable[State],
    to_state: State,
    actor: "AbstractBaseUser | None" = None,
    reason: str = "",
) -> "HubEvent":
    """Move a hub from one of `from_states` to `to_state` and record a HubEvent; return the event.

    Raises TransitionNotAllowed when the table forbids the move and StateConflict when the hub
    is not (any more) in one of `from_states`: the caller lost a race and must not retry blindly.
    """
    from portal.hubs.models import Hub, HubEvent

    expected = frozenset([from_states] if isinstance(from_states, str) else from_states)
    for state in expected:
        if to_state not in TRANSITIONS[State(state)]:
            raise TransitionNotAllowed(state, to_state)

    with transaction.atomic():
        current = Hub.objects.filter(pk=hub_id).values_list("state", flat=True).first()
        if current not in expected:
            raise StateConflict(hub_id, current, to_state)
        now = timezone.now()
        # The conditional UPDATE is the decision; the read above only names the from-state.
        won = Hub.objects.filter(pk=hub_id, state=current).update(
            state=to_state, state_reason=reason, state_changed=now, updated=now
        )
        if not won:
            current = Hub.objects.filter(pk=hub_id).values_list("state", flat=True).first()
            raise StateConflict(hub_id, current, to_state)
        return HubEvent.objects.create(
            hub_id=hub_id,
            from_state=current,
            to_state=to_state,
            actor=actor,
            reason=reason,
            created=now,
        )
