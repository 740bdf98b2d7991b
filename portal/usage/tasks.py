"""Periodic usage tasks: a collection pass (every USAGE_COLLECT_INTERVAL_SECONDS) and pruning."""

import structlog
from celery import shared_task
from django.utils import timezone

from portal.monitoring.metrics import USAGE_PASS_DURATION
from portal.usage.recording import collect, prune
from provisioning.k8s import ClusterError

log = structlog.get_logger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def collect_usage() -> dict[str, int] | None:
    """One collection pass at the current time (portal/usage/recording.py).

    A duplicate delivery is harmless: a pass not later than the last recorded one charges
    nothing, and passes serialise on a database lock.
    """
    try:
        record = collect(timezone.now())
    except ClusterError as error:
        # The next pass charges the interval, or records a gap when this outage was long.
        log.warning("usage.cluster_unreachable", error=error.message)
        return None
    if record is None:
        return None
    USAGE_PASS_DURATION.observe(record.duration_seconds)
    return {"pods": record.pods_seen, "api_calls": record.api_calls, "rows": record.rows_written}


@shared_task(acks_late=True, ignore_result=True)
def prune_usage() -> dict[str, int]:
    """Delete usage older than USAGE_RETENTION_DAYS (hourly rows: USAGE_HOURLY_RETENTION_DAYS)."""
    return prune(timezone.now())
