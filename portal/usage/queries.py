"""Read usage and cost: per hub, per user, admin totals; what the pages, the API and CSV show.

Every figure is allocation (requests x time, see models.py) priced by the price list in force
on each day (prices.py). Money is Decimal in USAGE_CURRENCY, rounded to the cent from the exact
amounts, so rounded parts may differ from the rounded total by a cent.

Granularity: hour (from the hourly table, only within USAGE_HOURLY_RETENTION_DAYS), day,
week (ISO weeks, starting on Monday) or month (calendar months); all in UTC. A period is a
start and an end date, both included.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from portal.hubs.models import GpuType, Hub
from portal.usage.models import CollectionGap, UsageDay, UsageHour
from portal.usage.prices import (
    MIB_SECONDS_PER_GIB_HOUR,
    MILLICORE_SECONDS_PER_CORE_HOUR,
    SECONDS_PER_HOUR,
    ZERO,
    Cost,
    PriceBook,
    currency,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

GRANULARITIES = ("hour", "day", "week", "month")
TOTALS_BY = ("hub", "owner", "gpu_type")
# The longest period one query may ask for.
MAX_PERIOD_DAYS = 400
MAX_HOURLY_DAYS = 31
AMOUNT_FIELDS = (
    "cpu_millicore_seconds",
    "memory_mib_seconds",
    "gpu_seconds",
    "storage_mib_seconds",
)


class UsageQueryError(ValueError):
    """Bad period or granularity; `errors` maps each parameter to its message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Period:
    """Dates from `start` to `end` (both included, UTC) in buckets of `granularity`."""

    start: date
    end: date
    granularity: str = "day"

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def start_time(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def end_time(self) -> datetime:
        """The first moment after the period."""
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)


@dataclass
class Amounts:
    """Resources used: core-hours, GiB-hours, GPU-hours by GPU type name, storage GiB-hours."""

    cpu_core_hours: Decimal = ZERO
    memory_gib_hours: Decimal = ZERO
    gpu_hours: dict[str, Decimal] = field(default_factory=dict)
    storage_gib_hours: Decimal = ZERO

    @property
    def gpu_hours_total(self) -> Decimal:
        return sum(self.gpu_hours.values(), ZERO)

    def add_row(self, row: dict[str, Any], gpu_name: str) -> None:
        """Add one database row of raw amounts."""
        self.cpu_core_hours += Decimal(row["cpu_millicore_seconds"] or 0) / (
            MILLICORE_SECONDS_PER_CORE_HOUR
        )
        self.memory_gib_hours += Decimal(row["memory_mib_seconds"] or 0) / MIB_SECONDS_PER_GIB_HOUR
        self.storage_gib_hours += (
            Decimal(row["storage_mib_seconds"] or 0) / MIB_SECONDS_PER_GIB_HOUR
        )
        if row["gpu_seconds"]:
            self.gpu_hours[gpu_name] = (
                self.gpu_hours.get(gpu_name, ZERO) + Decimal(row["gpu_seconds"]) / SECONDS_PER_HOUR
            )

    def as_dict(self) -> dict[str, Any]:
        """Rounded to 4 decimal places for display and the API."""
        q = Decimal("0.0001")
        return {
            "cpu_core_hours": self.cpu_core_hours.quantize(q),
            "memory_gib_hours": self.memory_gib_hours.quantize(q),
            "gpu_hours": {
                name: hours.quantize(q) for name, hours in sorted(self.gpu_hours.items())
            },
            "storage_gib_hours": self.storage_gib_hours.quantize(q),
        }


@dataclass
class Line:
    """Usage and cost of one bucket (a time, a user, a hub, an owner or a GPU type)."""

    key: str  # ISO date/time of the bucket start, a username, hub slug, owner or GPU type name
    label: str
    usage: Amounts = field(default_factory=Amounts)
    cost: Cost = field(default_factory=Cost)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "usage": self.usage.as_dict(),
            "cost": self.cost.rounded(),
        }


