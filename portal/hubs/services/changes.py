"""Changes to a running hub: versioned revisions, their diffs, decisions and rollback.

A change is a HubRevision (its states and transitions: lifecycle.REVISION_TRANSITIONS). Inside
the self-service policy it is approved and applied at once; beyond it, it waits for an admin.
Applying writes the spec onto the hub row, moves the hub running -> updating and queues
provision_hub, which re-applies the objects and moves it back to running. A rollback is a new
change back to an earlier applied revision's spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import structlog
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.audit.log import record
from portal.hubs import hubspec, lifecycle, queue, revisions
from portal.hubs.forms import HubChangeForm
from portal.hubs.lifecycle import (
    CHANGEABLE_STATES,
    NEVER_APPROVED_STATES,
    OPEN_REVISION_STATES,
    ChangeNotAllowed,
    HubState,
    RevisionState,
    StateConflict,
    transition,
)
from portal.hubs.models import GpuType, Hub, HubRevision, Member, gpu_seats
from portal.hubs.services import policy
from portal.hubs.services.decisions import InvalidSpec, ReasonRequired
from portal.hubs.services.policy import Violation

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser as User

log = structlog.get_logger(__name__)

__all__ = ["ChangeNotAllowed"]


def _changeable(hub: Hub) -> None:
    if hub.state not in CHANGEABLE_STATES:
        if hub.state == HubState.UPDATING:
            message = "The hub is applying a change; request the next one once it is running."
        else:
            message = (
                f"The hub is {hub.get_state_display().lower()}; only a running hub can be changed."
            )
        raise ChangeNotAllowed(message)


def ensure_initial_revision(hub: Hub) -> HubRevision | None:
    """Revision 1 of an approved hub: the spec it was approved with, recorded from its row.

    Created lazily, the first time a hub's revisions are needed: until a change is applied the
    hub's row is exactly its approved spec, and hubs approved before revisions existed (or by
    any other path) need no migration or hook to get one. Returns None for hubs never approved.
    """
    if hub.state in NEVER_APPROVED_STATES:
        return None
    existing = hub.revisions.filter(number=1).first()
    if existing is not None:
        return existing
    approval = hub.events.filter(to_state=HubState.APPROVED).order_by("created", "pk").first()
    decided = approval.created if approval else hub.created
    try:
        with transaction.atomic():
            return lifecycle.create_revision(
                hub=hub,
                number=1,
                spec=revisions.spec_of_hub(hub),
                state=RevisionState.APPLIED,
                reason=(approval.reason if approval else "") or "The approved request",
                author=hub.owner,
                approver=approval.actor if approval else None,
                created=hub.created,
                decided=decided,
                applied=decided,
            )
    except IntegrityError:  # created at the same moment by another request
        return hub.revisions.get(number=1)


def hub_revisions(hub: Hub) -> list[HubRevision]:
    """A hub's revisions, newest first (revision 1 recorded first if needed)."""
    ensure_initial_revision(hub)
    return list(
        hub.revisions.select_related("author", "approver", "rollback_of").order_by("-number")
    )


@dataclass
class ChangePlan:
    """A validated change that is not saved: the spec before and after, and the policy."""

    hub: Hub
    form: HubChangeForm
    old_spec: dict[str, Any]
    new_spec: dict[str, Any]
    changed: list[str]
    violations: list[Violation]

    def diff(self) -> revisions.Diff:
        """The spec diff and the rendered objects' diff."""
        return revisions.diff(self.hub, self.old_spec, self.new_spec)


def plan_change(hub: Hub, form_data: Mapping, lock: bool = False) -> ChangePlan:
    """Validate a change with the request form's rules and compare it with the hub's spec.

    `form_data` is form-shaped, like submit()'s. Raises InvalidSpec (also when nothing changes).
    With `lock` (inside a transaction) the capacity check locks the GPU type's row first.
    """
    form = HubChangeForm(data=form_data, hub=hub)
    if not form.is_valid():
        raise InvalidSpec(form)
    old_spec = revisions.spec_of_hub(hub)
    new_spec = revisions.spec_from_cleaned(form.cleaned_data)
    changed = revisions.changed_fields(old_spec, new_spec)
    if not changed:
        form.add_error(None, "This change is the hub's current spec; there is nothing to change.")
        raise InvalidSpec(form)
    before, after = hubspec.from_hub(hub), hubspec.from_revision(hub, new_spec)
    violations = policy.change_policy_checks(before, after)
    violations += policy.change_capacity_violations(before, after, changed, lock)
    return ChangePlan(hub, form, old_spec, new_spec, changed, violations)


