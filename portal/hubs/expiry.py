"""Graceful expiry: warnings before a hub's end date, suspension at it, deletion after a grace.

A hub's end date is its last usable day; it ends at the following midnight (TIME_ZONE). One
pass of `run(now)` (the hourly Celery beat task portal.hubs.tasks.run_expiry) does, for every
live hub and idempotently:

- ``EXPIRY_WARNING_DAYS`` (default 14, 3, 1) before the end: mail a warning with a link that
  opens an extension request. Each threshold is sent once per hub and end date (recorded as a
  notifications.Notice, so a second pass or a restart sends nothing); when several thresholds
  are due at once (a short request, beat was down) only the most urgent goes out. A new end
  date has new keys, which re-arms the warnings.
- Inside the first warning window a running hub becomes ``expiring``: owners and admins see on
  the hub page that it is ending, and suspension always starts from ``expiring`` as the state
  machine reads. An expiring hub whose end date moved out of the window (an extension applied
  by a change) goes back to ``running``.
- At the end the hub is ``suspended`` (provisioning scales hub and proxy to zero, stops user
  servers and keeps every volume).
- ``EXPIRY_GRACE_DAYS`` (default 14) after the suspension the hub is deprovisioned and deleted.

Every function takes `now` so tests move the clock instead of sleeping.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.hubs import queue
from portal.hubs.lifecycle import (
    IN_SERVICE_STATES,
    WARNED_STATES,
    HubState,
    LifecycleError,
    transition,
)
from portal.hubs.models import Hub
from portal.notifications import mail

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser as User

log = structlog.get_logger(__name__)

# Offered by the extension link in a warning: the current end date plus this many days.
EXTENSION_DAYS = 30


def warning_days() -> list[int]:
    """The warning thresholds in days, most distant first (e.g. [14, 3, 1])."""
    raw = settings.EXPIRY_WARNING_DAYS
    values = raw.split(",") if isinstance(raw, str) else raw
    return sorted({int(value) for value in values if str(value).strip()}, reverse=True)


def days_left(hub: Hub, now: datetime.datetime) -> int:
    """Whole days from `now` until the hub ends, rounded up (1 on its last day, 0 after it)."""
    return max((hub.end_date - timezone.localdate(now)).days + 1, 0)


class EndDatePassed(LifecycleError):
    """A suspended hub is not resumed while its end date is past: the next expiry pass would
    suspend it again. Extend it (a change of the end date) first."""


def check_resumable(hub: Hub, now: datetime.datetime | None = None) -> None:
    """Raise EndDatePassed when resuming the hub now would be undone by the next pass."""
    if (now or timezone.now()) >= hub.ends_at():
        raise EndDatePassed(
            f"The hub's end date {hub.end_date.isoformat()} has passed: extend it first, "
            "or it is suspended again at the next expiry check."
        )


def extension_link(hub: Hub) -> str:
    """The portal link that opens a change request moving the end date by EXTENSION_DAYS."""
    proposed = hub.end_date + datetime.timedelta(days=EXTENSION_DAYS)
    base = settings.PORTAL_URL.rstrip("/")
    return f"{base}/hubs/{hub.pk}/change/?end_date={proposed.isoformat()}"


@dataclass
class Pass:
    """What one expiry pass did, as hub ids per step (for logs, the task's result and tests)."""

    warned: list[int] = field(default_factory=list)
    expiring: list[int] = field(default_factory=list)
    extended: list[int] = field(default_factory=list)
    suspended: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        return {name: list(value) for name, value in self.__dict__.items()}


def run(now: datetime.datetime | None = None) -> Pass:
    """One expiry pass at `now`: re-arm extended hubs, warn, expire, suspend and delete."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    result = Pass()
    first_window = max(warning_days(), default=0)

    steps = (
        # Extended out of the warning window: back to running.
        (
            Hub.objects.filter(
                state=HubState.EXPIRING, end_date__gt=today + _days(first_window - 1)
            ),
            lambda hub: _extend(hub, result),
        ),
        # Inside a warning window, not over yet.
        (
            Hub.objects.filter(
                state__in=WARNED_STATES,
                end_date__gte=today,
                end_date__lte=today + _days(first_window - 1),
            ),
            lambda hub: _warn(hub, now, result),
        ),
        # Over: suspend.
        (
            Hub.objects.filter(state__in=IN_SERVICE_STATES, end_date__lt=today),
            lambda hub: _suspend(hub, result),
        ),
        # Suspended for longer than the grace period: delete.
        (Hub.objects.filter(state=HubState.SUSPENDED), lambda hub: _delete(hub, now, result)),
    )
    for hubs, step in steps:
        for hub in hubs.select_related("owner").order_by("pk"):
            try:
                step(hub)
            except LifecycleError as error:
                # Someone moved the hub meanwhile (a delete, an admin); the next pass looks again.
                log.info("expiry.moved_on", hub_id=hub.pk, error=str(error))
            except Exception:
                log.exception("expiry.error", hub_id=hub.pk)
                result.errors.append(hub.pk)
    log.info("expiry.pass", now=now.isoformat(), **{k: len(v) for k, v in result.as_dict().items()})
    return result


def _days(count: int) -> datetime.timedelta:
    return datetime.timedelta(days=count)


def _extend(hub: Hub, result: Pass) -> None:
    unexpire(hub, f"End date moved to {hub.end_date.isoformat()}")
    result.extended.append(hub.pk)


def _warn(hub: Hub, now: datetime.datetime, result: Pass) -> None:
    if hub.state == HubState.RUNNING:
        expire(hub, f"Ends on {hub.end_date.isoformat()}")
        result.expiring.append(hub.pk)
    left = days_left(hub, now)
    due = sorted(days for days in warning_days() if left <= days)  # most urgent first
    if not due:
        return
    context = {
        "days_left": left,
        "ends_on": hub.end_date,
        "ends_at": hub.ends_at(),
        "extension_url": extension_link(hub),
        "grace_days": settings.EXPIRY_GRACE_DAYS,
    }
    sent = mail.notify(hub, mail.Kind.EXPIRY_WARNING, f"{hub.end_date}:{due[0]}", context)
    if sent is not None:
        result.warned.append(hub.pk)
    # Thresholds passed without a warning (all due at once) are recorded as covered, so a
    # later pass does not send a stale "14 days left" after the "3 days left".
    for days in due[1:]:
        skipped = mail.claim(hub, mail.Kind.EXPIRY_WARNING, f"{hub.end_date}:{days}")
        if skipped is not None:
            skipped.status = skipped.Status.SKIPPED
            skipped.detail = f"Superseded by the {due[0]}-day warning."
            skipped.save(update_fields=["status", "detail"])


def _suspend(hub: Hub, result: Pass) -> None:
    with transaction.atomic():
        if hub.state == HubState.RUNNING:
            # Warnings were missed (beat down, a short period): still pass through expiring.
            expire(hub, f"Ended on {hub.end_date.isoformat()}")
        suspend(hub, f"Usage period ended on {hub.end_date.isoformat()}")
    result.suspended.append(hub.pk)


def _delete(hub: Hub, now: datetime.datetime, result: Pass) -> None:
    kept_until = hub.data_kept_until()
    if kept_until is None or now < kept_until:
        return
    delete_expired(hub, f"Grace period ended on {timezone.localdate(kept_until)}")
    result.deleted.append(hub.pk)


# --- The moves of expiry ------------------------------------------------------------------------
# Called by the pass above, and (resume, delete_now: admins) by the web views and the API.


def expire(hub: Hub, reason: str) -> Hub:
    """running -> expiring: the hub is inside its first warning window."""
    transition(hub.pk, HubState.RUNNING, HubState.EXPIRING, None, reason)
    hub.refresh_from_db()
    return hub


def unexpire(hub: Hub, reason: str) -> Hub:
    """expiring -> running: the end date moved out of the warning window (an extension)."""
    transition(hub.pk, HubState.EXPIRING, HubState.RUNNING, None, reason)
    hub.refresh_from_db()
    return hub


def suspend(hub: Hub, reason: str, actor: User | None = None) -> Hub:
    """expiring -> suspended and queue provisioning, which scales the hub to zero (volumes kept)."""
    transition(hub.pk, HubState.EXPIRING, HubState.SUSPENDED, actor, reason)
    queue.after_commit(queue.PROVISION, hub.pk)
    hub.refresh_from_db()
    return hub


def resume(hub: Hub, actor: User, reason: str = "") -> Hub:
    """suspended -> provisioning and queue provisioning, which scales the hub back up (admins)."""
    check_resumable(hub)
    transition(hub.pk, HubState.SUSPENDED, HubState.PROVISIONING, actor, reason or "Resumed")
    queue.after_commit(queue.PROVISION, hub.pk)
    hub.refresh_from_db()
    return hub


def delete_now(hub: Hub, actor: User, reason: str = "") -> Hub:
    """suspended -> deprovisioning before the grace period ends (admins)."""
    reason = reason or "Deleted by an admin before the end of the grace period"
    transition(hub.pk, HubState.SUSPENDED, HubState.DEPROVISIONING, actor, reason)
    queue.after_commit(queue.DEPROVISION, hub.pk)
    hub.refresh_from_db()
    return hub


def delete_expired(hub: Hub, reason: str) -> Hub:
    """suspended -> deprovisioning once the grace period is over (the expiry pass)."""
    transition(hub.pk, HubState.SUSPENDED, HubState.DEPROVISIONING, None, reason)
    queue.after_commit(queue.DEPROVISION, hub.pk)
    hub.refresh_from_db()
    return hub
