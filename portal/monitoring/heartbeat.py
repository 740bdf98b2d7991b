"""Liveness of the processes that serve no HTTP: the Celery worker, beat and the hub watcher
touch a heartbeat file while their loop turns, and `manage.py healthcheck SERVICE` checks
that the file is fresh.

- The worker: a timer of its main loop (a worker bootstep) every HEALTH_HEARTBEAT_SECONDS; it
  stops when that loop is stuck. The file goes away when the worker stops.
- Beat: every scheduler tick; beat wakes at least every HEALTH_HEARTBEAT_SECONDS
  (CELERY_BEAT_MAX_LOOP_INTERVAL).
- The hub watcher: every pass of its loop, at most every HEALTH_HEARTBEAT_SECONDS.

Files live in HEALTH_HEARTBEAT_DIR as `<service>.heartbeat`; a missing file counts as dead.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog
from celery import bootsteps
from celery.beat import PersistentScheduler
from django.conf import settings

log = structlog.get_logger(__name__)

SERVICES = ("worker", "beat", "watcher")


def path(service: str) -> Path:
    """The heartbeat file of a service."""
    return Path(settings.HEALTH_HEARTBEAT_DIR) / f"{service}.heartbeat"


def beat(service: str) -> None:
    """Say that `service` is alive now; a file that cannot be written is logged, not raised."""
    target = path(service)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    except OSError as error:
        log.warning("heartbeat.unwritable", service=service, path=str(target), error=str(error))


def age(service: str) -> float | None:
    """Seconds since `service` last said it was alive; None when it never did (or stopped)."""
    try:
        return max(time.time() - path(service).stat().st_mtime, 0.0)
    except FileNotFoundError:
        return None


def stopped(service: str) -> None:
    """The service stops: no heartbeat any more."""
    path(service).unlink(missing_ok=True)


class Every:
    """Calls `beat(service)` when `tick()` is called, at most every `seconds`."""

    def __init__(self, service: str, seconds: float):
        self.service, self.seconds = service, seconds
        self._last = float("-inf")

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last >= self.seconds:
            self._last = now
            beat(self.service)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """A worker bootstep: a heartbeat from the worker's own timer (its main loop)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker) -> None:
        beat("worker")
        self.tref = worker.timer.call_repeatedly(
            settings.HEALTH_HEARTBEAT_SECONDS, beat, ("worker",), priority=10
        )

    def stop(self, worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
        stopped("worker")


class HeartbeatScheduler(PersistentScheduler):
    """Celery beat's default scheduler, with a heartbeat at every tick."""

    def tick(self, *args, **kwargs):
        beat("beat")
        return super().tick(*args, **kwargs)
