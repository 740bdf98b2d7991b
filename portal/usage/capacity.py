"""GPU capacity: what the cluster has, what hubs reserve over their dates, what is free; and
the estimated cost of a request.

- Allocatable and in use now come from the nodes and pods, as the last collection pass saw
  them (GpuInventory, written by portal/usage/recording.py); "unknown" only until the first
  pass: after it, a GPU type no node offers (any more) has zero.
- A hub reserves its GPU quota (its GPU seats `max_gpus`, which hubs from before seats have
  as expected users x servers per user x GPUs per server; held to HUB_QUOTA_CAPS, exactly the
  ResourceQuota's `requests.<gpu resource>`) on every day from its start to its end date, both
  included, while it is approved, provisioning, running, updating or expiring.
- While a class session is held (from its lead time before it starts until it ends) the
  hub's quota grows by its placeholders, on top of its seats: on each day (in the portal's
  TIME_ZONE, like the hub's dates) a reserving hub also reserves the most GPUs its classes'
  placeholders hold at one moment that day (portal/hubs/classes.py decides their room).
- Free over a period = allocatable - the most reserved on any day of the period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from portal.hubs import classes
from portal.hubs.lifecycle import RESERVING_STATES, LifecycleError
from portal.hubs.models import (
    ClassSession,
    GpuType,
    HardwareOption,
    Hub,
    all_servers_gpus,
    gpu_seats,
)
from portal.usage.models import GpuInventory
from portal.usage.prices import (
    ZERO,
    Cost,
    PriceBook,
    currency,
)
from portal.usage.queries import today
from provisioning.spec import HubSpec


class OverCapacity(LifecycleError):
    """A hub's GPUs do not fit in what is free over its dates (a conflict: 409 in the API)."""

    def __init__(self, free: FreeGpus, wanted: int):
        self.free, self.wanted = free, wanted
        for_classes = f", {free.for_classes} of them for class sessions" if free.for_classes else ""
        super().__init__(
            f"Not enough {free.gpu_type.display_name} GPUs: the hub needs {wanted}, but only "
            f"{max(free.free or 0, 0)} of {free.allocatable} are free from {free.start} to "
            f"{free.end} (at most {free.max_reserved} reserved by other hubs on "
            f"{free.busiest_day}{for_classes}). Approve with an override and a reason to go "
            "over capacity."
        )


@dataclass(frozen=True)
class GpuNow:
    """GPUs of one type in the cluster now."""

    gpu_type: GpuType | None
    product: str
    allocatable: int
    in_use: int

    @property
    def name(self) -> str:
        return self.gpu_type.name if self.gpu_type else self.product

    @property
    def display_name(self) -> str:
        return self.gpu_type.display_name if self.gpu_type else self.product

    @property
    def free_now(self) -> int:
        return max(self.allocatable - self.in_use, 0)


@dataclass(frozen=True)
class FreeGpus:
    """GPUs of one type free over a whole period (the minimum over its days)."""

    gpu_type: GpuType
    start: date
    end: date
    allocatable: int | None  # None: no collection pass has seen this GPU type yet
    max_reserved: int
    busiest_day: date | None
    for_classes: int = 0  # of max_reserved, held for class sessions (the hub's own included)

    @property
    def free(self) -> int | None:
        return None if self.allocatable is None else self.allocatable - self.max_reserved

    def fits(self, wanted: int) -> bool:
        """Whether `wanted` more GPUs fit (True when capacity is unknown: nothing to check)."""
        return self.free is None or wanted <= self.free


@dataclass(frozen=True)
class TimelineDay:
    """Reserved and free GPUs of one type on one day."""

    day: date
    allocatable: int | None
    reserved: int
    for_classes: int = 0  # of reserved, held for class sessions

    @property
    def free(self) -> int | None:
        return None if self.allocatable is None else self.allocatable - self.reserved


def quota_gpus(
    users: int, servers_per_user: int, gpus_per_server: int, resource: str, max_gpus: int = 0
) -> int:
    """The GPUs a hub's quota holds: its GPU seats `max_gpus` (0: users x servers x GPUs per
    server, which is also the most seats can hold), held to the cap."""
    every = all_servers_gpus(users, servers_per_user, gpus_per_server)
    wanted = min(max_gpus, every) if max_gpus else every
    cap = settings.HUB_QUOTA_CAPS.get(f"requests.{resource}")
    try:
        return min(wanted, int(cap)) if cap is not None else wanted
    except ValueError:
        return wanted


def reserved_gpus(spec: HubSpec) -> int:
    """The GPUs a hub's spec reserves (its GPU quota: its GPU seats); 0 without GPUs."""
    if spec.gpu is None:
        return 0
    return quota_gpus(
        spec.expected_users,
        spec.notebooks_per_user,
        spec.gpu.count,
        spec.gpu.resource_name,
        spec.gpu.max_gpus,
    )


def _row_gpus(hub: Hub) -> int:
    """The GPUs a hub row reserves (the reservations of many hubs are read from their rows)."""
    if not hub.gpu_type_id or not hub.gpus_per_user:
        return 0
    return quota_gpus(
        hub.expected_users,
        hub.notebooks_per_user,
        hub.gpus_per_user,
        hub.gpu_type.resource_name,
        hub.max_gpus,
    )


