"""Requests for hubs and the decisions on them: one function per action, used by the web
views, the API, the Django admin and the expiry pass alike.

Here a hub is requested (`submit`), approved or rejected, cancelled and deleted. Each
validates, calls lifecycle.transition() and queues the hub's tasks after commit with only its
id. They raise InvalidSpec (with the bound
form and its field errors) or a LifecycleError (StateConflict, TransitionNotAllowed,
OverCapacity) that views turn into messages or 400/409 answers. Changes to a running hub are
`changes.py`'s, what the self-service policy allows `policy.py`'s, and the moves of expiry
(expire, suspend, resume, delete after the grace period) `portal/hubs/expiry.py`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog
from django.db import IntegrityError, transaction

from portal.hubs import hubspec, lifecycle, members, queue
from portal.hubs.forms import HubChangeForm, HubRequestForm
from portal.hubs.lifecycle import HubState, StateConflict, sources, transition
from portal.hubs.models import Hub, Member
from portal.hubs.services import policy

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser as User

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


# --- Actions of people --------------------------------------------------------------------------


def submit(owner: User, form_data: Mapping) -> Hub:
    """Validate and create a hub request; approve it at once when it is inside the policy.

    `form_data` is form-shaped (request.POST, or the API's HubRequestSerializer.form_data()):
    strings, lists of catalogue entry names, co_owners/members as usernames.
    """
    form = HubRequestForm(data=form_data, owner=owner)
    if not form.is_valid():
        raise InvalidSpec(form)
    try:
        with transaction.atomic():
            policy.lock_owner(owner.pk)
            hub = form.save(commit=False)
            hub.owner = owner
            hub.state = HubState.PENDING
            hub.save()
            form.save_m2m()
            for user, role in form.people():
                # One by one (not bulk_create): the audit log records each membership.
                Member.objects.create(hub=hub, user=user, role=role)
            members.default_tier(hub)
            lifecycle.record_event(hub.pk, "", HubState.PENDING, owner, "Requested", hub.created)
            spec = hubspec.from_hub(hubspec.hub_queryset().get(pk=hub.pk))
            violations = policy.policy_violations(spec) + policy.capacity_violations(spec)
            if violations:
                hub.state_reason = "Waiting for an admin: " + "; ".join(violations) + "."
                Hub.objects.filter(pk=hub.pk).update(state_reason=hub.state_reason)
            else:
                transition(
                    hub.pk,
                    HubState.PENDING,
                    HubState.APPROVED,
                    reason="Inside the self-service policy",
                )
                queue.after_commit(queue.PROVISION, hub.pk)
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


def approve(hub: Hub, actor: User, reason: str = "", override: bool = False) -> Hub:
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
        spec = hubspec.from_hub(hubspec.hub_queryset().get(pk=hub.pk))
        reason = policy.override_reason(policy.over_capacity(spec), override, reason)
        transition(
            hub.pk,
            (HubState.PENDING, HubState.FAILED),
            HubState.APPROVED,
            actor,
            reason or "Approved",
        )
        queue.after_commit(queue.PROVISION, hub.pk)
    hub.refresh_from_db()
    return hub


def reject(hub: Hub, actor: User, reason: str) -> Hub:
    """Reject a pending request; the reason is required and shown to the requester."""
    if not (reason or "").strip():
        raise ReasonRequired("Give a reason for the rejection.")
    transition(hub.pk, HubState.PENDING, HubState.REJECTED, actor, reason.strip())
    hub.refresh_from_db()
    return hub


def cancel(hub: Hub, actor: User) -> Hub:
    """Withdraw a request that is still pending."""
    transition(hub.pk, HubState.PENDING, HubState.CANCELLED, actor, "Cancelled by the requester")
    hub.refresh_from_db()
    return hub


def delete(hub: Hub, actor: User) -> Hub:
    """Delete a hub: start deprovisioning it (a pending request is simply cancelled)."""
    if hub.state == HubState.PENDING:
        try:
            return cancel(hub, actor)
        except StateConflict:
            hub.refresh_from_db()  # approved meanwhile: deprovision below
    transition(hub.pk, sources(HubState.DEPROVISIONING), HubState.DEPROVISIONING, actor, "Deleted")
    queue.after_commit(queue.DEPROVISION, hub.pk)
    hub.refresh_from_db()
    return hub
