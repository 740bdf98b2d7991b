"""One function per action on a hub, used by the web views, the API and the Django admin alike.

Services validate, call lifecycle.transition() and queue Celery tasks after commit with only the
hub id. They raise InvalidSpec (with the bound form and its field errors) or a LifecycleError
(StateConflict, TransitionNotAllowed) that views turn into messages or 400/409 answers.
"""

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.hubs import members, revisions
from portal.hubs.forms import HubChangeForm, HubRequestForm
from portal.hubs.lifecycle import LifecycleError, State, StateConflict, sources, transition
from portal.hubs.models import Collaborator, Hub, HubEvent, HubRevision, SelfServicePolicy

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser as User

    from portal.usage.capacity import OverCapacity

log = structlog.get_logger(__name__)


class InvalidSpec(Exception):
    """A hub request failed validation; `form.errors` holds the messages per field."""

    def __init__(self, form: HubRequestForm | HubChangeForm):
        self.form = form
        super().__init__(form.errors.as_text())

    @property
    def errors(self) -> dict[str, list[str]]:
        """Field name ("__all__" for the whole request) to its messages."""
        return {field: list(messages) for field, messages in self.form.errors.items()}


class ReasonRequired(ValueError):
    """An action that must be explained was called without a reason."""


# --- Policy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One way a request exceeds the self-service policy, and the spec field concerned."""

    field: str
    message: str


def _num(value: Decimal | int) -> str:
    return f"{Decimal(value).normalize():f}"


def policy_checks(hub: Hub, policy: SelfServicePolicy | None = None) -> list[Violation]:
    """Return how a saved hub's spec exceeds the self-service policy, field by field."""
    policy = policy or SelfServicePolicy.current()
    found: list[Violation] = []

    def check(field: str, value, limit, template: str, unit: str = "") -> None:
        # template names the value: "{} GPUs per user" -> "4 GPUs per user exceeds ... of 0".
        if value > limit:
            message = template.format(_num(value))
            message = f"{message[0].upper()}{message[1:]} exceeds the self-service limit of "
            found.append(Violation(field, f"{message}{_num(limit)}{unit}"))

    check("expected_users", hub.expected_users, policy.max_expected_users, "{} expected users")
    for option in hub.hardware_options.all():
        cpu, mem = policy.max_cpu_limit, policy.max_mem_limit_gib
        check("hardware_options", option.cpu_limit, cpu, f"{option}: CPU limit {{}}", " CPU")
        check("hardware_options", option.mem_limit_gib, mem, f"{option}: memory {{}} GiB", " GiB")
    if hub.gpu_type_id:
        check("gpus_per_user", hub.gpus_per_user, policy.max_gpus_per_user, "{} GPUs per user")
    check("end_date", hub.period_days, policy.max_period_days, "a period of {} days", " days")
    check("home_size_gib", hub.home_size_gib, policy.max_home_gib, "{} GiB home", " GiB")
    shared = hub.shared_volume_gib
    check("shared_volume_gib", shared, policy.max_shared_gib, "{} GiB shared volume", " GiB")
    if hub.custom_image and policy.custom_images_need_approval:
        found.append(
            Violation("custom_image", f"Custom image {hub.custom_image} needs an admin's approval")
        )
    return found


def policy_violations(spec: Hub, policy: SelfServicePolicy | None = None) -> list[str]:
    """Return human-readable reasons why a spec needs an admin; empty means auto-approve."""
    return [violation.message for violation in policy_checks(spec, policy)]


# --- Queueing work ------------------------------------------------------------------------------


def _enqueue(task_name: str, hub_id: int) -> None:
    """Queue provisioning.tasks.<task_name>(hub_id) on the provisioning queue."""
    # Imported here: provisioning is the only package that imports kubernetes, and the web
    # process should not pay for that (or fail) until it actually queues work.
    from provisioning import tasks

    try:
        getattr(tasks, task_name).apply_async((hub_id,), queue="provisioning")
    except Exception:
        # The hub's state is already committed; the sweeper re-queues hubs that sit still.
        log.exception("enqueue_failed", task=task_name, hub_id=hub_id)
    else:
        log.info("enqueued", task=task_name, hub_id=hub_id)