def gpu_type_of(spec: HubSpec) -> GpuType | None:
    """The catalogue's GPU type a spec's GPUs are of, None without GPUs."""
    if spec.gpu is None:
        return None
    return GpuType.objects.filter(name=spec.gpu.type_name).first()


def gpus_now() -> list[GpuNow]:
    """Allocatable and in-use GPUs per product, as the last collection pass saw them."""
    types: dict[str, GpuType] = {}
    for gpu in GpuType.objects.order_by("pk"):
        types.setdefault(gpu.node_label_value, gpu)
    return [
        GpuNow(types.get(row.product), row.product, row.allocatable, row.in_use)
        for row in GpuInventory.objects.order_by("product")
    ]


def allocatable(gpu_type: GpuType) -> int | None:
    """GPUs of this type the cluster's nodes offer; None before the first collection pass."""
    row = GpuInventory.objects.filter(product=gpu_type.node_label_value).first()
    return row.allocatable if row else None


def _reserving_hubs(gpu_type: GpuType | None, start: date, end: date, exclude: Iterable[int] = ()):
    """Hubs that reserve GPUs of this type (None: of any type) on a day from start to end."""
    hubs = Hub.objects.filter(
        gpu_type__isnull=False,
        gpus_per_user__gt=0,
        state__in=RESERVING_STATES,
        start_date__lte=end,
        end_date__gte=start,
    )
    if gpu_type is not None:
        hubs = hubs.filter(gpu_type=gpu_type)
    return hubs.exclude(pk__in=list(exclude)).select_related("gpu_type")


def reserved_on(day: date) -> dict[str, int]:
    """GPUs reserved on `day` by GPU type name, classes' room included, for every type some
    hub reserves then (a few queries a type)."""
    types = GpuType.objects.filter(pk__in=_reserving_hubs(None, day, day).values("gpu_type"))
    return {gpu_type.name: reserved_by_day(gpu_type, day, day)[day] for gpu_type in types}


def reserved_by_day(
    gpu_type: GpuType, start: date, end: date, exclude: Iterable[int] = (), own: Hub | None = None
) -> dict[date, int]:
    """GPUs of this type reserved on each day from start to end (both included): hubs' seats
    (those in `exclude` and `own` left out) and the room held for classes (see _reserved)."""
    return _reserved(gpu_type, start, end, exclude, own)[0]


def _reserved(
    gpu_type: GpuType, start: date, end: date, exclude: Iterable[int], own: Hub | None
) -> tuple[dict[date, int], dict[date, int]]:
    """GPUs reserved on each day, and how many of them for classes. The classes of the hubs in
    `exclude` still count (they are held on top of the seats a change replaces); those of
    `own`, the hub being decided as it would be (see as_specified), count as it would hold
    them, whatever its state."""
    exclude = {*exclude, *([own.pk] if own is not None else [])}
    days = {start + timedelta(days=n): 0 for n in range((end - start).days + 1)}
    for hub in _reserving_hubs(gpu_type, start, end, exclude):
        gpus = _row_gpus(hub)
        first, last = max(hub.start_date, start), min(hub.end_date, end)
        for n in range((last - first).days + 1):
            days[first + timedelta(days=n)] += gpus
    for_classes = _class_gpus_by_day(gpu_type, start, end, own)
    return {day: days[day] + for_classes[day] for day in days}, for_classes


def _class_gpus_by_day(
    gpu_type: GpuType, start: date, end: date, own: Hub | None
) -> dict[date, int]:
    """GPUs of this type held for classes on each day: for every reserving hub, the most its
    placeholders hold at one moment that day (three queries, whatever the period)."""
    zone = timezone.get_default_timezone()
    after = classes.midnight(start, zone)
    before = classes.midnight(end + timedelta(days=1), zone)
    hubs = _reserving_hubs(gpu_type, start, end, exclude=[own.pk] if own is not None else [])
    by_hub: dict[int, tuple[Hub, list[classes.Occurrence]]] = {}
    for occurrence in classes.reservations(after, before, hubs):
        hub = occurrence.session.hub
        by_hub.setdefault(hub.pk, (hub, []))[1].append(occurrence)
    if own is not None and own.gpu_type_id == gpu_type.pk and own.gpus_per_user:
        sessions = ClassSession.objects.filter(hub_id=own.pk)
        by_hub[own.pk] = (own, list(classes.occurrences(sessions, own, after, before)))
    days = {start + timedelta(days=n): 0 for n in range((end - start).days + 1)}
    for hub, held in by_hub.values():
        for day, gpus in classes.most_gpus_by_day(held, hub, zone).items():
            if day in days:
                days[day] += gpus
    return days


