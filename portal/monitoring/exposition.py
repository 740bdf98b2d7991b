"""Metrics in the Prometheus text format, gathered across the processes of one service.

gunicorn (WEB_CONCURRENCY workers) and Celery's prefork pool run their work in several
processes. With PROMETHEUS_MULTIPROC_DIR set (before the process starts: prometheus-client
reads it at import), every process writes its counters and histograms to files there and the
process that answers a scrape adds them up. Without it, a scrape sees the answering process
alone. The process that starts the others empties the directory first (`reset`: gunicorn's
master, the worker's main process, the hub watcher) and marks each child that exits as dead
(`mark_dead`). Nothing here imports Django, so gunicorn.conf.py can use it in the master.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, disable_created_metrics, multiprocess
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# A `_created` series beside every counter and histogram doubles a scrape for no alert's sake.
disable_created_metrics()


def multiprocess_dir() -> Path | None:
    """Where this service's processes write their metrics, or None (each keeps its own)."""
    value = os.environ.get(MULTIPROCESS_VARIABLE, "").strip()
    return Path(value) if value else None


def _prepare() -> None:
    """Make sure the directory exists before any metric of this process writes to it."""
    path = multiprocess_dir()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)


# Before metrics.py (which imports this module) and django-prometheus create their metrics.
_prepare()


def reset() -> None:
    """Create the directory and remove the files that earlier processes left there.

    Called by the process that starts the others, before it starts them; its own files (if
    it already wrote any) stay."""
    path = multiprocess_dir()
    if path is None:
        return
    _prepare()
    own = f"_{os.getpid()}.db"
    for stale in path.glob("*.db"):
        if not stale.name.endswith(own):
            stale.unlink(missing_ok=True)


def mark_dead(pid: int) -> None:
    """A child process exited: its live gauges no longer count (its counters still do)."""
    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)


class _ThisProcess:
    """Everything this process registered, when there is no directory to gather from."""

    def collect(self):
        return REGISTRY.collect()


def registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry of the service's metrics (every process's with PROMETHEUS_MULTIPROC_DIR,
    this process's otherwise) and the `extra` collectors."""
    combined = CollectorRegistry()
    if multiprocess_dir() is not None:
        multiprocess.MultiProcessCollector(combined)
    else:
        combined.register(_ThisProcess())
    for collector in extra:
        combined.register(collector)
    return combined


def render(accept: str = "", extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The service's metrics as the scraper asked for them (the text format, or OpenMetrics
    when its Accept header says so), and the content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry(extra)), content_type


def serve(port: int, address: str) -> bool:
    """Serve the service's metrics over plain HTTP on `port` from a thread of this process
    (0: not at all). A port already taken is logged, and the process goes on without it."""
    if not port:
        return False
    try:
        start_http_server(port, addr=address, registry=registry())
    except OSError as error:
        log.error("metrics.port_unavailable", port=port, address=address, error=str(error))
        return False
    log.info("metrics.serving", port=port, address=address, multiprocess=bool(multiprocess_dir()))
    return True