def _enqueue_after_commit(task_name: str, hub_id: int) -> None:
    transaction.on_commit(lambda: _enqueue(task_name, hub_id))


# --- Actions of people --------------------------------------------------------------------------


def submit(owner: "User", spec_data: Mapping) -> Hub:
    """Validate and create a hub request; approve it at once when it is inside the policy.

    `spec_data` is form-shaped (request.POST, or the API's HubRequestSerializer.form_data()):
    strings, lists of catalogue entry names, co_owners/members as usernames.
    """
    form = HubRequestForm(data=spec_data, owner=owner)
    if not form.is_valid():
        raise InvalidSpec(form)
    try:
        with transaction.atomic():
            hub = form.save(commit=False)
            hub.owner = owner
            hub.state = State.PENDING
            hub.save()
            form.save_m2m()
            for user, role in form.collaborators():
                # One by one (not bulk_create): the audit log records each membership.
                Collaborator.objects.create(hub=hub, user=user, role=role)
            members.default_tier(hub)
            HubEvent.objects.create(
                hub=hub,
                from_state="",
                to_state=State.PENDING,
                actor=owner,
                reason="Requested",
                created=hub.created,
            )
            violations = policy_violations(hub)
            over = _over_capacity(hub)
            if over is not None:
                violations.append(
                    f"its GPUs do not fit ({over.wanted} wanted, "
                    f"{max(over.free.free or 0, 0)} free over its dates)"
                )
            elif hub.gpu_type_id and hub.gpus_per_user and not _counted(hub.gpu_type):
                violations.append(_uncounted(hub.gpu_type))
            if violations:
                hub.state_reason = "Waiting for an admin: " + "; ".join(violations) + "."
                Hub.objects.filter(pk=hub.pk).update(state_reason=hub.state_reason)
            else:
                transition(
                    hub.pk, State.PENDING, State.APPROVED, reason="Inside the self-service policy"
                )
                _enqueue_after_commit("provision_hub", hub.pk)
    except IntegrityError:
        # Two requests for the same slug passed validation at the same time; the database's
        # unique constraint let only one in.
        if not Hub.objects.live().filter(slug=form.cleaned_data["slug"]).exists():
            raise
        form.add_error("slug", "This slug is already taken.")
        raise InvalidSpec(form) from None
    hub.refresh_from_db()
    log.info("hub_submitted", hub_id=hub.pk, slug=hub.slug, state=hub.state, owner=owner.pk)
    return hub


def _over_capacity(hub: Hub) -> "OverCapacity | None":
    """Why the hub's GPUs do not fit over its dates, or None; locks the GPU type's row.

    Call it inside a transaction: the lock makes decisions on the last GPUs of a type (an
    admin's approval, a self-service request) serialise, so the second sees the first."""
    from portal.usage.capacity import OverCapacity, check_hub_fits

    current = Hub.objects.select_related("gpu_type").filter(pk=hub.pk).first()
    if not (current and current.gpu_type_id and current.gpus_per_user):
        return None
    _lock_gpu_type(current.gpu_type_id)
    try:
        check_hub_fits(current)
    except OverCapacity as error:
        return error
    return None


def _counted(gpu_type) -> bool:
    """Whether a collection pass has counted the cluster's GPUs of this type."""
    from portal.usage.capacity import allocatable

    return allocatable(gpu_type) is not None


def _uncounted(gpu_type) -> str:
    # Until the usage collector's first pass nobody knows whether GPUs fit: an admin decides.
    return (
        f"the cluster's {gpu_type.display_name} GPUs have not been counted yet, so whether "
        "they fit is not known"
    )


