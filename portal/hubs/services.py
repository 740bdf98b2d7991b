"""One function per action on a hub, used by the web views, the API and the Django admin alike.

Services validate, call lifecycle.transition() and queue Celery tasks after commit with only the
hub id. They raise InvalidSpec (with the bound form and its field errors) or a LifecycleError
(StateConflict, TransitionNotAllowed) that views turn into messages or 400/409 answers.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import structlog
from django.db import IntegrityError, transaction

from portal.hubs.forms import HubRequestForm
from portal.hubs.lifecycle import State, StateConflict, sources, transition
from portal.hubs.models import Collaborator, Hub, HubEvent, SelfServicePolicy

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser as User

log = structlog.get_logger(__name__)


class InvalidSpec(Exception):
    """A hub request failed validation; `form.errors` holds the messages per field."""

    def __init__(self, form: HubRequestForm):
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
            Collaborator.objects.bulk_create(
                Collaborator(hub=hub, user=user, role=role) for user, role in form.collaborators()
            )
            HubEvent.objects.create(
                hub=hub,
                from_state="",
                to_state=State.PENDING,
                actor=owner,
                reason="Requested",
                created=hub.created,
            )
            violations = policy_violations(hub)
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


def approve(hub: Hub, actor: "User", reason: str = "") -> Hub:
    """Approve a pending request (or retry a failed hub) and queue its provisioning."""
    transition(hub.pk, (State.PENDING, State.FAILED), State.APPROVED, actor, reason or "Approved")
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