def preview_change(hub: Hub, form_data: Mapping) -> tuple[ChangePlan, revisions.Diff]:
    """Validate a change and return it with its diffs, saving nothing."""
    plan = plan_change(hub, form_data)
    return plan, plan.diff()


def revision_diff(revision: HubRevision) -> revisions.Diff:
    """What an open revision would change on its hub as the hub is now."""
    return revisions.diff(revision.hub, revisions.spec_of_hub(revision.hub), revision.spec)


def _lock(hub_id: int) -> Hub:
    # Serialises everything that creates, decides or applies a hub's revisions.
    hub = Hub.objects.select_for_update().select_related("owner").filter(pk=hub_id).first()
    if hub is None:
        raise StateConflict(hub_id, None, HubState.UPDATING)
    return hub


def request_change(
    hub: Hub, actor: User, form_data: Mapping, *, rollback_of: HubRevision | None = None
) -> HubRevision:
    """Store a change to a running hub as a new revision; inside the policy it is approved and
    applied at once, beyond it waits for an admin. Who may ask is the caller's check
    (Hub.can_manage). Raises InvalidSpec or ChangeNotAllowed."""
    with transaction.atomic():
        locked = _lock(hub.pk)
        policy.lock_owner(locked.owner_id)
        _changeable(locked)
        ensure_initial_revision(locked)
        if locked.revisions.filter(state__in=OPEN_REVISION_STATES).exists():
            raise ChangeNotAllowed(
                "A change to this hub is already waiting for approval; "
                "wait for the decision before asking for another."
            )
        plan = plan_change(locked, form_data, lock=True)
        now = timezone.now()
        last = locked.revisions.order_by("-number").values_list("number", flat=True).first()
        try:
            with transaction.atomic():
                revision = lifecycle.create_revision(
                    actor,
                    hub=locked,
                    number=(last or 0) + 1,
                    spec=plan.new_spec,
                    changed_fields=plan.changed,
                    violations=[asdict(v) for v in plan.violations],
                    state=RevisionState.PENDING,
                    reason=(
                        "Waiting for an admin: "
                        + "; ".join(v.message for v in plan.violations)
                        + "."
                        if plan.violations
                        else ""
                    ),
                    author=actor,
                    rollback_of=rollback_of,
                    created=now,
                )
        except IntegrityError:
            # The partial unique index on open revisions: another change slipped in.
            raise ChangeNotAllowed("A change to this hub is already waiting.") from None
        if not plan.violations:
            _decide(revision, None, "Inside the self-service policy")
            _apply(revision, actor)
    revision.refresh_from_db()
    log.info(
        "hub_change_requested",
        hub_id=hub.pk,
        revision=revision.number,
        state=revision.state,
        fields=plan.changed,
    )
    return revision


def _decide(revision: HubRevision, approver: User | None, reason: str) -> None:
    """pending -> approved, as one conditional UPDATE (ChangeNotAllowed when decided already)."""
    lifecycle.transition_revision(
        revision,
        RevisionState.APPROVED,
        approver,
        reason,
        approver=approver,
        decided=timezone.now(),
    )


def _lost(revision: HubRevision, verb: str) -> None:
    state = HubRevision.objects.filter(pk=revision.pk).values_list("state", flat=True).first()
    label = RevisionState(state).label.lower() if state else "gone"
    raise ChangeNotAllowed(f"Change #{revision.number} is {label} now; it cannot be {verb}.")


def _apply(revision: HubRevision, actor: User | None) -> None:
    """Write an approved revision onto its (locked) hub, move the hub to updating and queue
    provisioning; StateConflict when the hub is no longer running."""
    hub_id, number = revision.hub_id, revision.number
    summary = ", ".join(revision.changed_fields)
    current = Hub.objects.filter(pk=hub_id).values_list("state", flat=True).first()
    if current == HubState.EXPIRING:
        transition(hub_id, HubState.EXPIRING, HubState.RUNNING, actor, f"Change #{number} approved")
    reason = f"Applying change #{number}: {summary}"
    transition(hub_id, HubState.RUNNING, HubState.UPDATING, actor, reason)
    _write_spec(Hub.objects.get(pk=hub_id), revision.spec)
    lifecycle.supersede_applied(hub_id)
    lifecycle.transition_revision(revision, RevisionState.APPLIED, actor, applied=timezone.now())
    queue.after_commit(queue.PROVISION, hub_id)