def _lock_gpu_type(gpu_type_id: int) -> None:
    """Lock a GPU type's row for the rest of the transaction: every decision that can take GPUs
    of that type (a request, an approval, a change) serialises on it and sees the others."""
    from portal.hubs.models import GpuType

    GpuType.objects.select_for_update().filter(pk=gpu_type_id).first()


def _override_reason(error: "OverCapacity | None", override: bool, reason: str) -> str:
    """The decision's reason when GPUs do not fit: raise unless an admin overrides."""
    if error is None:
        return reason
    if not override:
        raise error
    free = max(error.free.free or 0, 0)
    return f"Approved over capacity ({error.wanted} GPUs, {free} free): {reason}"


def approve(hub: Hub, actor: "User", reason: str = "", override: bool = False) -> Hub:
    """Approve a pending request (or retry a failed hub) and queue its provisioning.

    A hub with GPUs must fit in what is free of its GPU type on every day of its period
    (portal/usage/capacity.py); the GPU type's row is locked first, so two approvals of the last
    GPUs serialise and the second sees the first. Over capacity raises OverCapacity unless an
    admin overrides with a reason, which the hub's event records.
    """
    reason = (reason or "").strip()
    if override and not reason:
        raise ReasonRequired("Give a reason for approving over capacity.")
    with transaction.atomic():
        reason = _override_reason(_over_capacity(hub), override, reason)
        transition(
            hub.pk, (State.PENDING, State.FAILED), State.APPROVED, actor, reason or "Approved"
        )
        _enqueue_after_commit("provision_hub", hub.pk)
    hub.refresh_from_db()
    return hub


def reject(hub: Hub, actor: "User", reason: str) -> Hub:
    """Reject a pending request; the reason is required and shown to the requester."""
    if not (reason or "").strip():
        raise ReasonRequired("Give a reason for the rejection.")
    transition(hub.pk, State.PENDING, State.REJECTED, actor, reason.strip())
    hub.refresh_from_db()
    return hub


def cancel(hub: Hub, actor: "User") -> Hub:
    """Withdraw a request that is still pending."""
    transition(hub.pk, State.PENDING, State.CANCELLED, actor, "Cancelled by the requester")
    hub.refresh_from_db()
    return hub


def delete(hub: Hub, actor: "User") -> Hub:
    """Delete a hub: start deprovisioning it (a pending request is simply cancelled)."""
    if hub.state == State.PENDING:
        try:
            return cancel(hub, actor)
        except StateConflict:
            hub.refresh_from_db()  # approved meanwhile: deprovision below
    transition(hub.pk, sources(State.DEPROVISIONING), State.DEPROVISIONING, actor, "Deleted")
    _enqueue_after_commit("deprovision_hub", hub.pk)
    hub.refresh_from_db()
    return hub


# --- Transitions the provisioning tasks report --------------------------------------------------
# Each returns True, or raises StateConflict (a LifecycleError) when the hub is not in a state
# the transition starts from.


def _mark(hub_id: int, from_states: Iterable[State], to_state: State, reason: str = "") -> bool:
    # Raises StateConflict when the hub is elsewhere (moved on, deleted, gone): a task that
    # was delivered twice or raced a delete then has nothing to do.
    transition(hub_id, from_states, to_state, None, reason)
    return True


def mark_provisioning(hub_id: int) -> bool:
    """approved -> provisioning; StateConflict when the hub is elsewhere (moved on, deleted)."""
    return _mark(hub_id, (State.APPROVED,), State.PROVISIONING, "Applying the hub's objects")


def mark_running(hub_id: int) -> bool:
    """provisioning/updating -> running once the hub's Deployments are available."""
    return _mark(
        hub_id, (State.PROVISIONING, State.UPDATING), State.RUNNING, "Deployments available"
    )


def mark_failed(hub_id: int, reason: str) -> bool:
    """Move a hub being worked on to failed, with the error (e.g. the API server's message)."""
    working = (
        State.APPROVED,
        State.PROVISIONING,
        State.RUNNING,
        State.UPDATING,
        State.DEPROVISIONING,
    )
    return _mark(hub_id, working, State.FAILED, reason)


