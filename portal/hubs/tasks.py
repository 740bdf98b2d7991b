"""Celery tasks that provision, watch, repair and remove hubs, and the periodic hub passes.

Every task receives only a hub id and is idempotent: applying is "make these objects look like
this" (server-side apply), deleting an absent namespace is done, and a hub that moved on or
vanished is nothing to do. Tasks never sleep waiting for the cluster: they schedule a check
instead. The work on the cluster is `provisioning`'s (a library that knows nothing of Django);
these tasks read the database, call it, and report back through `lifecycle`. Queues are chosen
by CELERY_TASK_ROUTES in portal/settings.py.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta

import structlog
from celery import shared_task
from django.conf import settings
from django.db import connection
from django.utils import timezone

from portal.accounts import hub_clients
from portal.audit.log import record
from portal.hubs import classes, expiry, lifecycle, server_policy
from portal.hubs.cluster import api_client, hub_api_url, hub_servers, render_settings
from portal.hubs.hubspec import from_hub, hub_queryset
from portal.hubs.lifecycle import (
    ACCESS_STATES,
    MEMBERS_STATES,
    READINESS_STATES,
    RECONCILED_STATES,
    SYNCED_STATES,
    WATCHED_STATES,
    HubState,
    LifecycleError,
)
from portal.hubs.models import Hub, HubEvent, SelfServicePolicy
from portal.monitoring.metrics import RECONCILE_REPAIRS
from provisioning import hubapi, k8s
from provisioning.errors import ServiceError
from provisioning.hubconfig import members_values
from provisioning.reconcile import reconcile
from provisioning.render import (
    SECRET_NAME,
    HubSecrets,
    members_config_map,
    selector,
)
from provisioning.spec import HubSpec
from provisioning.sync import own_namespaces, sync_hub

log = structlog.get_logger(__name__)

# User server pods, as KubeSpawner labels them.
USER_SERVER_SELECTOR = "app.kubernetes.io/component=singleuser-server"
# Pods the Job controller made (it labels every one with its Job's name).
JOB_POD_SELECTOR = "batch.kubernetes.io/job-name"
# Transient failures (API server away, 5xx, 429) are retried with exponential backoff.
MAX_RETRIES = 8
# How often a provisioning or deleting hub is checked.
CHECK_INTERVAL_SECONDS = 3


def readiness_window() -> timedelta:
    """How long a hub may take to become ready or to go, whether tasks or the watcher check it
    (HUB_READY_TIMEOUT_SECONDS)."""
    return timedelta(seconds=settings.HUB_READY_TIMEOUT_SECONDS)


def readiness_window_text() -> str:
    """The readiness window as a failed hub's reason says it: "10 minutes", "45 s"."""
    seconds = settings.HUB_READY_TIMEOUT_SECONDS
    return f"{seconds // 60} minutes" if seconds % 60 == 0 else f"{seconds} s"


def max_checks() -> int:
    """How many checks fit in the readiness window; the last one fails the hub."""
    return max(1, math.ceil(settings.HUB_READY_TIMEOUT_SECONDS / CHECK_INTERVAL_SECONDS))


def stuck_watched() -> timedelta:
    """Hubs whose task was lost (a worker died, the broker restarted) are re-queued: approved
    ones after SWEEP_APPROVED_AFTER_SECONDS, watched ones once their checks would have ended."""
    return readiness_window() + timedelta(seconds=120)


def _backoff(retries: int) -> int:
    return min(2 ** (retries + 1), 120)


# Advisory lock namespace of "a worker works on this hub" (PostgreSQL).
HUB_LOCK_CLASS = 4711


@contextmanager
def hub_lock(hub_id: int):
    """Hold the hub for this worker; yields False when another worker holds it.

    A PostgreSQL session advisory lock, so that two workers never work on the same hub at once
    (a task delivered twice, a delete racing a provision). SQLite, the single-user quick
    start's database, has one writer anyway: there it always yields True.
    """
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [HUB_LOCK_CLASS, hub_id])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [HUB_LOCK_CLASS, hub_id])


def _hub(hub_id: int):
    """A hub with everything rendering reads."""
    return hub_queryset().filter(pk=hub_id).first()


