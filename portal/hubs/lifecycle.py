"""A hub's lifecycle and its revisions' lifecycle: states, the one table of allowed transitions
of each, the groups of states the rest of the portal acts on, and the functions that move them.

The database is the source of truth. A transition is a single conditional UPDATE
(``Hub.objects.filter(pk=..., state=expected).update(state=new)``) plus a HubEvent row, both in
one transaction: one row changed means this caller won; zero rows means someone else moved the
hub first, and the caller gets a StateConflict instead of silently overwriting their work.
Revisions move the same way (`transition_revision`).

Every HubEvent is written by `record_event`, including the ones that change no state
(requested, re-queued, repaired). Side effects of transitions (mail, audit) hang off the two
signals sent here, `hub_event_recorded` and `revision_transitioned`: the notifications and
audit apps receive them; nothing else calls mail or the audit log for a transition.

The models import this module for their state choices, so its functions look the models up
when they run (`apps.get_model`) rather than importing them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.db import models, transaction
from django.dispatch import Signal
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from portal.hubs.models import HubEvent, HubRevision


class HubState(models.TextChoices):
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
TRANSITIONS: dict[HubState, frozenset[HubState]] = {
    HubState.PENDING: frozenset({HubState.APPROVED, HubState.REJECTED, HubState.CANCELLED}),
    HubState.APPROVED: frozenset({HubState.PROVISIONING, HubState.FAILED, HubState.DEPROVISIONING}),
    HubState.PROVISIONING: frozenset({HubState.RUNNING, HubState.FAILED, HubState.DEPROVISIONING}),
    HubState.RUNNING: frozenset(
        {
            HubState.UPDATING,
            HubState.EXPIRING,
            HubState.SUSPENDED,
            HubState.FAILED,
            HubState.DEPROVISIONING,
        }
    ),
    HubState.UPDATING: frozenset({HubState.RUNNING, HubState.FAILED, HubState.DEPROVISIONING}),
    # An extension brings an expiring hub back to running.
    HubState.EXPIRING: frozenset({HubState.RUNNING, HubState.SUSPENDED, HubState.DEPROVISIONING}),
    # Restoring a suspended hub re-applies its objects.
    HubState.SUSPENDED: frozenset({HubState.PROVISIONING, HubState.DEPROVISIONING}),
    HubState.DEPROVISIONING: frozenset({HubState.DELETED, HubState.FAILED}),
    # Failed is retryable: approve again (re-queue provisioning) or delete.
    HubState.FAILED: frozenset({HubState.APPROVED, HubState.PROVISIONING, HubState.DEPROVISIONING}),
    HubState.DELETED: frozenset(),
    HubState.REJECTED: frozenset(),
    HubState.CANCELLED: frozenset(),
}

# --- Groups of states: the one place that says which hubs each part of the portal acts on -----

# Hubs that no longer hold their slug; every other hub still does (and maybe a namespace).
FINAL_STATES = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
LIVE_STATES = frozenset(HubState) - FINAL_STATES
# Requests that never went through approval: no spec worth a revision 1.
NEVER_APPROVED_STATES = frozenset({HubState.PENDING, HubState.REJECTED, HubState.CANCELLED})
# provision_hub makes the cluster match the record (suspended: scaled to zero).
SYNCED_STATES = frozenset({HubState.PROVISIONING, HubState.UPDATING, HubState.SUSPENDED})
# Checked until their Deployments are available, then running.
READINESS_STATES = frozenset({HubState.PROVISIONING, HubState.UPDATING})
# A task works on them; the sweeper re-queues them when they sit still too long.
WATCHED_STATES = frozenset({HubState.PROVISIONING, HubState.UPDATING, HubState.DEPROVISIONING})
# A failure of the work on them fails the hub (mark_failed).
WORKING_STATES = frozenset(
    {
        HubState.APPROVED,
        HubState.PROVISIONING,
        HubState.RUNNING,
        HubState.UPDATING,
        HubState.DEPROVISIONING,
    }
)
# Their objects must exist and look as rendered: the reconcile pass compares and repairs them.
RECONCILED_STATES = frozenset({HubState.RUNNING, HubState.EXPIRING, HubState.SUSPENDED})
# Their members ConfigMap is applied on its own after a change of members or tiers (hubs that
# are provisioning or updating get it with everything else).
MEMBERS_STATES = frozenset({HubState.RUNNING, HubState.EXPIRING, HubState.SUSPENDED})
# They run and their users may be signed in: a removed member is signed out at once.
ACCESS_STATES = frozenset({HubState.RUNNING, HubState.EXPIRING})
# They take a change; an approved change brings an expiring hub back to running first.
CHANGEABLE_STATES = frozenset({HubState.RUNNING, HubState.EXPIRING})
# Their owners get expiry warnings (a change in flight does not stop the clock).
WARNED_STATES = frozenset({HubState.RUNNING, HubState.UPDATING, HubState.EXPIRING})
# Their period's end suspends them (expiring first, when a warning was missed).
IN_SERVICE_STATES = frozenset({HubState.RUNNING, HubState.EXPIRING})
# They hold their GPUs on every day of their period (capacity).
RESERVING_STATES = frozenset(
    {
        HubState.APPROVED,
        HubState.PROVISIONING,
        HubState.RUNNING,
        HubState.UPDATING,
        HubState.EXPIRING,
    }
)


def sources(to_state: HubState) -> frozenset[HubState]:
    """Return every state from which `to_state` may be reached."""
    return frozenset(state for state, targets in TRANSITIONS.items() if to_state in targets)


class RevisionState(models.TextChoices):
    """Where a change to a hub (a HubRevision) is; its reason says why."""

    PENDING = "pending", "Pending approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    APPLIED = "applied", "Applied"
    SUPERSEDED = "superseded", "Superseded"


REVISION_TRANSITIONS: dict[RevisionState, frozenset[RevisionState]] = {
    RevisionState.PENDING: frozenset({RevisionState.APPROVED, RevisionState.REJECTED}),
    # Applied in the transaction that approves it.
    RevisionState.APPROVED: frozenset({RevisionState.APPLIED}),
    # The next applied revision supersedes it (a rollback is a new revision).
    RevisionState.APPLIED: frozenset({RevisionState.SUPERSEDED}),
    RevisionState.REJECTED: frozenset(),
    RevisionState.SUPERSEDED: frozenset(),
}
# A change that is waiting or being applied; a hub has at most one.
OPEN_REVISION_STATES = frozenset({RevisionState.PENDING, RevisionState.APPROVED})

# --- Signals: the one path for the side effects of transitions ---------------------------------

# A HubEvent was written (sender: HubEvent; event=...). Sent inside the transaction.
hub_event_recorded = Signal()
# A revision was created or moved (sender: HubRevision; revision=, from_state= ("" when
# created), to_state=, actor=, reason=). Sent inside the transaction.
revision_transitioned = Signal()


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
            label = HubState(current_state).label.lower()
            message = (
                f"The hub is {label} now, so it cannot become {HubState(to_state).label.lower()}."
            )
        super().__init__(message)


class ChangeNotAllowed(LifecycleError):
    """A change cannot be requested, decided or rolled back now; the message says why."""


def _model(name: str) -> Any:
    return apps.get_model("hubs", name)


def record_event(
    hub_id: int,
    from_state: str,
    to_state: str,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    created=None,
) -> HubEvent:
    """Write one HubEvent (the only place that does) and send `hub_event_recorded`.

    A transition records from -> to; an event that changes nothing (re-queued, repaired)
    records the same state twice; a new request records "" -> pending."""
    event = _model("HubEvent").objects.create(
        hub_id=hub_id,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        created=created or timezone.now(),
    )
    hub_event_recorded.send(sender=type(event), event=event)
    return event


def transition(
    hub_id: int,
    from_states: HubState | Iterable[HubState],
    to_state: HubState,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
) -> HubEvent:
    """Move a hub from one of `from_states` to `to_state` and record a HubEvent; return the event.

    Raises TransitionNotAllowed when the table forbids the move and StateConflict when the hub
    is not (any more) in one of `from_states`: the caller lost a race and must not retry blindly.
    """
    Hub = _model("Hub")
    expected = frozenset([from_states] if isinstance(from_states, str) else from_states)
    for state in expected:
        if to_state not in TRANSITIONS[HubState(state)]:
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
        return record_event(hub_id, current, to_state, actor, reason, now)


# --- Transitions the provisioning tasks report ----------------------------------------------
# Each returns the event, or raises StateConflict when the hub is elsewhere (moved on, deleted,
# gone): a task that was delivered twice or raced a delete then has nothing to do.


def mark_provisioning(hub_id: int) -> HubEvent:
    """approved -> provisioning, when a worker starts applying the hub's objects."""
    return transition(
        hub_id, HubState.APPROVED, HubState.PROVISIONING, None, "Applying the hub's objects"
    )


