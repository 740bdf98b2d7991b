"""Celery tasks of accounts: reading users' rights from the identity provider again, and
clearing expired portal sessions."""

from __future__ import annotations

import structlog
from celery import shared_task
from django.utils import timezone

from portal.accounts import rights
from portal.accounts.models import UserSession

log = structlog.get_logger(__name__)


@shared_task(acks_late=True)
def refresh_identities() -> dict[str, int]:
    """Re-read every institutional user's groups and admin rights (portal/accounts/rights.py);
    scheduled by Celery beat every OIDC_REFRESH_INTERVAL_SECONDS. Safe to run twice."""
    return rights.refresh_all()


@shared_task(acks_late=True)
def clear_expired_sessions() -> int:
    """Delete the sessions that expired (Django keeps them until told); scheduled daily by
    Celery beat. Returns how many went."""
    cleared, _ = UserSession.objects.filter(expire_date__lt=timezone.now()).delete()
    if cleared:
        log.info("sessions.cleared", count=cleared)
    return cleared
