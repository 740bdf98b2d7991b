"""The server policy: how long a hub's user servers may idle and run, per server option.

Admins set, per hardware option in the catalogue, an idle timeout and a maximum age for servers
without a GPU and shorter ones for servers with a GPU (an idle GPU is the costliest waste), the
longest idle timeout a hub's owner may choose, and how much longer a user may keep a server past
its maximum age, once. A hub's owner may choose one idle timeout and one maximum age for the
hub; each option's bounds cap them (`limits_for`).

No culler runs in the hub. The portal checks every running hub's servers through the hub's API
(`enforce`, every SERVER_POLICY_INTERVAL_SECONDS): it warns a server's user (on the hub's page
in the portal and, with SERVER_POLICY_MAIL, by e-mail) SERVER_POLICY_WARNING_MINUTES before
the stop, with the time left and a "keep running" link; then it stops the server and records
why (a `ServerRun` and an audit event the owner sees). "Keep running" (`keep_running`) posts
activity to the hub (the idle stop moves) and, near the maximum age, extends it once. The
policy lives in the portal's database, so a change applies at the next check, in running hubs,
without restarting anything.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from portal.audit.log import record
from portal.hubs.hubspec import from_hub
from portal.hubs.models import HardwareOption, Hub, ServerRun
from portal.notifications import mail
from portal.notifications.models import Notice
from provisioning.hubapi import HubServers, Server
from provisioning.hubconfig import server_profiles

log = structlog.get_logger(__name__)

Reason = ServerRun.StopReason


class PolicyError(Exception):
    """A "keep running" that cannot be done (the server stopped already, say)."""


@dataclass(frozen=True)
class Limits:
    """The limits of one of a hub's profiles (a server option, with or without a GPU)."""

    profile: str
    option: str
    display_name: str
    gpus: int
    idle_minutes: int
    max_age_hours: int
    extension_hours: int

    def describe(self) -> str:
        """E.g. "stops after 30 minutes idle and at most 8 hours after it started"."""
        extension = f" (once {self.extension_hours} h more)" if self.extension_hours else ""
        return (
            f"stops after {self.idle_minutes} minutes idle and at most "
            f"{self.max_age_hours} hours after it started{extension}"
        )


def option_limits(
    option: HardwareOption,
    *,
    gpu: bool,
    owner_idle_minutes: int | None = None,
    owner_max_age_hours: int | None = None,
) -> tuple[int, int]:
    """(idle minutes, maximum age in hours) of servers of `option`, with the owner's choices
    capped by the option's bounds: up to its maximum idle timeout without a GPU; with a GPU,
    and for the age, an owner may only shorten the catalogue's limit."""
    if gpu:
        idle_default = idle_bound = option.gpu_idle_timeout_minutes
        age_bound = option.gpu_max_age_hours
    else:
        idle_default = option.idle_timeout_minutes
        idle_bound = max(option.max_idle_timeout_minutes, idle_default)
        age_bound = option.max_age_hours
    idle = min(owner_idle_minutes, idle_bound) if owner_idle_minutes else idle_default
    age = min(owner_max_age_hours, age_bound) if owner_max_age_hours else age_bound
    return idle, age


def limits_for(hub: Hub) -> list[Limits]:
    """The limits of each of the hub's profiles, in the hub's profile order."""
    spec = from_hub(hub)
    options = {option.name: option for option in hub.hardware_options.all()}
    result = []
    for profile in server_profiles(spec):
        # A hub without options runs the default size: the catalogue's default limits.
        option = options.get(profile["option"]) or HardwareOption()
        gpus = spec.gpu.count if profile["gpu"] and spec.gpu else 0
        idle, age = option_limits(
            option,
            gpu=bool(gpus),
            owner_idle_minutes=hub.idle_timeout_minutes,
            owner_max_age_hours=hub.max_server_age_hours,
        )
        result.append(
            Limits(
                profile=profile["slug"],
                option=profile["option"],
                display_name=profile["display_name"],
                gpus=gpus,
                idle_minutes=idle,
                max_age_hours=age,
                extension_hours=option.age_extension_hours,
            )
        )
    return result


def _minute() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.SERVER_POLICY_MINUTE_SECONDS)


def _idle_after() -> datetime.timedelta:
    return settings.SERVER_POLICY_IDLE_AFTER_MINUTES * _minute()


@dataclass(frozen=True)
class Deadline:
    """When a run stops next, and why; `warn_from` is when its user is warned."""

    at: datetime.datetime
    reason: str
    warn_from: datetime.datetime
    limit: datetime.timedelta