def mark_running(hub_id: int) -> HubEvent:
    """provisioning/updating -> running once the hub's Deployments are available.

    After an update, people a change removed are signed out of the running hub as any other
    removal is (apply_members, then end_removed_access), now that the hub runs again."""
    event = transition(hub_id, READINESS_STATES, HubState.RUNNING, None, "Deployments available")
    if event.from_state == HubState.UPDATING:
        from portal.hubs import queue

        queue.after_commit(queue.APPLY_MEMBERS, hub_id)
    return event


def note_waiting(hub_id: int, reason: str) -> bool:
    """Say why a hub being provisioned or updated is not running yet (the scheduler's reason,
    or "" once it has room), without changing its state: no event, and a write only when the
    reason changes. Whether it was written."""
    Hub = _model("Hub")
    return bool(
        Hub.objects.filter(pk=hub_id, state__in=READINESS_STATES)
        .exclude(state_reason=reason)
        .update(state_reason=reason)
    )


def mark_failed(hub_id: int, reason: str) -> HubEvent:
    """Move a hub being worked on to failed, with the error (e.g. the API server's message)."""
    return transition(hub_id, WORKING_STATES, HubState.FAILED, None, reason)


def mark_deleted(hub_id: int) -> HubEvent:
    """deprovisioning -> deleted once the namespace is gone; the record stays."""
    return transition(hub_id, HubState.DEPROVISIONING, HubState.DELETED, None, "Namespace removed")