@dataclass
class UsageReport:
    """Usage and cost over a period: per time bucket, per user (most expensive first), total."""

    period: Period
    currency: str
    buckets: list[Line]
    by_user: list[Line]
    total: Line
    gaps: list[CollectionGap]
    by_hub: list[Line] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as the API returns it."""
        return {
            "start": self.period.start,
            "end": self.period.end,
            "granularity": self.period.granularity,
            "currency": self.currency,
            "total": self.total.as_dict(),
            "buckets": [line.as_dict() for line in self.buckets],
            "by_user": [line.as_dict() for line in self.by_user],
            "by_hub": [line.as_dict() for line in self.by_hub],
            "gaps": [{"start": gap.start, "end": gap.end} for gap in self.gaps],
        }


# --- Periods ------------------------------------------------------------------------------------


def today() -> date:
    """Today in UTC."""
    return timezone.now().astimezone(UTC).date()


def last_days(days: int, granularity: str = "day", until: date | None = None) -> Period:
    """The last `days` days up to and including `until` (today by default)."""
    end = until or today()
    return Period(end - timedelta(days=days - 1), end, granularity)


def parse_period(
    start: str | None,
    end: str | None,
    granularity: str | None,
    default_days: int = 30,
    until: date | None = None,
) -> Period:
    """Validate query parameters (ISO dates, a granularity); UsageQueryError says what is wrong.

    Missing dates default to the last `default_days` days; `granularity` defaults to day.
    """
    errors: dict[str, str] = {}
    parsed: dict[str, date | None] = {}
    for name, value in (("start", start), ("end", end)):
        parsed[name] = None
        if value:
            try:
                parsed[name] = date.fromisoformat(value)
            except ValueError:
                errors[name] = "Give a date as YYYY-MM-DD."
    granularity = granularity or "day"
    if granularity not in GRANULARITIES:
        errors["granularity"] = f"Choose one of: {', '.join(GRANULARITIES)}."
    if errors:
        raise UsageQueryError(errors)
    end_date = parsed["end"] or until or today()
    start_date = parsed["start"] or end_date - timedelta(days=default_days - 1)
    if start_date > end_date:
        raise UsageQueryError({"start": "The start must not be after the end."})
    days = (end_date - start_date).days + 1
    if days > MAX_PERIOD_DAYS:
        raise UsageQueryError({"start": f"Ask for at most {MAX_PERIOD_DAYS} days at once."})
    if granularity == "hour":
        if days > MAX_HOURLY_DAYS:
            raise UsageQueryError(
                {"granularity": f"Hourly usage covers at most {MAX_HOURLY_DAYS} days at once."}
            )
        kept_since = (until or today()) - timedelta(days=settings.USAGE_HOURLY_RETENTION_DAYS)
        if start_date < kept_since:
            raise UsageQueryError(
                {
                    "granularity": "Hourly usage is kept for "
                    f"{settings.USAGE_HOURLY_RETENTION_DAYS} days; use day for older periods."
                }
            )
    return Period(start_date, end_date, granularity)


def bucket_start(day: date, granularity: str) -> date:
    """The first day of the week or month `day` falls in (the day itself otherwise)."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    return day


def bucket_keys(period: Period) -> list[str]:
    """Every bucket of the period in order, as ISO strings (empty buckets included)."""
    if period.granularity == "hour":
        moment, stop = period.start_time, period.end_time
        keys = []
        while moment < stop:
            keys.append(moment.isoformat())
            moment += timedelta(hours=1)
        return keys
    keys: list[str] = []
    day = period.start
    while day <= period.end:
        key = bucket_start(day, period.granularity).isoformat()
        if not keys or keys[-1] != key:
            keys.append(key)
        day += timedelta(days=1)
    return keys


# --- Who sees what ------------------------------------------------------------------------------


def sees_all_users(hub: Hub, viewer: AbstractBaseUser, *, as_admin: bool = True) -> bool:
    """Owner, co-owners (also through an IdP group) and admins see every user's usage of a
    hub; members only their own (`as_admin=False`: an admin sees as a user would)."""
    return hub.can_manage(viewer, as_admin=as_admin)


# --- Reports ------------------------------------------------------------------------------------


def _gpu_names() -> dict[str, str]:
    """GPU type names (catalogue `name`) by node product label."""
    names: dict[str, str] = {}
    for gpu in GpuType.objects.order_by("pk"):
        names.setdefault(gpu.node_label_value, gpu.name)
    return names


