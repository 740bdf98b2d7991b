"""Turn one observation of the cluster into usage rows, a pass record, gaps and GPU inventory.

The charging rule, per pass at time `now` with the previous pass at `prev`:

- first pass ever (no `prev`): nothing is charged; the pass is the baseline.
- `now - prev <= USAGE_MAX_INTERVAL_SECONDS` (default twice USAGE_COLLECT_INTERVAL_SECONDS):
  every pod seen running and every claim seen bound is charged from max(prev, its start) to
  `now`: it held its requests over that interval.
- a longer interval means the collector was not running: a CollectionGap from `prev` to
  `now - USAGE_COLLECT_INTERVAL_SECONDS` is recorded and nothing is charged for it; what is
  seen now is charged only for the last regular interval, from max(now - interval, its start)
  to `now`, as if the pass before had been on time. Pods that started and ended inside the gap
  were never seen, so the gap is reported, never filled with guesses.
- a pass whose `now` is not after `prev` (a late duplicate) charges nothing.

Amounts are split at hour and day boundaries (UTC) and added to UsageHour and UsageDay with
one upsert per table chunk. Passes serialise on a PostgreSQL advisory lock.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from portal.hubs import cluster
from portal.hubs.models import GpuType, Hub
from portal.usage.models import (
    CollectionGap,
    CollectionPass,
    GpuInventory,
    UsageDay,
    UsageHour,
)
from provisioning.observe import GPU_PRODUCT_LABEL, Observation, observe
from provisioning.sync import is_hub_namespace

if TYPE_CHECKING:
    from kubernetes import client

log = structlog.get_logger(__name__)

# Advisory lock of "a collection pass records" (PostgreSQL).
USAGE_LOCK_KEY = 4712
CHUNK = 1000
MIB = 1024 * 1024
AMOUNTS = ("cpu_millicore_seconds", "memory_mib_seconds", "gpu_seconds", "storage_mib_seconds")


def _hour_pieces(start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """(hour start, microseconds) for each hour the interval [start, end) touches."""
    pieces = []
    moment = start
    while moment < end:
        hour = moment.replace(minute=0, second=0, microsecond=0)
        stop = min(hour + timedelta(hours=1), end)
        pieces.append((hour, (stop - moment) // timedelta(microseconds=1)))
        moment = stop
    return pieces


# Amounts are summed as rate x microseconds in integers (exact), then stored in their units:
# millicore-seconds, MiB-seconds (from bytes), GPU-seconds, MiB-seconds.
_DIVISORS = (10**6, MIB * 10**6, 10**6, MIB * 10**6)


def _stored(amount: int, divisor: int) -> int:
    """Round half up to the stored unit."""
    return (2 * amount + divisor) // (2 * divisor)


def _lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [USAGE_LOCK_KEY])
            # A pass lost in a crash loses its CollectionPass row with its usage, so the next
            # pass charges from the one before: no need to wait for the disk.
            cursor.execute("SET LOCAL synchronous_commit = off")


def _upsert(model, when: str, rows: list[tuple]) -> None:
    """Insert rows or add their amounts to the existing ones.

    On PostgreSQL the rows are streamed with COPY into a temporary table and merged with one
    INSERT ... SELECT ... ON CONFLICT; elsewhere (SQLite) with multi-row INSERTs in chunks.
    """
    if not rows:
        return
    table = model._meta.db_table
    columns = ["hub_id", when, "username", "component", "gpu_product", "user_id", *AMOUNTS]
    names = ", ".join(columns)
    conflict = (
        f"ON CONFLICT (hub_id, {when}, username, component, gpu_product) DO UPDATE SET "
        + ", ".join(f"{c} = {table}.{c} + EXCLUDED.{c}" for c in AMOUNTS)
        + f", user_id = COALESCE(EXCLUDED.user_id, {table}.user_id)"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            incoming = f"{table}_incoming"
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {incoming} ON COMMIT DELETE ROWS "
                f"AS SELECT {names} FROM {table} WITH NO DATA"
            )
            with cursor.cursor.copy(f"COPY {incoming} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {incoming} {conflict}"
            )
            cursor.execute(f"DELETE FROM {incoming}")
            return
        for offset in range(0, len(rows), CHUNK):
            chunk = rows[offset : offset + CHUNK]
            values = ", ".join(["(" + ", ".join(["%s"] * len(columns)) + ")"] * len(chunk))
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {values} {conflict}",
                [value for row in chunk for value in row],
            )


def collect(now: datetime | None = None, api: client.ApiClient | None = None):
    """One collection pass at `now` (the clock is injectable for tests): observe the cluster
    (provisioning/observe.py), then record usage, gaps and GPU inventory (`record_pass`)."""
    now = now or timezone.now()
    # Each GPU type's label key names the product of its own resource (whole GPUs, MIG
    # slices); the default pair first: a resource labelled under two keys counts as the first.
    pairs = set(GpuType.objects.values_list("node_label_key", "resource_name"))
    kinds = (
        (GPU_PRODUCT_LABEL, "nvidia.com/gpu"),
        *sorted(pairs - {(GPU_PRODUCT_LABEL, "nvidia.com/gpu")}),
    )
    observation = observe(api or cluster.api_client(), gpu_kinds=kinds)
    return record_pass(observation, now)


def record_pass(observation: Observation, now: datetime) -> CollectionPass | None:
    """Record one pass observed at `now` (see the module docstring for what is charged);
    None when a later pass was already recorded."""
    started = time.monotonic()
    now = now.astimezone(UTC)
    interval = timedelta(seconds=settings.USAGE_COLLECT_INTERVAL_SECONDS)
    allowed = timedelta(seconds=settings.USAGE_MAX_INTERVAL_SECONDS)
    with transaction.atomic():
        _lock()
        prev = CollectionPass.objects.order_by("-at").values_list("at", flat=True).first()
        if prev is not None and now <= prev:
            log.info("usage.pass_skipped", at=now.isoformat(), previous=prev.isoformat())
            return None
        charged_from = prev
        if prev is not None and now - prev > allowed:
            charged_from = now - interval
            CollectionGap.objects.create(start=prev, end=charged_from)
            log.warning("usage.gap", start=prev.isoformat(), end=charged_from.isoformat())

        slugs = dict(
            Hub.objects.filter(pk__in={h.hub_id for h in observation.holdings}).values_list(
                "pk", "slug"
            )
        )
        # Hub ids are unique within one portal only: the namespace must be the hub's too.
        holdings = [
            h
            for h in observation.holdings
            if h.hub_id in slugs and is_hub_namespace(h.namespace, slugs[h.hub_id])
        ]
        users = dict(
            get_user_model()
            .objects.filter(username__in={h.username for h in holdings if h.username})
            .values_list("username", "pk")
        )
        hours: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        days: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        pieces: dict[datetime, list[tuple[datetime, int]]] = {}
        if charged_from is not None:
            for holding in holdings:
                begin = max(charged_from, holding.since or charged_from)
                if begin not in pieces:
                    pieces[begin] = _hour_pieces(begin, now)
                rates = (
                    holding.cpu_millicores,
                    int(holding.memory_mib * MIB),
                    holding.gpus,
                    int(holding.storage_mib * MIB),
                )
                key = (holding.hub_id, holding.username, holding.component, holding.gpu_product)
                for hour, micros in pieces[begin]:
                    for amounts in (hours[(*key, hour)], days[(*key, hour.date())]):
                        for index in range(4):
                            amounts[index] += rates[index] * micros

        def rows(bucket: dict[tuple, list[int]]) -> list[tuple]:
            return [
                (
                    hub_id,
                    when,
                    username,
                    component,
                    product,
                    users.get(username),
                    *(_stored(a, d) for a, d in zip(amounts, _DIVISORS, strict=True)),
                )
                for (hub_id, username, component, product, when), amounts in bucket.items()
            ]

        _upsert(UsageHour, "hour", rows(hours))
        _upsert(UsageDay, "day", rows(days))
        _record_gpus(observation, now)
        record = CollectionPass.objects.create(
            at=now,
            charged_from=charged_from,
            duration_seconds=observation.seconds + (time.monotonic() - started),
            api_calls=observation.api_calls,
            namespaces_seen=observation.namespaces,
            pods_seen=sum(1 for h in holdings if h.kind == "pod"),
            volumes_seen=sum(1 for h in holdings if h.kind == "volume"),
            rows_written=len(hours) + len(days),
        )
    log.info(
        "usage.pass",
        at=now.isoformat(),
        pods=record.pods_seen,
        volumes=record.volumes_seen,
        api_calls=record.api_calls,
        rows=record.rows_written,
        seconds=round(record.duration_seconds, 3),
    )
    return record


def _record_gpus(observation: Observation, now: datetime) -> None:
    """What the pass saw of each GPU product. A product no node offers any more, and a
    catalogue GPU type no node has ever offered, count zero: after a pass, only a type that no
    pass has looked for is unknown."""
    for product, count in observation.gpus.items():
        GpuInventory.objects.update_or_create(
            product=product,
            defaults={"allocatable": count.allocatable, "in_use": count.in_use, "observed": now},
        )
    seen = list(observation.gpus)
    GpuInventory.objects.exclude(product__in=seen).update(allocatable=0, in_use=0, observed=now)
    known = GpuInventory.objects.values_list("product", flat=True)
    never = GpuType.objects.exclude(node_label_value__in=known).values_list(
        "node_label_value", flat=True
    )
    GpuInventory.objects.bulk_create(
        [
            GpuInventory(product=product, allocatable=0, in_use=0, observed=now)
            for product in sorted(set(never))
        ],
        ignore_conflicts=True,
    )


def prune(now: datetime | None = None) -> dict[str, int]:
    """Delete usage older than the horizons: hourly rows after USAGE_HOURLY_RETENTION_DAYS,
    daily rows, passes and gaps after USAGE_RETENTION_DAYS."""
    now = (now or timezone.now()).astimezone(UTC)
    horizon = now - timedelta(days=settings.USAGE_RETENTION_DAYS)
    hourly_horizon = now - timedelta(days=settings.USAGE_HOURLY_RETENTION_DAYS)
    deleted = {
        "hours": UsageHour.objects.filter(hour__lt=hourly_horizon).delete()[0],
        "days": UsageDay.objects.filter(day__lt=horizon.date()).delete()[0],
        "passes": CollectionPass.objects.filter(at__lt=horizon).delete()[0],
        "gaps": CollectionGap.objects.filter(end__lt=horizon).delete()[0],
    }
    log.info("usage.pruned", **deleted)
    return deleted
