"""Classes that start warm: when a hub's class sessions take place, and how many placeholder
servers hold room for them at a moment.

A session's room is held from WARM_LEAD_MINUTES before it starts until it ends. Placeholders
are as many as attend (those on GPU servers with the hub's GPUs), never more than the hub's
quota holds (servers, GPU seats), held to an admin's cap; a refused session has none.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from portal.hubs.lifecycle import HubState
from portal.hubs.models import ClassSession, Hub

# Hubs whose users may start servers: only they get placeholders.
WARM_STATES = frozenset({HubState.RUNNING, HubState.UPDATING, HubState.EXPIRING})


@dataclass(frozen=True)
class Occurrence:
    """One time a session takes place, and the room kept for it."""

    session: ClassSession
    starts: datetime.datetime
    ends: datetime.datetime
    servers: int  # placeholders without a GPU
    gpu_servers: int  # placeholders with the hub's GPUs

    @property
    def held_from(self) -> datetime.datetime:
        """When its placeholders are made: the lead time before it starts."""
        return self.starts - lead_time()

    @property
    def placeholders(self) -> int:
        return self.servers + self.gpu_servers

    @property
    def gpus(self) -> int:
        """GPUs its placeholders hold (GPU placeholders x the hub's GPUs per server)."""
        return self.gpu_servers * (self.session.hub.gpus_per_user or 0)


def lead_time() -> datetime.timedelta:
    """How long before a session its room is held (WARM_LEAD_MINUTES)."""
    return datetime.timedelta(minutes=settings.WARM_LEAD_MINUTES)


def room(session: ClassSession, hub: Hub) -> tuple[int, int]:
    """Placeholders (without, with a GPU) a session gets: its attendees within the hub's
    quota and the admin's cap (GPU servers first); none when refused."""
    if session.refused:
        return 0, 0
    servers = hub.servers
    gpu_servers = min(session.gpu_attendees, hub.gpu_servers)
    cap = servers if session.max_placeholders is None else min(servers, session.max_placeholders)
    gpu_servers = min(gpu_servers, cap)
    plain = min(session.attendees - session.gpu_attendees, cap - gpu_servers)
    return max(plain, 0), gpu_servers


def occurrences(
    sessions: Iterable[ClassSession], hub: Hub, start: datetime.datetime, end: datetime.datetime
) -> Iterator[Occurrence]:
    """Occurrences of the sessions whose held time (lead time included) overlaps start-end,
    in order; weekly sessions repeat until their last day or the hub's end date."""
    found = []
    for session in sessions:
        zone = zoneinfo.ZoneInfo(session.time_zone)
        last = (session.last_day or hub.end_date) if session.weekly else session.first_day
        day = session.first_day
        servers, gpu_servers = room(session, hub)
        while day <= last:
            starts = datetime.datetime.combine(day, session.start_time, tzinfo=zone)
            ends = starts + datetime.timedelta(minutes=session.duration_minutes)
            if ends > start and starts - lead_time() < end:
                found.append(Occurrence(session, starts, ends, servers, gpu_servers))
            if starts - lead_time() >= end:
                break
            day += datetime.timedelta(days=7)
    return iter(sorted(found, key=lambda o: (o.starts, o.session.pk)))


def placeholders_at(hub: Hub, now: datetime.datetime | None = None) -> tuple[int, int]:
    """Placeholders (without, with a GPU) that hold room for the hub's classes at `now`:
    the sum over sessions held then, within the hub's servers and GPU seats."""
    if not hub.pk or hub.state not in WARM_STATES:
        return 0, 0
    now = now or timezone.now()
    return held_room(occurrences(hub.class_sessions.all(), hub, now, now), hub)


def held_room(held: Iterable[Occurrence], hub: Hub) -> tuple[int, int]:
    """Placeholders (without, with a GPU) of the hub's occurrences held at the same moment:
    their sum, within the hub's servers and GPU seats (what its quota grows by)."""
    held = list(held)
    gpu_servers = min(sum(o.gpu_servers for o in held), hub.gpu_servers, hub.servers)
    plain = min(sum(o.servers for o in held), hub.servers - gpu_servers)
    return plain, gpu_servers


def most_gpus_by_day(
    held: Iterable[Occurrence], hub: Hub, zone: datetime.tzinfo
) -> dict[datetime.date, int]:
    """The most GPUs the hub's placeholders hold at one moment on each day (in `zone`) that
    its occurrences' held times [held_from, ends) touch: occurrences of a day that do not
    overlap count the larger, those that do count together (within the quota, held_room)."""
    spans: dict[datetime.date, list[tuple[datetime.datetime, datetime.datetime, Occurrence]]] = {}
    for occurrence in held:
        if not occurrence.gpu_servers:
            continue
        day = occurrence.held_from.astimezone(zone).date()
        while (day_starts := midnight(day, zone)) < occurrence.ends:
            start = max(occurrence.held_from, day_starts)
            end = min(occurrence.ends, midnight(day + datetime.timedelta(days=1), zone))
            spans.setdefault(day, []).append((start, end, occurrence))
            day += datetime.timedelta(days=1)
    gpus = {}
    for day, day_spans in spans.items():
        # The most held at once is reached as one of them starts: look at each such moment.
        most = max(
            held_room([o for start, end, o in day_spans if start <= moment < end], hub)[1]
            for moment, _, _ in day_spans
        )
        gpus[day] = most * (hub.gpus_per_user or 0)
    return gpus


def midnight(day: datetime.date, zone: datetime.tzinfo) -> datetime.datetime:
    """The start of a day in a time zone."""
    return datetime.datetime.combine(day, datetime.time(0), tzinfo=zone)


def reservations(
    start: datetime.datetime, end: datetime.datetime, hubs: QuerySet[Hub] | None = None
) -> list[Occurrence]:
    """Every occurrence of live hubs' sessions held between start and end, in order: of all
    hubs (admins' capacity page and API), or of those in `hubs` (what a caller may see)."""
    hubs = (Hub.objects.all() if hubs is None else hubs).live()
    hubs = hubs.filter(pk__in=ClassSession.objects.values("hub_id"))
    hubs = hubs.select_related("gpu_type").prefetch_related("class_sessions")
    found: list[Occurrence] = []
    for hub in hubs:
        found += occurrences(hub.class_sessions.all(), hub, start, end)
    return sorted(found, key=lambda o: (o.starts, o.session.hub_id, o.session.pk))
