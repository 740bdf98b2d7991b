"""Periodic Celery tasks of the hubs app (the provisioning tasks live in provisioning/tasks.py)."""

from celery import shared_task
from django.utils import timezone

from portal.hubs import expiry


@shared_task(acks_late=True)
def run_expiry() -> dict[str, list[int]]:
    """One expiry pass (warn, expire, suspend, delete); scheduled hourly by Celery beat.

    Safe to run twice or concurrently: warnings are claimed once in the database and every
    transition is conditional, so a duplicate delivery does nothing new.
    """
    return expiry.run(timezone.now()).as_dict()
