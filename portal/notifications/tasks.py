"""Periodic mail task: send again the notices the mail server did not take."""

from celery import shared_task

from portal.notifications.mail import retry_failed


@shared_task(acks_late=True, ignore_result=True)
def retry_notices() -> int:
    """Send the failed notices whose next attempt is due (portal/notifications/mail.py)."""
    return retry_failed()
