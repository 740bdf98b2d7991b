"""Readiness: whether the services a web process needs answer it now.

Each check gets READINESS_TIMEOUT_SECONDS; READINESS_CHECKS chooses which run (all three by
default). What failed is logged with the error; the probe's answer names the check only, so
it shows no address, credential or stack trace.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from django.conf import settings
from django.db import connection

from portal.hubs.cluster import api_client
from portal.monitoring import broker
from provisioning import k8s

log = structlog.get_logger(__name__)


def database(timeout: float) -> None:
    """The database answers a query (connecting gives up after DATABASE_CONNECT_TIMEOUT)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def broker_answers(timeout: float) -> None:
    """Redis, the Celery broker, answers a PING."""
    client = broker.connect(timeout)
    try:
        client.ping()
    finally:
        client.close()


def kubernetes(timeout: float) -> None:
    """The Kubernetes API server answers the portal's credentials (GET /version)."""
    k8s.server_version(api_client(), timeout)


CHECKS: dict[str, Callable[[float], None]] = {
    "database": database,
    "broker": broker_answers,
    "kubernetes": kubernetes,
}


def readiness() -> dict[str, bool]:
    """Run the configured checks; whether each passed, by name."""
    timeout = settings.READINESS_TIMEOUT_SECONDS
    results = {}
    for name in settings.READINESS_CHECKS:
        try:
            CHECKS[name](timeout)
        except Exception as error:  # any failure means "not ready", never a server error
            log.warning("readiness.failed", check=name, error=repr(error)[:300])
            results[name] = False
        else:
            results[name] = True
    return results