def _hub_state(hub_id: int):
    """A hub's state and slug only: what the frequent checks need."""
    return Hub.objects.only("state", "slug").filter(pk=hub_id).first()


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def provision_hub(self, hub_id: int) -> str:
    """Make a hub's namespace match its record: apply its objects and prune what it no longer
    needs. Approved hubs start provisioning; provisioning and updating hubs then get a
    readiness check; suspended hubs are scaled to zero and their user servers stopped."""
    with hub_lock(hub_id) as mine:
        if not mine:
            return _busy(self, hub_id)
        return _provision(self, hub_id)


def _busy(task, hub_id: int) -> str:
    """Another worker works on this hub: try again shortly; the sweeper catches the rest."""
    log.info("hub.busy", hub_id=hub_id, task=task.name)
    if task.request.retries < task.max_retries:
        raise task.retry(countdown=2)
    return "busy"


def _provision(self, hub_id: int) -> str:
    hub = _hub(hub_id)
    if hub is None:
        log.info("provision.skip", hub_id=hub_id, why="no such hub")
        return "missing"
    if hub.state == HubState.APPROVED:
        # Another delivery of this task, or a delete, may have got there first.
        with suppress(LifecycleError):
            lifecycle.mark_provisioning(hub_id)
        hub = _hub(hub_id)
    if hub is None or hub.state not in SYNCED_STATES:
        log.info("provision.skip", hub_id=hub_id, state=getattr(hub, "state", None))
        return "skipped"

    try:
        api = api_client()
        spec, login_secret = _with_login_client(hub, from_hub(hub))
        result = sync_hub(api, spec, render_settings(), login_secret)
        if hub.state == HubState.SUSPENDED:
            stopped = stop_user_servers(api, hub.users_namespace)
            stopped += sum(stop_job_pods(api, name) for name in spec.jobs_namespaces)
    except ServiceError as error:
        if error.transient and self.request.retries < self.max_retries:
            log.warning("provision.retry", hub_id=hub_id, error=error.message)
            raise self.retry(countdown=_backoff(self.request.retries)) from error
        log.error("provision.failed", hub_id=hub_id, error=error.message)
        _fail(hub_id, hub.state, error.message)
        return "failed"
    log.info(
        "provision.applied",
        hub_id=hub_id,
        namespace=hub.namespace,
        objects=result.applied,
        pruned=list(result.pruned),
    )
    if result.moved:
        lifecycle.record_event(
            hub_id,
            hub.state,
            hub.state,
            reason=(
                f"Moved to the users' namespace {hub.users_namespace}, keeping their volumes: "
                + ", ".join(result.moved)
            ),
        )
    if hub.state == HubState.SUSPENDED:
        log.info("hub.suspended", hub_id=hub_id, servers_stopped=stopped)
        return "suspended"
    if not settings.HUB_STATUS_WATCH:  # else the hub watcher moves it to running
        check_hub_ready.apply_async((hub_id,), countdown=1)
    return "applied"


def _with_login_client(hub, spec: HubSpec, contact: bool = True) -> tuple[HubSpec, str]:
    """The spec with the hub's login client at the identity provider (registered now if it
    has none yet, unless not `contact`), and the client's secret."""
    login = hub_clients.ensure(hub, spec.login_callback_url, contact)
    if login is None:
        return spec, ""
    return dataclasses.replace(spec, login_client_id=login.client_id), login.client_secret


def stop_user_servers(api, namespace: str) -> int:
    """Delete the user server pods KubeSpawner made (their home volumes stay)."""
    pods = k8s.list_objects(api, "Pod", namespace, USER_SERVER_SELECTOR)
    return sum(k8s.delete(api, "Pod", pod["metadata"]["name"], namespace) for pod in pods)


def stop_job_pods(api, namespace: str) -> int:
    """Delete the pods of a jobs namespace's Jobs (its quota, at zero pods while the hub is
    suspended, keeps the Job controller from starting new ones)."""
    pods = k8s.list_objects(api, "Pod", namespace, JOB_POD_SELECTOR)
    return sum(k8s.delete(api, "Pod", pod["metadata"]["name"], namespace) for pod in pods)


def _fail(hub_id: int, expected_state: str, reason: str) -> None:
    try:
        lifecycle.mark_failed(hub_id, reason)
    except LifecycleError:
        log.info("hub.moved_on", hub_id=hub_id, expected=expected_state)


