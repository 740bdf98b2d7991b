"""Receivers that record hub transitions, change requests, membership changes and admin actions.

Membership models (collaborators, invitations, group grants, member tiers) are connected when
they exist; a model not added yet is skipped, so this module never breaks start-up.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models.signals import post_delete, post_save

from portal.audit.log import Context, current, record, request_actor, set_current
from portal.audit.models import AuditEvent

MEMBERSHIP_MODELS = ["hubs.Collaborator", "hubs.Invitation", "hubs.GroupGrant", "hubs.MemberTier"]
_ADMIN_FLAGS = {ADDITION: "addition", CHANGE: "change", DELETION: "deletion"}


def hub_event_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """Every hub transition, by the actor the event names (empty = the system)."""
    if not created or raw:
        return
    record(
        "hub.transition",
        instance.hub,
        actor=instance.actor,
        from_state=instance.from_state,
        to_state=instance.to_state,
        reason=instance.reason,
        event_id=instance.pk,
    )


def revision_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """A change requested for a hub (its approval and rejection are recorded by services)."""
    if not created or raw:
        return
    record(
        "hub.change_requested",
        instance,
        actor=instance.author,
        hub_id=instance.hub_id,
        number=instance.number,
        state=instance.state,
        changed_fields=instance.changed_fields,
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


def membership_saved(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """A collaborator, invitation, group grant or tier added or changed."""
    if raw:
        return
    verb = "created" if created else "changed"
    action = f"{sender._meta.model_name}.{verb}"
    record(action, instance, actor=_actor(instance), **_fields(instance))


def membership_deleted(sender, instance, **kwargs) -> None:
    """A collaborator, invitation, group grant or tier removed."""
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
    from celery.signals import task_postrun, task_prerun

    post_save.connect(
        hub_event_saved, sender=apps.get_model("hubs", "HubEvent"), dispatch_uid="audit.hub_event"
    )
    post_save.connect(
        revision_saved, sender=apps.get_model("hubs", "HubRevision"), dispatch_uid="audit.revision"
    )
    for label in MEMBERSHIP_MODELS:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        post_save.connect(membership_saved, sender=model, dispatch_uid=f"audit.save.{label}")
        post_delete.connect(membership_deleted, sender=model, dispatch_uid=f"audit.del.{label}")
    post_save.connect(admin_logged, sender=LogEntry, dispatch_uid="audit.admin_log")
    task_prerun.connect(task_started, dispatch_uid="audit.task_started", weak=False)
    task_postrun.connect(task_finished, dispatch_uid="audit.task_finished", weak=False)
