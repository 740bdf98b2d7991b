"""Mail the people of a hub after its transitions and the decisions on its changes, once the
transaction that made them commits (a rolled-back transition sends nothing).

Every path that moves a hub or a revision (services, tasks, expiry, the admin) goes through
portal/hubs/lifecycle.py, whose signals these receive: each transition is covered exactly once.
"""

from django.db import transaction
from django.dispatch import receiver

from portal.hubs import lifecycle
from portal.hubs.lifecycle import RevisionState
from portal.notifications import mail


@receiver(lifecycle.hub_event_recorded, dispatch_uid="notifications.hub_event")
def hub_event_recorded(sender, event, **kwargs) -> None:
    """Queue the transition's notice for after commit."""
    if mail.kind_for(event) is None:
        return
    event_id = event.pk
    # robust: a failure to send is logged by Django and never reaches the transition's caller.
    transaction.on_commit(lambda: mail.notify_event(event_id), robust=True)


@receiver(lifecycle.revision_transitioned, dispatch_uid="notifications.revision")
def revision_transitioned(sender, revision, from_state, to_state, actor, reason, **kwargs) -> None:
    """Tell the owner and co-owners an admin's decision on their change (after commit)."""
    decisions = (RevisionState.APPROVED, RevisionState.REJECTED)
    if to_state in decisions and from_state and actor is not None:
        mail.notify_change(revision, to_state, (reason or "").strip())