def _sums(period: Period, filters: Q, group: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Sums of the raw amounts per `group` and GPU product over the period (hourly rows for
    hour granularity, daily rows otherwise), summed by the database."""
    if period.granularity == "hour":
        qs = UsageHour.objects.filter(
            filters, hour__gte=period.start_time, hour__lt=period.end_time
        )
    else:
        qs = UsageDay.objects.filter(filters, day__gte=period.start, day__lte=period.end)
    sums = {name: Sum(name) for name in AMOUNT_FIELDS}
    return qs.values("gpu_product", *group).annotate(**sums).order_by()


def _bucket_of(when: date | datetime, granularity: str) -> tuple[str, date]:
    if granularity == "hour":
        moment = when.astimezone(UTC)
        return moment.isoformat(), moment.date()
    return bucket_start(when, granularity).isoformat(), when


def gaps_in(period: Period) -> list[CollectionGap]:
    """Collection gaps that overlap the period."""
    return list(
        CollectionGap.objects.filter(start__lt=period.end_time, end__gt=period.start_time).order_by(
            "start"
        )
    )


def _price_segments(book: PriceBook, period: Period) -> list[Period]:
    """The period cut where a price list starts, so that one price list covers each part."""
    cuts = [day for day in book.starts if period.start < day <= period.end]
    starts = [period.start, *cuts]
    ends = [day - timedelta(days=1) for day in cuts] + [period.end]
    return [Period(a, b, period.granularity) for a, b in zip(starts, ends, strict=True)]


def _add(target: Line, row: dict[str, Any], gpu_name: str, cost: Cost) -> None:
    target.usage.add_row(row, gpu_name)
    target.cost.add(cost)
    if cost.gpu:
        by_type = target.cost.gpu_by_type
        by_type[gpu_name] = by_type.get(gpu_name, ZERO) + cost.gpu


def _cost(book: PriceBook, day: date, row: dict[str, Any]) -> Cost:
    return book.cost(
        day,
        cpu_millicore_seconds=row["cpu_millicore_seconds"] or 0,
        memory_mib_seconds=row["memory_mib_seconds"] or 0,
        gpu_seconds=row["gpu_seconds"] or 0,
        gpu_product=row["gpu_product"],
        storage_mib_seconds=row["storage_mib_seconds"] or 0,
    )


def _report(
    period: Period,
    filters: Q,
    by: str,
    labels: dict[str, str] | None = None,
) -> tuple[list[Line], dict[str, Line], Line]:
    """Buckets in time, lines per `by` value (a values() path), and the total.

    The database sums: once per day (or hour) and GPU product for the buckets, and once per
    `by` value and GPU product for each stretch of the period under one price list.
    """
    book = PriceBook.load()
    gpu_names = _gpu_names()
    buckets = {key: Line(key, key) for key in bucket_keys(period)}
    total = Line("total", "Total")
    when = "hour" if period.granularity == "hour" else "day"
    for row in _sums(period, filters, [when]):
        key, day = _bucket_of(row[when], period.granularity)
        gpu_name = gpu_names.get(row["gpu_product"], row["gpu_product"])
        cost = _cost(book, day, row)
        _add(buckets.setdefault(key, Line(key, key)), row, gpu_name, cost)
        _add(total, row, gpu_name, cost)
    lines: dict[str, Line] = {}
    for segment in _price_segments(book, period):
        for row in _sums(segment, filters, [by]):
            who = str(row[by] if row[by] is not None else "")
            line = lines.get(who)
            if line is None:
                line = lines[who] = Line(who, (labels or {}).get(who, who) or "(hub)")
            gpu_name = gpu_names.get(row["gpu_product"], row["gpu_product"])
            _add(line, row, gpu_name, _cost(book, segment.start, row))
    return list(buckets.values()), lines, total


def total_cost(period: Period) -> Cost:
    """What all hubs' usage over the period cost (three queries: the price lists, and the
    daily amounts summed per day and GPU product)."""
    book = PriceBook.load()
    total = Cost()
    for row in _sums(Period(period.start, period.end, "day"), Q(), ["day"]):
        total.add(_cost(book, row["day"], row))
    return total


def _by_cost(lines: Iterable[Line]) -> list[Line]:
    return sorted(lines, key=lambda line: (-line.cost.total, line.key))


def hub_usage(
    hub: Hub, viewer: AbstractBaseUser, period: Period, *, as_admin: bool = True
) -> UsageReport:
    """Usage and cost of one hub: every user's for its owner, co-owners and admins, only the
    viewer's own for members. The caller checks the viewer may see the hub at all."""
    filters = Q(hub=hub)
    if not sees_all_users(hub, viewer, as_admin=as_admin):
        filters &= Q(user=viewer)
    buckets, lines, total = _report(period, filters, "username")
    return UsageReport(
        period=period,
        currency=currency(),
        buckets=buckets,
        by_user=_by_cost(lines.values()),
        total=total,
        gaps=gaps_in(period),
    )