def mark_deleted(hub_id: int) -> bool:
    """deprovisioning -> deleted once the namespace is gone; the record stays."""
    return _mark(hub_id, (State.DEPROVISIONING,), State.DELETED, "Namespace removed")


# --- Expiry and the admin's actions on suspended hubs -------------------------------------------
# Called by portal.hubs.expiry (the periodic pass), the web views and the API alike.


def expire(hub: Hub, reason: str) -> Hub:
    """running -> expiring: the hub is inside its first warning window."""
    transition(hub.pk, State.RUNNING, State.EXPIRING, None, reason)
    hub.refresh_from_db()
    return hub


def unexpire(hub: Hub, reason: str) -> Hub:
    """expiring -> running: the end date moved out of the warning window (an extension)."""
    transition(hub.pk, State.EXPIRING, State.RUNNING, None, reason)
    hub.refresh_from_db()
    return hub


def suspend(hub: Hub, reason: str, actor: "User | None" = None) -> Hub:
    """expiring -> suspended and queue provisioning, which scales the hub to zero (volumes kept)."""
    transition(hub.pk, State.EXPIRING, State.SUSPENDED, actor, reason)
    _enqueue_after_commit("provision_hub", hub.pk)
    hub.refresh_from_db()
    return hub


def resume(hub: Hub, actor: "User", reason: str = "") -> Hub:
    """suspended -> provisioning and queue provisioning, which scales the hub back up (admins)."""
    from portal.hubs import expiry  # expiry calls these services

    expiry.check_resumable(hub)
    transition(hub.pk, State.SUSPENDED, State.PROVISIONING, actor, reason or "Resumed")
    _enqueue_after_commit("provision_hub", hub.pk)
    hub.refresh_from_db()
    return hub


def delete_now(hub: Hub, actor: "User", reason: str = "") -> Hub:
    """suspended -> deprovisioning before the grace period ends (admins)."""
    reason = reason or "Deleted by an admin before the end of the grace period"
    transition(hub.pk, State.SUSPENDED, State.DEPROVISIONING, actor, reason)
    _enqueue_after_commit("deprovision_hub", hub.pk)
    hub.refresh_from_db()
    return hub


def delete_expired(hub: Hub, reason: str) -> Hub:
    """suspended -> deprovisioning once the grace period is over (the expiry pass)."""
    transition(hub.pk, State.SUSPENDED, State.DEPROVISIONING, None, reason)
    _enqueue_after_commit("deprovision_hub", hub.pk)
    hub.refresh_from_db()
    return hub


# --- Changes to a running hub (revisions) -------------------------------------------------------
# A change is a HubRevision. Inside the policy it is approved and applied at once; beyond it, it
# waits for an admin. Applying writes the spec onto the hub row, moves the hub running ->
# updating and queues provision_hub, which re-applies the objects and moves it back to running.

# States in which a hub takes a change. An expiring hub is still running; an approved change
# (typically an extension) brings it back to running before it updates.
CHANGEABLE_STATES = (State.RUNNING, State.EXPIRING)
# A hub whose request went through approval has a spec worth a revision 1.
_NEVER_APPROVED = (State.PENDING, State.REJECTED, State.CANCELLED)


class ChangeNotAllowed(LifecycleError):
    """A change cannot be requested, decided or rolled back now; the message says why."""


