"""Receivers that record hub transitions, change requests, changes to a hub's people, tiers and
class sessions, and admin actions.

Hub events and revisions are recorded from the lifecycle's signals (`hub_event_recorded`,
`revision_transitioned`), the one path for the side effects of transitions; the rows a hub's
managers add, change and remove, and the Django admin's log entries, from their models' save
and delete signals.

Those hub models (members, invitations, group grants, member tiers, class sessions) are
connected when they exist; a model not added yet is skipped, so this module never breaks
start-up.
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_postrun, task_prerun
from django.apps import apps
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_delete, post_save

from portal.audit.log import Context, current, record, request_actor, set_current
from portal.audit.models import AuditEvent
from portal.hubs import lifecycle

# Rows of a hub that its managers (and admins) add, change and remove: recorded as
# "<model>.created", ".changed" and ".deleted" with their fields, the hub's id among them.
HUB_ROW_MODELS = [
    "hubs.Member",
    "hubs.Invitation",
    "hubs.GroupGrant",
    "hubs.MemberTier",
    # An admin's cap or refusal of a session's room is a change of its row, so it is here too.
    "hubs.ClassSession",
]
_ADMIN_FLAGS = {ADDITION: "addition", CHANGE: "change", DELETION: "deletion"}


def hub_event_recorded(sender, event, **kwargs) -> None:
    """Every hub event, by the actor it names (empty = the system)."""
    record(
        "hub.transition",
        event.hub,
        actor=event.actor,
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason,
        event_id=event.pk,
    )


# An admin's decision on a change; a change inside the policy is approved by nobody.
DECISIONS = {
    lifecycle.RevisionState.APPROVED: "hub.change_approved",
    lifecycle.RevisionState.REJECTED: "hub.change_rejected",
}


def revision_transitioned(sender, revision, from_state, to_state, actor, reason, **kwargs) -> None:
    """A change requested for a hub, and an admin's decision on it."""
    if not from_state:
        record(
            "hub.change_requested",
            revision,
            actor=actor,
            hub_id=revision.hub_id,
            number=revision.number,
            state=to_state,
            changed_fields=revision.changed_fields,
        )
    elif to_state in DECISIONS and actor is not None:
        record(
            DECISIONS[to_state],
            revision,
            actor=actor,
            hub_id=revision.hub_id,
            number=revision.number,
            reason=(reason or "").strip(),
        )


def _fields(instance) -> dict[str, Any]:
    """Plain field values of a row (foreign keys as ids), for the record's details."""
    values = {}
    for field in instance._meta.concrete_fields:
        values[field.attname] = getattr(instance, field.attname)
    return values


def _actor(instance) -> Any:
    """Who is acting: the signed-in caller, else the user the row names as its author."""
    caller = request_actor(current().request)
    if caller is not None:
        return caller
    for name in ("invited_by", "created_by", "granted_by"):
        if getattr(instance, f"{name}_id", None):
            return getattr(instance, name)
    return None


def hub_row_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """A collaborator, invitation, group grant, tier or class session added or changed."""
    if raw:
        return
    verb = "created" if created else "changed"
    action = f"{sender._meta.model_name}.{verb}"
    record(action, instance, actor=_actor(instance), **_fields(instance))


def hub_row_deleted(sender, instance, **kwargs) -> None:
    """A collaborator, invitation, group grant, tier or class session removed."""
    action = f"{sender._meta.model_name}.deleted"
    record(action, instance, actor=_actor(instance), **_fields(instance))


def admin_logged(sender, instance: LogEntry, created: bool, raw: bool = False, **kwargs) -> None:
    """A change made in the Django admin, by the admin who made it."""
    if not created or raw:
        return
    content_type = instance.content_type
    record(
        f"admin.{_ADMIN_FLAGS.get(instance.action_flag, 'action')}",
        actor=instance.user,
        object_ref=(
            f"{content_type.app_label}.{content_type.model}" if content_type else "",
            instance.object_id or "",
            instance.object_repr or "",
        ),
        message=instance.get_change_message(),
    )


# The context before each running task, restored when it ends (a task run eagerly inside a
# request must not take the request's context away).
_before_task: dict[str, Context] = {}


def task_started(task_id: str | None = None, **kwargs) -> None:
    """Actions inside a Celery task are the system's, recorded as via=task."""
    _before_task[task_id or ""] = current()
    set_current(Context(via=AuditEvent.Via.TASK))


def task_finished(task_id: str | None = None, **kwargs) -> None:
    """The task is over: back to the context it started in."""
    set_current(_before_task.pop(task_id or "", None))


def connect() -> None:
    """Connect the receivers to the models that exist (called from AuditConfig.ready)."""
    lifecycle.hub_event_recorded.connect(hub_event_recorded, dispatch_uid="audit.hub_event")
    lifecycle.revision_transitioned.connect(revision_transitioned, dispatch_uid="audit.revision")
    for label in HUB_ROW_MODELS:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        post_save.connect(hub_row_saved, sender=model, dispatch_uid=f"audit.save.{label}")
        post_delete.connect(hub_row_deleted, sender=model, dispatch_uid=f"audit.del.{label}")
    post_save.connect(admin_logged, sender=LogEntry, dispatch_uid="audit.admin_log")
    task_prerun.connect(task_started, dispatch_uid="audit.task_started", weak=False)
    task_postrun.connect(task_finished, dispatch_uid="audit.task_finished", weak=False)