def deadlines(run: ServerRun, limits: Limits) -> tuple[Deadline, Deadline]:
    """The run's idle and age deadlines as things stand."""
    minute = _minute()
    lead = settings.SERVER_POLICY_WARNING_MINUTES * minute
    idle_limit = limits.idle_minutes * minute
    age_limit = limits.max_age_hours * 60 * minute
    if run.extended:
        age_limit += limits.extension_hours * 60 * minute
    idle_at = run.last_activity + idle_limit
    age_at = run.started + age_limit
    return (
        Deadline(idle_at, Reason.IDLE, idle_at - min(lead, idle_limit / 2), idle_limit),
        Deadline(age_at, Reason.AGE, age_at - min(lead, age_limit / 2), age_limit),
    )


def next_stop(run: ServerRun, limits: Limits) -> Deadline:
    """The deadline that comes first."""
    return min(deadlines(run, limits), key=lambda deadline: deadline.at)


def idle_gpu_seconds(run: ServerRun) -> float:
    """GPU-seconds the run held while idle: stretches without activity, each counted from
    SERVER_POLICY_IDLE_AFTER_MINUTES after the last activity, up to when it was last seen."""
    end = run.stopped or run.observed
    current = (end - run.last_activity - _idle_after()).total_seconds()
    return run.idle_gpu_seconds + run.gpus * max(0.0, current)


@dataclass
class Outcome:
    """What one check of a hub did."""

    warned: list[str]
    stopped: list[str]
    kept: list[str]

    def __str__(self) -> str:
        return f"warned {len(self.warned)}, stopped {len(self.stopped)}"


def _label(server: Server | ServerRun) -> str:
    user = getattr(server, "user", None) or getattr(server, "username", "")
    name = getattr(server, "name", None) if isinstance(server, Server) else server.server_name
    return f"{user}/{name}" if name else user


def _observe(hub: Hub, server: Server, limits: Limits, now: datetime.datetime) -> ServerRun:
    """The server's run, updated with its last activity (closing an idle stretch if any)."""
    run, created = ServerRun.objects.get_or_create(
        hub=hub,
        username=server.user,
        server_name=server.name,
        started=server.started,
        defaults={
            "profile": limits.profile,
            "gpus": limits.gpus,
            "last_activity": max(server.last_activity, server.started),
            "observed": now,
        },
    )
    if created:
        return run
    if server.last_activity > run.last_activity:
        stretch = (run.observed - run.last_activity - _idle_after()).total_seconds()
        run.idle_gpu_seconds += int(run.gpus * max(0.0, stretch))
        run.last_activity = server.last_activity
    run.observed = now
    run.save(update_fields=["idle_gpu_seconds", "last_activity", "observed"])
    return run


def enforce(hub: Hub, servers: HubServers, now: datetime.datetime | None = None) -> Outcome:
    """One check of the hub's running servers: warn those close to a limit, stop those past
    it. Safe to run twice at once: a warning and a stop are each claimed by one conditional
    update, so neither happens twice."""
    now = now or timezone.now()
    all_limits = limits_for(hub)
    by_profile = {limits.profile: limits for limits in all_limits}
    outcome = Outcome([], [], [])
    for server in servers.running():
        # No profile in the server's options: the hub's first profile was used.
        limits = by_profile.get(server.profile) or all_limits[0]
        run = _observe(hub, server, limits, now)
        if run.stopped:  # stopped by an earlier check, but still up: stop it again
            servers.stop(server.user, server.name)
            continue
        idle, age = deadlines(run, limits)
        due = [deadline for deadline in (idle, age) if deadline.at <= now]
        if due:
            _stop(hub, servers, run, limits, due[0], age, now)
            outcome.stopped.append(_label(server))
            continue
        for deadline in (idle, age):
            if deadline.warn_from <= now and _claim_warning(run, deadline):
                _warn(hub, run, limits, deadline, now)
                outcome.warned.append(_label(server))
        outcome.kept.append(_label(server))
    if outcome.warned or outcome.stopped:
        log.info(
            "server_policy.checked", hub_id=hub.pk, warned=outcome.warned, stopped=outcome.stopped
        )
    return outcome


def _claim_warning(run: ServerRun, deadline: Deadline) -> bool:
    """Claim the warning for this idle stretch (or the age) of the run: True once."""
    runs = ServerRun.objects.filter(pk=run.pk)
    if deadline.reason == Reason.IDLE:
        claimed = runs.exclude(idle_warned_for=run.last_activity).update(
            idle_warned_for=run.last_activity
        )
    else:
        claimed = runs.filter(age_warned=False).update(age_warned=True)
    return claimed == 1