def _changeable(hub: Hub) -> None:
    if hub.state not in CHANGEABLE_STATES:
        if hub.state == State.UPDATING:
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
    if hub.state in _NEVER_APPROVED:
        return None
    existing = hub.revisions.filter(number=1).first()
    if existing is not None:
        return existing
    approval = hub.events.filter(to_state=State.APPROVED).order_by("created", "pk").first()
    decided = approval.created if approval else hub.created
    try:
        with transaction.atomic():
            return HubRevision.objects.create(
                hub=hub,
                number=1,
                spec=revisions.spec_of_hub(hub),
                state=HubRevision.State.APPLIED,
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


def change_policy_checks(
    hub: Hub, old_spec: Mapping[str, Any], new_spec: Mapping[str, Any]
) -> list[Violation]:
    """How a new spec exceeds the policy in ways the current spec does not.

    An admin already approved what the hub has: keeping, say, 80 users that were approved
    once does not send an unrelated change (a longer idle timeout) back to the queue, while
    raising them to 90 does.
    """
    before = {v.message for v in policy_checks(revisions.ProposedHub(hub, old_spec))}
    after = policy_checks(revisions.ProposedHub(hub, new_spec))
    return [violation for violation in after if violation.message not in before]


def plan_change(hub: Hub, spec_data: Mapping, lock: bool = False) -> ChangePlan:
    """Validate a change with the request form's rules and compare it with the hub's spec.

    `spec_data` is form-shaped, like submit()'s. Raises InvalidSpec (also when nothing changes).
    With `lock` (inside a transaction) the capacity check locks the GPU type's row first.
    """
    form = HubChangeForm(data=spec_data, hub=hub)
    if not form.is_valid():
        raise InvalidSpec(form)
    old_spec = revisions.spec_of_hub(hub)
    new_spec = revisions.spec_from_cleaned(form.cleaned_data)
    changed = revisions.changed_fields(old_spec, new_spec)
    if not changed:
        form.add_error(None, "This change is the hub's current spec; there is nothing to change.")
        raise InvalidSpec(form)
    violations = change_policy_checks(hub, old_spec, new_spec)
    over = _change_over_capacity(hub, new_spec, changed, lock)
    if over is not None:
        free = max(over.free.free or 0, 0)
        violations.append(
            Violation(
                "gpus_per_user",
                f"its GPUs do not fit ({over.wanted} wanted, {free} free over its dates)",
            )
        )
    else:
        taking = _change_takes_gpus(hub, new_spec, changed)
        if taking is not None and not _counted(taking.gpu_type):
            violations.append(Violation("gpu_type", _uncounted(taking.gpu_type)))
    return ChangePlan(hub, form, old_spec, new_spec, changed, violations)


# A change of these can make a hub hold more GPUs, or hold them on other days.
CAPACITY_FIELDS = frozenset(
    {"gpu_type", "gpus_per_user", "expected_users", "notebooks_per_user", "start_date", "end_date"}
)


def _change_over_capacity(
    hub: Hub, new_spec: Mapping, changed: list[str], lock: bool = False
) -> "OverCapacity | None":
    """Why a change's GPUs do not fit over its dates, or None. The hub's own reservation does
    not count against it, and a change that holds fewer GPUs on the same days always fits.
    With `lock`, the new GPU type's row is locked before the check (see _lock_gpu_type)."""
    from portal.usage.capacity import OverCapacity, check_hub_fits

    proposed = _change_takes_gpus(hub, new_spec, changed)
    if proposed is None:
        return None
    if lock and proposed.gpu_type is not None:
        _lock_gpu_type(proposed.gpu_type.pk)
    try:
        check_hub_fits(proposed)
    except OverCapacity as error:
        return error
    return None


def _change_takes_gpus(
    hub: Hub, new_spec: Mapping, changed: list[str]
) -> revisions.ProposedHub | None:
    """The hub as the change makes it, when the change takes more GPUs or takes them on other
    days (or another type); else None."""
    from portal.usage.capacity import reserved_gpus

    if not CAPACITY_FIELDS & set(changed):
        return None
    proposed = revisions.ProposedHub(hub, new_spec)
    moved = {"gpu_type", "start_date", "end_date"} & set(changed)
    if not reserved_gpus(proposed) or (not moved and reserved_gpus(proposed) <= reserved_gpus(hub)):
        return None
    return proposed


def preview_change(hub: Hub, spec_data: Mapping) -> tuple[ChangePlan, revisions.Diff]:
    """Validate a change and return it with its diffs, saving nothing."""
    plan = plan_change(hub, spec_data)
    return plan, plan.diff()


def revision_diff(revision: HubRevision) -> revisions.Diff:
    """What an open revision would change on its hub as the hub is now."""
    return revisions.diff(revision.hub, revisions.spec_of_hub(revision.hub), revision.spec)


def _lock(hub_id: int) -> Hub:
    # Serialises everything that creates, decides or applies a hub's revisions.
    hub = Hub.objects.select_for_update().select_related("owner").filter(pk=hub_id).first()
    if hub is None:
        raise StateConflict(hub_id, None, State.UPDATING)
    return hub


def request_change(
    hub: Hub, actor: "User", spec_data: Mapping, *, rollback_of: HubRevision | None = None
) -> HubRevision:
    """Store a change to a running hub as a new revision; inside the policy it is approved and
    applied at once, beyond it waits for an admin. Who may ask is the caller's check
    (Hub.can_manage). Raises InvalidSpec or ChangeNotAllowed."""
    with transaction.atomic():
        locked = _lock(hub.pk)
        _changeable(locked)
        ensure_initial_revision(locked)
        if locked.revisions.filter(state__in=HubRevision.OPEN_STATES).exists():
            raise ChangeNotAllowed(
                "A change to this hub is already waiting for approval; "
                "wait for the decision before asking for another."
            )
        plan = plan_change(locked, spec_data, lock=True)
        now = timezone.now()
        last = locked.revisions.order_by("-number").values_list("number", flat=True).first()
        try:
            with transaction.atomic():
                revision = HubRevision.objects.create(
                    hub=locked,
                    number=(last or 0) + 1,
                    spec=plan.new_spec,
                    changed_fields=plan.changed,
                    violations=[asdict(v) for v in plan.violations],
                    state=HubRevision.State.PENDING,
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


def _decide(revision: HubRevision, approver: "User | None", reason: str) -> None:
    """pending -> approved, as one conditional UPDATE."""
    won = HubRevision.objects.filter(pk=revision.pk, state=HubRevision.State.PENDING).update(
        state=HubRevision.State.APPROVED, approver=approver, decided=timezone.now(), reason=reason
    )
    if not won:
        _lost(revision, "approved")


def _lost(revision: HubRevision, verb: str) -> None:
    state = HubRevision.objects.filter(pk=revision.pk).values_list("state", flat=True).first()
    label = HubRevision.State(state).label.lower() if state else "gone"
    raise ChangeNotAllowed(f"Change #{revision.number} is {label} now; it cannot be {verb}.")


def _apply(revision: HubRevision, actor: "User | None") -> None:
    """Write an approved revision onto its (locked) hub, move the hub to updating and queue
    provisioning; StateConflict when the hub is no longer running."""
    hub_id, number = revision.hub_id, revision.number
    summary = ", ".join(revision.changed_fields)
    current = Hub.objects.filter(pk=hub_id).values_list("state", flat=True).first()
    if current == State.EXPIRING:
        transition(hub_id, State.EXPIRING, State.RUNNING, actor, f"Change #{number} approved")
    reason = f"Applying change #{number}: {summary}"
    transition(hub_id, State.RUNNING, State.UPDATING, actor, reason)
    _write_spec(Hub.objects.get(pk=hub_id), revision.spec)
    now = timezone.now()
    HubRevision.objects.filter(hub_id=hub_id, state=HubRevision.State.APPLIED).update(
        state=HubRevision.State.SUPERSEDED
    )
    won = HubRevision.objects.filter(pk=revision.pk, state=HubRevision.State.APPROVED).update(
        state=HubRevision.State.APPLIED, applied=now
    )
    if not won:
        _lost(revision, "applied")
    _enqueue_after_commit("provision_hub", hub_id)


def _write_spec(hub: Hub, spec: Mapping[str, Any]) -> None:
    """Make the hub row, its catalogue links and its collaborators say what `spec` says."""
    proposed = revisions.ProposedHub(hub, spec)
    scalars = {
        name: getattr(proposed, name)
        for name in Hub.SPEC_FIELDS
        if name not in revisions.M2M_FIELDS and name != "gpu_type"
    }
    Hub.objects.filter(pk=hub.pk).update(
        **scalars, gpu_type=proposed.gpu_type, updated=timezone.now()
    )
    for name in revisions.M2M_FIELDS:
        getattr(hub, name).set(getattr(proposed, name))
    wanted = {person.user.pk: person.role for person in proposed.collaborators}
    hub.collaborators.exclude(user_id__in=wanted).delete()
    existing = dict(hub.collaborators.values_list("user_id", "role"))
    for user_id, role in wanted.items():
        if user_id not in existing:
            Collaborator.objects.create(hub=hub, user_id=user_id, role=role)
        elif existing[user_id] != role:
            hub.collaborators.filter(user_id=user_id).update(role=role)


def approve_change(
    revision: HubRevision, actor: "User", reason: str = "", override: bool = False
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
        pending = HubRevision.objects.filter(pk=revision.pk, state=HubRevision.State.PENDING)
        if not pending.exists():
            _lost(revision, "approved")
        current = revisions.spec_of_hub(hub)
        changed = revisions.changed_fields(current, revision.spec)
        error = _change_over_capacity(hub, revision.spec, changed, lock=True)
        decision = _override_reason(error, override, reason)
        _decide(revision, actor, decision or "Approved")
        _apply(revision, actor)
        _notify_change(revision, "approved", decision)
        _audit("hub.change_approved", revision, actor, decision)
    revision.refresh_from_db()
    log.info(
        "hub_change_approved", hub_id=revision.hub_id, revision=revision.number, over=bool(error)
    )
    return revision


def reject_change(revision: HubRevision, actor: "User", reason: str) -> HubRevision:
    """Reject a pending change (admins); the reason is required and shown to the requester."""
    if not (reason or "").strip():
        raise ReasonRequired("Give a reason for the rejection.")
    won = HubRevision.objects.filter(pk=revision.pk, state=HubRevision.State.PENDING).update(
        state=HubRevision.State.REJECTED,
        approver=actor,
        decided=timezone.now(),
        reason=reason.strip(),
    )
    if not won:
        _lost(revision, "rejected")
    _notify_change(revision, "rejected", reason.strip())
    _audit("hub.change_rejected", revision, actor, reason)
    revision.refresh_from_db()
    log.info("hub_change_rejected", hub_id=revision.hub_id, revision=revision.number)
    return revision


def _audit(action: str, revision: HubRevision, actor: "User", reason: str) -> None:
    """Record an admin's decision on a change in the audit log (same transaction)."""
    from portal.audit.log import record

    record(
        action,
        revision,
        actor=actor,
        hub_id=revision.hub_id,
        number=revision.number,
        reason=(reason or "").strip(),
    )


def _notify_change(revision: HubRevision, decision: str, reason: str) -> None:
    """Mail the owner and co-owners an admin's decision on their change, after commit."""
    from portal.notifications.mail import notify_change

    notify_change(revision, decision, reason)


def rollback(hub: Hub, actor: "User", revision_number: int) -> HubRevision:
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
    if target.state == HubRevision.State.APPLIED:
        raise ChangeNotAllowed(f"Revision #{target.number} is the hub's current spec.")
    # People are managed on the members page, not by revisions: a rollback restores the hub's
    # resources and keeps today's co-owners and members.
    spec = dict(target.spec)
    current = revisions.spec_of_hub(hub)
    for field in revisions.PEOPLE_FIELDS:
        spec[field] = current.get(field, [])
    return request_change(hub, actor, revisions.form_data(spec), rollback_of=target)