def deployments_available(deployments: list[dict]) -> tuple[bool, str]:
    """Whether every Deployment rolled out and is available; else what is missing."""
    if not deployments:
        return False, "no Deployments found"
    waiting = []
    for deployment in deployments:
        status = deployment.get("status", {})
        wanted = deployment.get("spec", {}).get("replicas", 1)
        current = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        if not current or status.get("availableReplicas", 0) < wanted:
            messages = [c.get("message", "") for c in status.get("conditions", [])]
            waiting.append(
                f"{deployment['metadata']['name']}: {'; '.join(m for m in messages if m)}"
            )
    return not waiting, " | ".join(waiting)


WAITING_FOR_ROOM = "Waiting for room in the cluster"


def waiting_for_room(pods: list[dict]) -> str:
    """What the scheduler says of the hub's pods it cannot place, or "" when it placed them
    all (e.g. "Waiting for room in the cluster: hub: 0/5 nodes are available: 5 Insufficient
    cpu.")."""
    reasons = []
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                component = (pod["metadata"].get("labels") or {}).get(
                    "app.kubernetes.io/component", pod["metadata"]["name"]
                )
                reasons.append(f"{component}: {condition.get('message', 'unschedulable')}")
    return f"{WAITING_FOR_ROOM}: " + "; ".join(sorted(set(reasons))) if reasons else ""


@shared_task(acks_late=True)
def check_hub_ready(hub_id: int, attempt: int = 0) -> str:
    """Move a provisioning or updating hub to running once its Deployments are available;
    while the scheduler finds no room for its pods, the hub says so (its state reason)."""
    hub = _hub_state(hub_id)
    if hub is None or hub.state not in READINESS_STATES:
        return "skipped"
    try:
        api = api_client()
        deployments = k8s.list_objects(api, "Deployment", hub.namespace, selector(hub.pk))
        ready, detail = deployments_available(deployments)
        waiting = (
            ""
            if ready
            else waiting_for_room(k8s.list_objects(api, "Pod", hub.namespace, selector(hub.pk)))
        )
    except k8s.ClusterError as error:
        if not error.transient:
            _fail(hub_id, hub.state, f"Cannot read the hub's status: {error.message}")
            return "failed"
        detail = error.message
    else:
        if ready:
            try:
                lifecycle.mark_running(hub_id)
            except LifecycleError:
                return "skipped"
            log.info("hub.running", hub_id=hub_id, checks=attempt + 1)
            return "running"
        lifecycle.note_waiting(hub_id, waiting)
        detail = waiting or detail
    if attempt + 1 >= max_checks():
        _fail(hub_id, hub.state, f"Not ready after {readiness_window_text()}: {detail}")
        return "failed"
    check_hub_ready.apply_async((hub_id, attempt + 1), countdown=CHECK_INTERVAL_SECONDS)
    return "waiting"


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def deprovision_hub(self, hub_id: int) -> str:
    """Delete a hub's namespaces (and with them every object in them), then watch them go."""
    with hub_lock(hub_id) as mine:
        if not mine:
            return _busy(self, hub_id)
        return _deprovision(self, hub_id)


def _deprovision(self, hub_id: int) -> str:
    hub = _hub(hub_id)
    if hub is None or hub.state != HubState.DEPROVISIONING:
        return "skipped"
    try:
        # The hub's own client, before its namespace; left for an IdP admin to remove when
        # the provider has not answered by the last try.
        hub_clients.remove(hub, last_try=self.request.retries >= self.max_retries)
        api = api_client()
        # Only the namespaces that are the hub's own: one of its name that is not (its
        # provisioning failed on it) has nothing of ours to delete.
        own = [found["metadata"]["name"] for found in own_namespaces(api, hub.slug, hub.pk)]
        if not own:
            log.warning("deprovision.foreign_namespace", hub_id=hub_id, namespace=hub.namespace)
            with suppress(LifecycleError):
                lifecycle.mark_deleted(hub_id)
            return "deleted"
        for name in own:
            k8s.delete_namespace(api, name)
    except ServiceError as error:
        if error.transient and self.request.retries < self.max_retries:
            raise self.retry(countdown=_backoff(self.request.retries)) from error
        _fail(hub_id, HubState.DEPROVISIONING, f"Cannot delete {hub.namespace}: {error.message}")
        return "failed"
    if not settings.HUB_STATUS_WATCH:  # else the hub watcher marks it deleted
        check_hub_deleted.apply_async((hub_id,), countdown=1)
    return "deleting"