# --- Revisions ----------------------------------------------------------------------------------


def create_revision(actor: AbstractBaseUser | None = None, **fields: Any) -> HubRevision:
    """Store a new revision in its first state and send `revision_transitioned` from ""."""
    revision = _model("HubRevision").objects.create(**fields)
    revision_transitioned.send(
        sender=type(revision),
        revision=revision,
        from_state="",
        to_state=revision.state,
        actor=actor if actor is not None else revision.author,
        reason=revision.reason,
    )
    return revision


def transition_revision(
    revision: HubRevision,
    to_state: RevisionState,
    actor: AbstractBaseUser | None = None,
    reason: str | None = None,
    **fields: Any,
) -> None:
    """Move a revision from the state its table allows to `to_state` with one conditional
    UPDATE (setting `fields`, and `reason` when given); ChangeNotAllowed when it is elsewhere."""
    HubRevision = _model("HubRevision")
    from_states = [s for s, targets in REVISION_TRANSITIONS.items() if to_state in targets]
    if reason is not None:
        fields["reason"] = reason
    won = HubRevision.objects.filter(pk=revision.pk, state__in=from_states).update(
        state=to_state, **fields
    )
    if not won:
        state = HubRevision.objects.filter(pk=revision.pk).values_list("state", flat=True).first()
        label = RevisionState(state).label.lower() if state else "gone"
        verb = RevisionState(to_state).label.lower()
        raise ChangeNotAllowed(f"Change #{revision.number} is {label} now; it cannot be {verb}.")
    revision_transitioned.send(
        sender=HubRevision,
        revision=revision,
        from_state=from_states[0] if len(from_states) == 1 else "",
        to_state=to_state,
        actor=actor,
        reason=fields.get("reason", ""),
    )


def supersede_applied(hub_id: int) -> int:
    """applied -> superseded for the hub's current revision, before another one is applied."""
    HubRevision = _model("HubRevision")
    return HubRevision.objects.filter(hub_id=hub_id, state=RevisionState.APPLIED).update(
        state=RevisionState.SUPERSEDED
    )
