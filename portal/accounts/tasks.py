"""Celery tasks of accounts: reading users' rights from the identity provider again."""

from __future__ import annotations

from celery import shared_task

from portal.accounts import rights


@shared_task(acks_late=True)
def refresh_identities() -> dict[str, int]:
    """Re-read every institutional user's groups and admin rights (portal/accounts/rights.py);
    scheduled by Celery beat every OIDC_REFRESH_INTERVAL_SECONDS. Safe to run twice."""
    return rights.refresh_all()
