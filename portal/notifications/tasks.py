"""Periodic mail task: send again the notices the mail server did not take."""

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def retry_notices() -> int:
    """Send the failed notices whose next attempt is due (portal/notifications/mail.py)."""
    from portal.notifications.mail import retry_failed

    return retry_failed()
