"""Mail the people of a hub after each recorded transition, once the transition is committed."""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from portal.hubs.models import HubEvent
from portal.notifications import mail


@receiver(post_save, sender=HubEvent, dispatch_uid="notifications.hub_event")
def hub_event_saved(sender, instance: HubEvent, created: bool, raw: bool = False, **kwargs):
    """Queue the transition's notice for after commit: a rolled-back transition sends nothing.

    Every path that moves a hub (services, tasks, expiry, the admin) records a HubEvent through
    lifecycle.transition(), so hooking the event covers them all, each exactly once.
    """
    if not created or raw or mail.kind_for(instance) is None:
        return
    event_id = instance.pk
    # robust: a failure to send is logged by Django and never reaches the transition's caller.
    transaction.on_commit(lambda: mail.notify_event(event_id), robust=True)