def _write_spec(hub: Hub, spec: Mapping[str, Any]) -> None:
    """Make the hub row, its catalogue links and its collaborators say what `spec` says."""
    scalars = {
        name: spec.get(name)
        for name in Hub.SPEC_FIELDS
        if name not in revisions.M2M_FIELDS and name != "gpu_type"
    }
    # A revision from before GPU seats: one set of GPUs per server, as the hub had then.
    scalars["max_gpus"] = gpu_seats(
        spec.get("max_gpus"),
        scalars["expected_users"],
        scalars["notebooks_per_user"],
        scalars["gpus_per_user"],
    )
    gpu = spec.get("gpu_type")
    Hub.objects.filter(pk=hub.pk).update(
        **scalars,
        gpu_type=GpuType.objects.filter(name=gpu).first() if gpu else None,
        updated=timezone.now(),
    )
    for name, model in revisions.M2M_FIELDS.items():
        getattr(hub, name).set(model.objects.filter(name__in=spec.get(name) or []))
    users = {
        user.get_username(): user.pk
        for user in get_user_model().objects.filter(
            username__in=[name for key in revisions.PEOPLE_FIELDS for name in spec.get(key) or []]
        )
    }
    wanted = {
        users[name]: revisions.ROLE_OF[key]
        for key in revisions.PEOPLE_FIELDS
        for name in spec.get(key) or []
        if name in users
    }
    before = {m.user.get_username(): m.role for m in hub.members.select_related("user")}
    hub.members.exclude(user_id__in=wanted).delete()
    existing = dict(hub.members.values_list("user_id", "role"))
    for user_id, role in wanted.items():
        if user_id not in existing:
            Member.objects.create(hub=hub, user_id=user_id, role=role)
        elif existing[user_id] != role:
            hub.members.filter(user_id=user_id).update(role=role)
    after = {
        name: revisions.ROLE_OF[key]
        for key in revisions.PEOPLE_FIELDS
        for name in spec.get(key) or []
        if name in users
    }
    if before != after:
        record(
            "hub.members_changed_by_revision",
            hub,
            added=sorted(set(after) - set(before)),
            removed=sorted(set(before) - set(after)),
            role_changed=sorted(n for n in set(before) & set(after) if before[n] != after[n]),
        )


def approve_change(
    revision: HubRevision, actor: User, reason: str = "", override: bool = False
) -> HubRevision:
    """Approve a pending change (admins) and apply it; a second approval is a conflict.

    A change that takes more GPUs, or takes them on other days, is checked against what is
    free again, with the GPU type's row locked (as approve() does for a new hub): over capacity
    raises OverCapacity unless an admin overrides with a reason."""
    reason = (reason or "").strip()
    if override and not reason:
        raise ReasonRequired("Give a reason for approving over capacity.")
    with transaction.atomic():
        hub = _lock(revision.hub_id)
        pending = HubRevision.objects.filter(pk=revision.pk, state=RevisionState.PENDING)
        if not pending.exists():
            _lost(revision, "approved")
        changed = revisions.changed_fields(revisions.spec_of_hub(hub), revision.spec)
        error = policy.change_over_capacity(
            hubspec.from_hub(hub), hubspec.from_revision(hub, revision.spec), changed, lock=True
        )
        decision = policy.override_reason(error, override, reason)
        _decide(revision, actor, decision or "Approved")
        _apply(revision, actor)
    revision.refresh_from_db()
    log.info(
        "hub_change_approved", hub_id=revision.hub_id, revision=revision.number, over=bool(error)
    )
    return revision


def reject_change(revision: HubRevision, actor: User, reason: str) -> HubRevision:
    """Reject a pending change (admins); the reason is required and shown to the requester."""
    if not (reason or "").strip():
        raise ReasonRequired("Give a reason for the rejection.")
    lifecycle.transition_revision(
        revision,
        RevisionState.REJECTED,
        actor,
        reason.strip(),
        approver=actor,
        decided=timezone.now(),
    )
    revision.refresh_from_db()
    log.info("hub_change_rejected", hub_id=revision.hub_id, revision=revision.number)
    return revision


def rollback(hub: Hub, actor: User, revision_number: int) -> HubRevision:
    """Request a change back to an earlier applied revision's spec; decided like any change."""
    ensure_initial_revision(hub)
    target = hub.revisions.filter(number=revision_number).first()
    if target is None:
        raise ChangeNotAllowed(f"The hub has no revision #{revision_number}.")
    if target.applied is None:
        raise ChangeNotAllowed(
            f"Revision #{target.number} was never applied; only applied revisions can be "
            "rolled back to."
        )
    if target.state == RevisionState.APPLIED:
        raise ChangeNotAllowed(f"Revision #{target.number} is the hub's current spec.")
    # People are managed on the members page, not by revisions: a rollback restores the hub's
    # resources and keeps today's co-owners and members.
    spec = dict(target.spec)
    current = revisions.spec_of_hub(hub)
    for field in revisions.PEOPLE_FIELDS:
        spec[field] = current.get(field, [])
    return request_change(hub, actor, revisions.form_data(spec), rollback_of=target)