def _warn(
    hub: Hub, run: ServerRun, limits: Limits, deadline: Deadline, now: datetime.datetime
) -> None:
    record(
        "server.warned",
        hub,
        actor=None,
        user=run.username,
        server=run.server_name,
        reason=deadline.reason,
        stops_at=deadline.at.isoformat(),
    )
    if not settings.SERVER_POLICY_MAIL:
        return
    key = (
        f"run:{run.pk}:idle:{run.last_activity.isoformat()}"
        if deadline.reason == Reason.IDLE
        else f"run:{run.pk}:age"
    )
    notice = mail.claim(hub, Notice.Kind.SERVER_WARNING, key[:100])
    if notice is None:
        return
    user = get_user_model().objects.filter(username__iexact=run.username, is_active=True).first()
    minutes_left = max(1, round((deadline.at - now) / _minute()))
    mail.send(
        notice,
        {
            "server_label": f'"{run.server_name}"' if run.server_name else "",
            "minutes_left": minutes_left,
            "stops_at": timezone.localtime(deadline.at),
            "reason": deadline.reason,
            "option": limits.display_name,
            "limit_minutes": limits.idle_minutes,
            "limit_hours": limits.max_age_hours,
            "extension_hours": 0 if run.extended else limits.extension_hours,
            "keep_running_url": mail.portal_link(
                reverse("hubs:keep_running", args=[hub.pk, run.pk])
            ),
        },
        to=[user.email] if user and user.email else [],
    )


def _stop(
    hub: Hub,
    servers: HubServers,
    run: ServerRun,
    limits: Limits,
    deadline: Deadline,
    age: Deadline,
    now: datetime.datetime,
) -> None:
    # Stopped for idling, the GPUs would otherwise have stayed held until the maximum age.
    saved = 0.0
    if deadline.reason == Reason.IDLE:
        saved = run.gpus * max(0.0, (age.at - now).total_seconds()) / 3600
    claimed = ServerRun.objects.filter(pk=run.pk, stopped__isnull=True).update(
        stopped=now, stop_reason=deadline.reason, gpu_hours_saved=saved
    )
    if claimed != 1:
        return
    record(
        "server.stopped",
        hub,
        actor=None,
        user=run.username,
        server=run.server_name,
        reason=deadline.reason,
        option=limits.option,
        gpus=run.gpus,
        gpu_hours_saved=round(saved, 3),
    )
    servers.stop(run.username, run.server_name)


def keep_running(
    run: ServerRun, servers: HubServers, now: datetime.datetime | None = None
) -> Deadline:
    """The user's "keep running": counts as activity now (the idle stop moves) and, once the
    age warning went out, extends the maximum age once by the option's extension. Returns
    the new next stop."""
    now = now or timezone.now()
    if run.stopped:
        raise PolicyError("This server was stopped already; start it again from the hub.")
    limits = {limits.profile: limits for limits in limits_for(run.hub)}.get(run.profile)
    if limits is None:
        raise PolicyError("The hub no longer offers this server's option.")
    servers.record_activity(run.username, run.server_name, now)
    extend = run.age_warned and not run.extended and limits.extension_hours > 0
    ServerRun.objects.filter(pk=run.pk, last_activity__lt=now).update(last_activity=now)
    if extend:
        ServerRun.objects.filter(pk=run.pk).update(extended=True)
    run.refresh_from_db()
    record(
        "server.kept_running",
        run.hub,
        user=run.username,
        server=run.server_name,
        extended=extend,
    )
    return next_stop(run, limits)


def unseen_stops(user) -> list[ServerRun]:
    """The user's servers the policy stopped that they were not told about yet; marks them
    told (the caller shows them)."""
    runs = list(
        ServerRun.objects.select_related("hub")
        .filter(username__iexact=user.get_username(), stopped__isnull=False, stop_seen=False)
        .order_by("stopped")
    )
    ServerRun.objects.filter(pk__in=[run.pk for run in runs]).update(stop_seen=True)
    return runs


def savings(hub: Hub, since: datetime.datetime) -> dict[str, float]:
    """What the policy did in the hub since `since`: servers stopped, GPU hours saved, and
    the GPU hours held while idle (by servers stopped or still running)."""
    runs = ServerRun.objects.filter(hub=hub, observed__gte=since)
    stopped = runs.filter(stopped__isnull=False)
    idle = sum(idle_gpu_seconds(run) for run in runs.filter(gpus__gt=0)) / 3600
    return {
        "stopped": stopped.count(),
        "stopped_idle": stopped.filter(stop_reason=Reason.IDLE).count(),
        "gpu_hours_saved": stopped.aggregate(total=Sum("gpu_hours_saved"))["total"] or 0.0,
        "idle_gpu_hours": idle,
    }