@shared_task(acks_late=True)
def check_hub_deleted(hub_id: int, attempt: int = 0) -> str:
    """Mark a deprovisioning hub deleted once its namespaces are gone."""
    hub = _hub_state(hub_id)
    if hub is None or hub.state != HubState.DEPROVISIONING:
        return "skipped"
    try:
        api = api_client()
        # Only ours count: a foreign one of that name was never the hub's to delete.
        remaining = next(iter(own_namespaces(api, hub.slug, hub.pk)), None)
    except k8s.ClusterError as error:
        if not error.transient:
            _fail(hub_id, HubState.DEPROVISIONING, f"Cannot read {hub.namespace}: {error.message}")
            return "failed"
        remaining = {"status": {"phase": error.message}}
    if remaining is None:
        try:
            lifecycle.mark_deleted(hub_id)
        except LifecycleError:
            return "skipped"
        log.info("hub.deleted", hub_id=hub_id, namespace=hub.namespace)
        return "deleted"
    if attempt + 1 >= max_checks():
        phase = remaining.get("status", {}).get("phase", "unknown")
        _fail(
            hub_id,
            HubState.DEPROVISIONING,
            f"{hub.namespace} still {phase} after {readiness_window_text()}",
        )
        return "failed"
    check_hub_deleted.apply_async((hub_id, attempt + 1), countdown=CHECK_INTERVAL_SECONDS)
    return "waiting"


REQUEUED = "Re-queued"