def user_usage(user: AbstractBaseUser, period: Period) -> UsageReport:
    """One user's own usage and cost across all hubs, per time bucket and per hub."""
    slugs = dict(Hub.objects.filter(pk__in=_hub_ids_of(user)).values_list("pk", "slug"))
    buckets, lines, total = _report(
        period, Q(user=user), "hub_id", {str(pk): slug for pk, slug in slugs.items()}
    )
    return UsageReport(
        period=period,
        currency=currency(),
        buckets=buckets,
        by_user=[],
        by_hub=_by_cost(lines.values()),
        total=total,
        gaps=gaps_in(period),
    )


def _hub_ids_of(user: AbstractBaseUser) -> Iterable[int]:
    return UsageDay.objects.filter(user=user).values_list("hub_id", flat=True).distinct()


def top_users(hub: Hub, viewer: AbstractBaseUser, period: Period, limit: int = 10) -> list[Line]:
    """The users of a hub who cost the most over the period (see `hub_usage` for who sees)."""
    return hub_usage(hub, viewer, period).by_user[:limit]


def admin_totals(period: Period, by: str) -> tuple[list[Line], Line]:
    """Usage and cost of all hubs grouped by hub (slug), owner (username) or GPU type (name),
    most expensive first, and the grand total. Admins only (the caller checks)."""
    if by not in TOTALS_BY:
        raise UsageQueryError({"by": f"Choose one of: {', '.join(TOTALS_BY)}."})
    if by == "hub":
        path, labels = "hub__slug", None
    elif by == "owner":
        path, labels = "hub__owner__username", None
    else:
        path, labels = "gpu_product", None
    _, lines, total = _report(period, Q(), path, labels)
    if by == "gpu_type":
        gpu_names = _gpu_names()
        for line in lines.values():
            line.label = gpu_names.get(line.key, line.key) or "(no GPU)"
    return _by_cost(lines.values()), total


# --- CSV ----------------------------------------------------------------------------------------

CSV_HEADER = [
    "key",
    "label",
    "cpu_core_hours",
    "memory_gib_hours",
    "gpu_hours",
    "storage_gib_hours",
    "cost_cpu",
    "cost_memory",
    "cost_gpu",
    "cost_storage",
    "cost_total",
    "currency",
]


def to_csv(lines: Iterable[Line], total: Line | None = None) -> str:
    """Lines (and a total row) as CSV text with a header; GPU hours of all types summed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    unit = currency()
    for line in [*lines, *([total] if total else [])]:
        usage = line.usage.as_dict()
        cost = line.cost.rounded()
        writer.writerow(
            [
                _csv_safe(line.key),
                _csv_safe(line.label),
                usage["cpu_core_hours"],
                usage["memory_gib_hours"],
                line.usage.gpu_hours_total.quantize(Decimal("0.0001")),
                usage["storage_gib_hours"],
                cost["cpu"],
                cost["memory"],
                cost["gpu"],
                cost["storage"],
                cost["total"],
                unit,
            ]
        )
    return buffer.getvalue()


def _csv_safe(text: str) -> str:
    """Keep spreadsheets from running a cell as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def hub_csv(report: UsageReport) -> str:
    """A hub's usage per time bucket, then per user, then the total."""
    return to_csv([*report.buckets, *report.by_user], report.total)
