"""Receivers of Celery's and the lifecycle's signals: task metrics and the log context of each
task, the worker's metrics endpoint, and the provisioning duration of hubs that start running.

Connected in every process (MonitoringConfig.ready); the worker's endpoint starts only in a
worker's main process (`worker_init`), where the pool processes' metrics are gathered.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import structlog
from celery.signals import (
    task_postrun,
    task_prerun,
    task_revoked,
    worker_init,
    worker_process_shutdown,
)
from django.conf import settings
from django.db import transaction
from django.db.models import F

from portal.hubs import lifecycle
from portal.hubs.lifecycle import HubState
from portal.hubs.models import HubEvent
from portal.monitoring import exposition, metrics

log = structlog.get_logger(__name__)

# Per running task: when it started and the log context it replaced (a task run eagerly inside
# a request keeps the request's context afterwards).
_running: dict[str, tuple[float, Any]] = {}
_first_parameters: dict[str, str] = {}


def _first_parameter(task) -> str:
    """The name of a task's first argument (cached per task)."""
    if task.name not in _first_parameters:
        try:
            names = [name for name in inspect.signature(task.run).parameters if name != "self"]
        except (TypeError, ValueError):
            names = []
        _first_parameters[task.name] = names[0] if names else ""
    return _first_parameters[task.name]


def task_hub_id(task, args: tuple | list | None, kwargs: dict | None) -> int | None:
    """The hub a task works on: its `hub_id` argument, when it has one."""
    if kwargs and "hub_id" in kwargs:
        return kwargs["hub_id"]
    if args and _first_parameter(task) == "hub_id":
        return args[0]
    return None


def task_started(task_id=None, task=None, args=None, kwargs=None, **_) -> None:
    """Every log line of the task carries its id, name and hub; its clock starts."""
    context = {"task_id": task_id, "task": task.name}
    hub_id = task_hub_id(task, args, kwargs)
    if hub_id is not None:
        context["hub_id"] = hub_id
    _running[task_id] = (time.monotonic(), structlog.contextvars.bind_contextvars(**context))


def task_finished(task_id=None, task=None, state=None, **_) -> None:
    """Count the run by outcome, record how long it took, and restore the log context."""
    started, tokens = _running.pop(task_id, (None, None))
    name = task.name if task is not None else "unknown"
    metrics.TASKS.labels(name, (state or "unknown").lower()).inc()
    if started is not None:
        metrics.TASK_DURATION.labels(name).observe(time.monotonic() - started)
    if tokens:
        structlog.contextvars.reset_contextvars(**tokens)


def task_dropped(sender=None, expired=False, **_) -> None:
    """Count a task the worker dropped before running it: `expired` (it waited in the queue
    past its `expires`, e.g. a server-policy check the next pass replaces) or `revoked`."""
    name = getattr(sender, "name", None) or "unknown"
    metrics.TASKS.labels(name, "expired" if expired else "revoked").inc()


def _is_prefork(pool) -> bool:
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    return "prefork" in str(name)


def worker_started(sender=None, **_) -> None:
    """In a worker's main process: serve the metrics of the worker and its pool processes on
    WORKER_METRICS_PORT."""
    exposition.reset()
    if exposition.multiprocess_dir() is None and _is_prefork(getattr(sender, "pool_cls", "")):
        log.warning(
            "metrics.pool_not_gathered",
            detail="tasks run in pool processes whose metrics this endpoint cannot see: set "
            f"{exposition.MULTIPROCESS_VARIABLE} to an empty directory for the worker",
        )
    exposition.serve(settings.WORKER_METRICS_PORT, settings.METRICS_LISTEN_ADDRESS)


def pool_process_exited(pid=None, **_) -> None:
    if pid:
        exposition.mark_dead(pid)


def provisioning_started_at(hub_id: int, running_at) -> Any:
    """When the provisioning that just ended began: the approval before it, or, for a hub
    that came back from suspended or failed, its move to provisioning (one query)."""
    last = list(
        HubEvent.objects.filter(
            hub_id=hub_id,
            to_state__in=(HubState.APPROVED, HubState.PROVISIONING),
            created__lte=running_at,
        )
        .exclude(from_state=F("to_state"))
        .order_by("-created", "-pk")
        .values("from_state", "to_state", "created")[:2]
    )
    if not last:
        return None
    start = last[0]
    if (
        start["to_state"] == HubState.PROVISIONING
        and start["from_state"] == HubState.APPROVED
        and len(last) > 1
        and last[1]["to_state"] == HubState.APPROVED
    ):
        start = last[1]
    return start["created"]


def hub_event_recorded(sender=None, event=None, **_) -> None:
    """A hub that was provisioning runs: observe how long it took, once the move commits."""
    if event is None or (event.from_state, event.to_state) != (
        HubState.PROVISIONING,
        HubState.RUNNING,
    ):
        return

    def observe() -> None:
        started = provisioning_started_at(event.hub_id, event.created)
        if started is not None:
            seconds = (event.created - started).total_seconds()
            metrics.PROVISIONING_DURATION.observe(max(seconds, 0.0))

    transaction.on_commit(observe)


def connect() -> None:
    """Connect the receivers (called from MonitoringConfig.ready)."""
    task_prerun.connect(task_started, dispatch_uid="monitoring.task_started", weak=False)
    task_postrun.connect(task_finished, dispatch_uid="monitoring.task_finished", weak=False)
    task_revoked.connect(task_dropped, dispatch_uid="monitoring.task_dropped", weak=False)
    worker_init.connect(worker_started, dispatch_uid="monitoring.worker_started", weak=False)
    worker_process_shutdown.connect(
        pool_process_exited, dispatch_uid="monitoring.pool_process_exited", weak=False
    )
    lifecycle.hub_event_recorded.connect(hub_event_recorded, dispatch_uid="monitoring.hub_event")