@shared_task
def sweep_stuck_hubs() -> dict[str, int]:
    """Re-queue work that got lost (every step is idempotent, so this is safe).

    Approved hubs no task picked up (the broker was down) are queued again after
    SWEEP_APPROVED_AFTER_SECONDS. Hubs that stayed provisioning, updating or deprovisioning
    longer than their checks could take are re-queued up to SWEEP_MAX_REQUEUES times, each
    recorded as an event, and then fail with the reason; owners and admins can retry them.
    """
    now = timezone.now()
    counts = {"provision": 0, "deprovision": 0, "failed": 0}
    approved = Hub.objects.filter(
        state=HubState.APPROVED,
        state_changed__lt=now - timedelta(seconds=settings.SWEEP_APPROVED_AFTER_SECONDS),
    ).values_list("pk", flat=True)
    for hub_id in approved:
        provision_hub.apply_async((hub_id,))
        counts["provision"] += 1

    watched = Hub.objects.filter(
        state__in=WATCHED_STATES,
        state_changed__lt=now - stuck_watched(),
    )
    for hub in watched:
        requeues = list(
            HubEvent.objects.filter(
                hub=hub,
                from_state=hub.state,
                to_state=hub.state,
                reason__startswith=REQUEUED,
                created__gte=hub.state_changed,
            ).values_list("created", flat=True)
        )
        if requeues and max(requeues) > now - stuck_watched():
            continue  # the last re-queue still has time to finish
        minutes = int((now - hub.state_changed).total_seconds() // 60)
        if len(requeues) >= settings.SWEEP_MAX_REQUEUES:
            _fail(
                hub.pk,
                hub.state,
                f"Stuck {hub.get_state_display().lower()} for {minutes} minutes; "
                f"re-queued {len(requeues)} times without progress",
            )
            counts["failed"] += 1
            continue
        lifecycle.record_event(
            hub.pk, hub.state, hub.state, reason=f"{REQUEUED}: no progress for {minutes} minutes"
        )
        if hub.state == HubState.DEPROVISIONING:
            deprovision_hub.apply_async((hub.pk,))
            counts["deprovision"] += 1
        else:
            provision_hub.apply_async((hub.pk,))
            counts["provision"] += 1
    if any(counts.values()):
        log.warning("sweep.requeued", **counts)
    return counts


@shared_task
def reconcile_hubs() -> dict[str, int]:
    """Compare every live hub with the cluster and repair drift (Celery beat).

    Each repair is recorded as an event of its hub; a hub whose namespace disappeared fails
    with that reason (owners and admins can retry it).
    """
    registries = tuple(SelfServicePolicy.current().registries)
    hubs = {hub.pk: hub for hub in hub_queryset().filter(state__in=RECONCILED_STATES)}
    specs, login_secrets, unregistered = [], {}, {}
    for hub in hubs.values():
        spec = from_hub(hub, registries=registries)
        try:
            # A hub provisioned before it had a client of its own gets one here; once the
            # identity provider did not answer, the rest of the pass does not wait for it.
            contact = not any(transient for transient, _ in unregistered)
            spec, login_secrets[hub.pk] = _with_login_client(hub, spec, contact)
        except ServiceError as error:
            unregistered.setdefault((error.transient, error.message), []).append(hub.pk)
        specs.append(spec)
    for (_, error), hub_ids in unregistered.items():  # one line per reason, not per hub
        log.warning(
            "reconcile.login_client_failed", hub_ids=hub_ids[:20], hubs=len(hub_ids), error=error
        )
    result = reconcile(api_client(), specs, render_settings(), login_secrets)
    for hub_id, found in result.repaired.items():
        hub = hubs[hub_id]
        if found.namespace_missing:
            _fail(hub_id, hub.state, f"Namespace {hub.namespace} disappeared (or is not its own)")
            RECONCILE_REPAIRS.labels("namespace_missing").inc()
            continue
        for action, what in (
            ("reapplied", found.repaired),
            ("pruned", found.pruned),
            ("moved", found.moved),
        ):
            if what:
                RECONCILE_REPAIRS.labels(action).inc(len(what))
        changes = found.repaired + [f"{what} (no longer needed)" for what in found.pruned]
        if found.moved:
            changes.append(
                "moved to the users' namespace "
                f"{hub.users_namespace}, keeping their volumes: " + ", ".join(found.moved)
            )
        lifecycle.record_event(
            hub_id, hub.state, hub.state, reason="Repaired: " + "; ".join(changes)
        )
        log.warning("reconcile.repaired", hub_id=hub_id, changes=changes)
    if result.shared_repaired:  # the cluster-wide admission policies
        RECONCILE_REPAIRS.labels("reapplied").inc(len(result.shared_repaired))
        log.warning("reconcile.repaired_shared", changes=result.shared_repaired)
    summary = {"hubs": result.hubs, "repaired": len(result.repaired), "api_calls": result.api_calls}
    log.info("reconcile.pass", **summary)
    return summary


# How long a changed ConfigMap may take to reach the pods that mount it (kubelet sync period
# plus its cache TTL, one minute each by default).
MEMBERS_FILE_REFRESH_SECONDS = 150


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def apply_members(self, hub_id: int) -> str:
    """Apply a hub's members ConfigMap after a change of members or tiers: the hub reads it at
    the next login or spawn, nothing restarts, and the hub's state does not change."""
    hub = _hub(hub_id)
    if hub is None or hub.state not in MEMBERS_STATES:
        log.info("members.skip", hub_id=hub_id, state=getattr(hub, "state", None))
        return "skipped"
    try:
        k8s.apply(api_client(), members_config_map(from_hub(hub)))
    except k8s.ClusterError as error:
        if error.transient and self.request.retries < self.max_retries:
            log.warning("members.retry", hub_id=hub_id, error=error.message)
            raise self.retry(countdown=_backoff(self.request.retries)) from error
        # The reconcile pass applies it once the namespace is back; the hub is not failed
        # for a membership change.
        log.error("members.failed", hub_id=hub_id, error=error.message)
        return "failed"
    log.info("members.applied", hub_id=hub_id, namespace=hub.namespace)
    if hub.state in ACCESS_STATES:
        # Now, and again once the kubelet has surely refreshed the hub's copy of the file (a
        # removed member logging in again before that would still get in).
        end_removed_access.apply_async((hub_id,))
        end_removed_access.apply_async((hub_id,), countdown=MEMBERS_FILE_REFRESH_SECONDS)
    return "applied"


# A few quick retries: the second run, MEMBERS_FILE_REFRESH_SECONDS later, tries again anyway.
@shared_task(bind=True, acks_late=True, max_retries=3)
def end_removed_access(self, hub_id: int) -> str:
    """Delete, in the running hub, the users its members no longer include: their servers
    stop and their sessions end now rather than at the hub's next membership refresh."""
    hub = _hub(hub_id)
    if hub is None or hub.state not in ACCESS_STATES:
        return "skipped"
    spec = from_hub(hub)
    try:
        secret = k8s.get(api_client(), "Secret", SECRET_NAME, spec.namespace)
        if secret is None:
            return "skipped"
        removed = hubapi.end_removed_access(
            hub_api_url(spec),
            HubSecrets.from_secret(secret).portal_token,
            members_values(spec),
            verify=settings.HUB_API_CA_BUNDLE or True,
            connect_to=settings.HUB_API_CONNECT_TO,
        )
    except ServiceError as error:
        if error.transient and self.request.retries < self.max_retries:
            raise self.retry(countdown=_backoff(self.request.retries)) from error
        # The hub's own refresh ends their access within minutes anyway.
        log.warning("access.unreached", hub_id=hub_id, error=error.message)
        return "unreached"
    if removed:
        log.info("access.ended", hub_id=hub_id, users=removed)
        record("hub.access_ended", hub, actor=None, users=removed)
    return f"ended {len(removed)}"


@shared_task(acks_late=True)
def enforce_server_policies() -> int:
    """Queue a server-policy check of every hub with users; scheduled by Celery beat.

    A check still queued when the next pass comes is dropped by the worker (`expires`, counted
    as `expired` in hubondemand_celery_tasks_total): the next pass queued a newer one, so a
    worker that falls behind never faces more than one interval's checks."""
    hub_ids = list(Hub.objects.filter(state__in=ACCESS_STATES).values_list("pk", flat=True))
    for hub_id in hub_ids:
        enforce_server_policy.apply_async(
            (hub_id,), expires=settings.SERVER_POLICY_INTERVAL_SECONDS
        )
    return len(hub_ids)


# No retries: the next scheduled check, SERVER_POLICY_INTERVAL_SECONDS later, tries anyway.
@shared_task(acks_late=True)
def enforce_server_policy(hub_id: int) -> str:
    """Warn the users of the hub's servers that near a limit and stop those past it."""
    hub = _hub(hub_id)
    if hub is None or hub.state not in ACCESS_STATES:
        return "skipped"
    try:
        servers = hub_servers(from_hub(hub))
        if servers is None:
            return "skipped"
        return str(server_policy.enforce(hub, servers))
    except ServiceError as error:
        log.warning("server_policy.unreached", hub_id=hub_id, error=error.message)
        return "unreached"


@shared_task(acks_late=True)
def run_expiry() -> dict[str, list[int]]:
    """One expiry pass (warn, expire, suspend, delete); scheduled hourly by Celery beat.

    Safe to run twice or concurrently: warnings are claimed once in the database and every
    transition is conditional, so a duplicate delivery does nothing new.
    """
    return expiry.run(timezone.now()).as_dict()


# Hubs whose namespaces exist and may hold placeholders (a suspended hub's go).
WARM_CHECKED_STATES = (
    HubState.RUNNING,
    HubState.UPDATING,
    HubState.EXPIRING,
    HubState.SUSPENDED,
)


@shared_task
def keep_classes_warm(now: str | None = None) -> dict[str, list[int]]:
    """Hold room ahead of every class session and free it afterwards: each hub with class
    sessions gets the placeholders its spec says now (`now`: an ISO time, for tests)."""
    from portal.hubs.models import ClassSession
    from provisioning.placeholders import keep_room

    moment = datetime.fromisoformat(now) if now else timezone.now()
    with_sessions = ClassSession.objects.values("hub_id")
    hubs = hub_queryset().filter(state__in=WARM_CHECKED_STATES, pk__in=with_sessions)
    # Only hubs with room held within the hour around now: that makes it and frees it after
    # the session. Reconcile renders the same spec, so placeholders a missed pass left behind
    # go with its next pass.
    window = timedelta(hours=1)
    done: dict[str, list[int]] = {"warm": [], "cold": [], "failed": []}
    settings_ = render_settings(preview=True)  # placeholders need no login endpoints
    with api_client() as api:
        for hub in hubs:
            held = classes.occurrences(
                hub.class_sessions.all(), hub, moment - window, moment + window
            )
            if next(held, None) is None:
                continue
            spec = from_hub(hub, now=moment)
            try:
                room = keep_room(api, spec, settings_)
            except ServiceError as error:
                log.warning("warm_class_failed", hub_id=hub.pk, error=str(error))
                done["failed"].append(hub.pk)
                continue
            done["warm" if room.servers or room.gpu_servers else "cold"].append(hub.pk)
    return done