def as_specified(spec: HubSpec) -> Hub | None:
    """The spec's hub as the spec would make it (GPU type, servers, seats, dates; not saved):
    what its class sessions would hold after the decision. None for a hub not yet saved."""
    hub = Hub.objects.filter(pk=spec.hub_id).first() if spec.hub_id else None
    if hub is None:
        return None
    hub.gpu_type = gpu_type_of(spec)
    hub.gpus_per_user = spec.gpu.count if spec.gpu else 0
    hub.expected_users, hub.notebooks_per_user = spec.expected_users, spec.notebooks_per_user
    hub.start_date, hub.end_date = spec.start_date, spec.end_date
    hub.max_gpus = gpu_seats(
        spec.gpu.max_gpus if spec.gpu else 0,
        spec.expected_users,
        spec.notebooks_per_user,
        hub.gpus_per_user,
    )
    return hub


def free_over(
    gpu_type: GpuType, start: date, end: date, exclude: Iterable[int] = (), own: Hub | None = None
) -> FreeGpus:
    """GPUs of this type free on every day of the period (allocatable - max reserved)."""
    days, for_classes = _reserved(gpu_type, start, end, exclude, own)
    busiest = max(days, key=lambda day: (days[day], -day.toordinal())) if days else None
    return FreeGpus(
        gpu_type=gpu_type,
        start=start,
        end=end,
        allocatable=allocatable(gpu_type),
        max_reserved=days[busiest] if busiest else 0,
        busiest_day=busiest,
        for_classes=for_classes[busiest] if busiest else 0,
    )


def timeline(gpu_type: GpuType, weeks: int = 8, start: date | None = None) -> list[TimelineDay]:
    """Reserved and free GPUs of this type on each day of the coming `weeks` weeks."""
    first = start or today()
    last = first + timedelta(days=7 * weeks - 1)
    total = allocatable(gpu_type)
    days, for_classes = _reserved(gpu_type, first, last, (), None)
    return [TimelineDay(day, total, reserved, for_classes[day]) for day, reserved in days.items()]


def check_hub_fits(spec: HubSpec) -> FreeGpus | None:
    """Raise OverCapacity when the spec's GPUs do not fit over its dates (others' reservations
    and every class's room counted, its hub's own seats not); None without GPUs. Call it with
    the GPU type row locked."""
    wanted = reserved_gpus(spec)
    gpu_type = gpu_type_of(spec)
    if not wanted or gpu_type is None:
        return None
    # Its own seats are left out (the spec replaces them), its own classes are not: they are
    # held on top of its seats, so its seats and its classes must fit together.
    own = as_specified(spec)
    free = free_over(gpu_type, spec.start_date, spec.end_date, exclude=[spec.hub_id], own=own)
    if not free.fits(wanted):
        raise OverCapacity(free, wanted)
    return free


# --- Cost estimate of a request -----------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimate:
    """The most a request can cost: every server running its largest option all the time,
    every volume full, for the whole period, by the prices in force on each day."""

    currency: str
    days: int
    servers: int
    per_day: dict[str, Decimal]  # the first day's cost by resource and total, rounded
    total: dict[str, Decimal]  # the whole period's, rounded


def estimate_cost(
    *,
    start: date,
    end: date,
    expected_users: int,
    notebooks_per_user: int = 1,
    hardware_options: Iterable[HardwareOption] = (),
    gpu_type: GpuType | None = None,
    gpus_per_user: int = 0,
    max_gpus: int = 0,
    home_size_gib: int = 0,
    shared_volume_gib: int = 0,
) -> CostEstimate:
    """Estimate a request's cost: expected users x servers x the largest chosen option (its
    guarantee, which is what usage charges) x the period, plus its GPU seats (all held all the
    time; `max_gpus` 0: one set per server) and storage."""
    options = list(hardware_options)
    servers = max(expected_users, 0) * max(notebooks_per_user, 1)
    cpu = max((option.cpu_guarantee for option in options), default=ZERO)
    mem_gib = max((option.mem_guarantee_gib for option in options), default=ZERO)
    every = servers * gpus_per_user if gpu_type else 0
    gpus = min(max_gpus, every) if max_gpus else every
    storage_gib = servers * home_size_gib + shared_volume_gib
    day_seconds = 86400
    book = PriceBook.load()
    total, first = Cost(), None
    days = max((end - start).days + 1, 0)
    for n in range(days):
        day = start + timedelta(days=n)
        cost = book.cost(
            day,
            cpu_millicore_seconds=int(servers * cpu * 1000 * day_seconds),
            memory_mib_seconds=int(servers * mem_gib * 1024 * day_seconds),
            gpu_seconds=gpus * day_seconds,
            gpu_product=gpu_type.node_label_value if gpu_type else "",
            storage_mib_seconds=int(Decimal(storage_gib) * 1024 * day_seconds),
        )
        total.add(cost)
        first = first or cost
    return CostEstimate(
        currency=currency(),
        days=days,
        servers=servers,
        per_day=(first or Cost()).rounded(),
        total=total.rounded(),
    )


def hubs_reserving(gpu_type: GpuType, start: date, end: date) -> list[tuple[Hub, int]]:
    """The hubs reserving this GPU type during the period, with their GPUs (for the queue)."""
    return [(hub, _row_gpus(hub)) for hub in _reserving_hubs(gpu_type, start, end)]
