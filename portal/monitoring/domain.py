"""The portal's state as metrics, read at each scrape of the web's /metrics: hubs by state,
approvals waiting, hubs ending soon, this month's cost, GPUs, the last usage pass, and the
Celery queues.

The database is the source of truth, so these are read from it (and the queue lengths from
the broker) rather than counted by processes that may restart: ten queries and one round trip
to Redis per scrape, whatever the number of hubs. GPUs allocatable and in use are the
inventory the last usage pass stored (GpuInventory), so a scrape never calls the Kubernetes
API. A part that cannot be read (the database or the broker away) is left out of that scrape,
and `hubondemand_metrics_section_up` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

import structlog
from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from portal.hubs.lifecycle import WARNED_STATES, HubState, RevisionState
from portal.hubs.models import Hub, HubRevision
from portal.monitoring import broker
from portal.usage import capacity
from portal.usage.models import CollectionPass
from portal.usage.prices import currency
from portal.usage.queries import Period, today, total_cost

log = structlog.get_logger(__name__)

# "Hubs expiring within 14 days": in service, with an end date at most this far ahead.
ENDING_WITHIN_DAYS = 14


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _age(since: datetime | None, now: datetime) -> float:
    return max((now - since).total_seconds(), 0.0) if since else 0.0


def hubs() -> Iterator[Metric]:
    """Hubs by state, and those in service that end soon (one query)."""
    ending_by = timezone.localdate() + timedelta(days=ENDING_WITHIN_DAYS)
    rows = Hub.objects.values("state").annotate(
        hubs=Count("pk"),
        ending=Count("pk", filter=Q(state__in=WARNED_STATES, end_date__lte=ending_by)),
    )
    counts = {state: (0, 0) for state in HubState.values}
    for row in rows.order_by():
        counts[row["state"]] = (row["hubs"], row["ending"])
    by_state = _gauge("hubondemand_hubs", "Hubs by lifecycle state.", ["state"])
    for state, (number, _) in counts.items():
        by_state.add_metric([state], number)
    yield by_state
    ending = _gauge(
        f"hubondemand_hubs_expiring_within_{ENDING_WITHIN_DAYS}_days",
        f"Hubs in service (running, updating, expiring) whose end date is within the next "
        f"{ENDING_WITHIN_DAYS} days.",
    )
    ending.add_metric([], sum(end for _, end in counts.values()))
    yield ending


def approvals() -> Iterator[Metric]:
    """Requests and changes waiting for an admin, and how long the oldest of each has waited
    (two queries)."""
    now = timezone.now()
    waiting = {
        "hub": Hub.objects.filter(state=HubState.PENDING).aggregate(
            number=Count("pk"), oldest=Min("state_changed")
        ),
        "change": HubRevision.objects.filter(state=RevisionState.PENDING).aggregate(
            number=Count("pk"), oldest=Min("created")
        ),
    }
    pending = _gauge(
        "hubondemand_pending_approvals",
        "Hub requests (kind=hub) and changes to hubs (kind=change) waiting for an admin.",
        ["kind"],
    )
    oldest = _gauge(
        "hubondemand_oldest_pending_approval_age_seconds",
        "How long the oldest request or change waiting for an admin has waited (0: none).",
        ["kind"],
    )
    for kind, found in waiting.items():
        pending.add_metric([kind], found["number"])
        oldest.add_metric([kind], _age(found["oldest"], now))
    yield pending
    yield oldest


def cost() -> Iterator[Metric]:
    """What usage cost since the first of this month, UTC, by resource (three queries)."""
    day = today()
    accrued = total_cost(Period(day.replace(day=1), day)).rounded()
    family = _gauge(
        "hubondemand_cost_month_to_date",
        "Cost of all hubs' usage this calendar month (UTC) by resource, in the currency named; "
        "sum the resources for the total.",
        ["currency", "resource"],
    )
    unit = currency()
    for resource in ("cpu", "memory", "gpu", "storage"):
        family.add_metric([unit, resource], float(accrued[resource]))
    yield family


def gpus() -> Iterator[Metric]:
    """GPUs by type: allocatable and in use as the last usage pass saw the cluster, reserved
    today by hubs' quotas (three queries)."""
    allocatable = _gauge(
        "hubondemand_gpus_allocatable",
        "GPUs the cluster's nodes offer, by GPU type, as the last usage pass saw them.",
        ["gpu_type"],
    )
    in_use = _gauge(
        "hubondemand_gpus_in_use",
        "GPUs requested by running pods, by GPU type, as the last usage pass saw them.",
        ["gpu_type"],
    )
    reserved = _gauge(
        "hubondemand_gpus_reserved",
        "GPUs hubs reserve today (their GPU quota, and the room their classes hold), by GPU type.",
        ["gpu_type"],
    )
    for row in capacity.gpus_now():
        allocatable.add_metric([row.name], row.allocatable)
        in_use.add_metric([row.name], row.in_use)
    for name, number in sorted(capacity.reserved_on(today()).items()):
        reserved.add_metric([name], number)
    yield from (allocatable, in_use, reserved)


def usage_passes() -> Iterator[Metric]:
    """When the last usage pass observed the cluster (one query)."""
    last = CollectionPass.objects.order_by("-at").values_list("at", flat=True).first()
    family = _gauge(
        "hubondemand_usage_last_pass_timestamp_seconds",
        "When the last usage collection pass observed the cluster (Unix time; 0: never).",
    )
    family.add_metric([], last.astimezone(UTC).timestamp() if last else 0.0)
    yield family


def queues() -> Iterator[Metric]:
    """Messages waiting in each Celery queue (one round trip to the broker)."""
    client = broker.connect(settings.READINESS_TIMEOUT_SECONDS)
    try:
        lengths = broker.queue_lengths(client, broker.queues())
    finally:
        client.close()
    family = _gauge(
        "hubondemand_celery_queue_length",
        "Tasks waiting in each Celery queue, not yet taken by a worker.",
        ["queue"],
    )
    for name, length in lengths.items():
        family.add_metric([name], length)
    yield family


SECTIONS: dict[str, Callable[[], Iterator[Metric]]] = {
    "hubs": hubs,
    "approvals": approvals,
    "cost": cost,
    "gpus": gpus,
    "usage": usage_passes,
    "queues": queues,
}


class DomainCollector:
    """A prometheus-client collector of the sections above, read afresh at every scrape."""

    def collect(self) -> Iterator[Metric]:
        up = _gauge(
            "hubondemand_metrics_section_up",
            "Whether this scrape could read each part of the portal's state (1) or not (0).",
            ["section"],
        )
        for section, read in SECTIONS.items():
            try:
                families = list(read())
            except Exception as error:  # a scrape shows what it can, never a server error
                log.warning("metrics.section_failed", section=section, error=repr(error)[:300])
                up.add_metric([section], 0)
                continue
            up.add_metric([section], 1)
            yield from families
        yield up
