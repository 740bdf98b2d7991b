"""Fixtures for tests that run the portal's background work for real: a Celery worker process
on its own Redis database, writing to this test's PostgreSQL database."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[2]


def redis_url_for_this_worker() -> str:
    """A Redis database of its own per pytest-xdist worker, so queues never mix.

    TEST_REDIS_DB_BASE moves the block, so two test runs on one Redis do not share queues."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1")
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    first = int(os.environ.get("TEST_REDIS_DB_BASE", "10"))
    return f"{base}/{first + int(worker.removeprefix('gw')) + 1}"


def database_url() -> str:
    """The URL of this test's database (pytest-django's test database), for the worker."""
    db = connection.settings_dict
    credentials = ""
    if db["USER"]:
        credentials = quote(db["USER"], safe="")
        if db["PASSWORD"]:
            credentials += ":" + quote(db["PASSWORD"], safe="")
        credentials += "@"
    host = quote(db["HOST"] or "", safe="")
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{credentials}{host}{port}/{db['NAME']}"


def use_current_broker(app) -> None:
    """Make this process's Celery producer use the broker now configured.

    Celery keeps its producer pools on the app; forget them (as Celery does after a fork) so
    that they are looked up again for the current broker URL. Kombu keeps one pool per URL,
    so they must not be closed: a later test with the same URL gets the same pool back.
    """
    app._pool = None
    app.amqp._producer_pool = None


class Workers:
    """Starts real `celery worker` processes for one test and stops them afterwards."""

    def __init__(self, broker: str, env: dict[str, str], logs: Path):
        self.broker = broker
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen] = []
        self.watchers: list[subprocess.Popen] = []
        self.lease = f"hub-watcher-test-{secrets.token_hex(4)}"

    def start(self, **extra_env: str) -> subprocess.Popen:
        """Start a worker on the provisioning queue; `extra_env` adds settings."""
        log_path = self.logs / f"worker-{len(self.processes)}.log"
        with log_path.open("w") as log:
            worker = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "portal", "worker",
                    "--queues", "provisioning,celery", "--pool", "solo", "--loglevel", "INFO",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ],
                cwd=REPO_ROOT,
                env={**self.env, **extra_env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.processes.append(worker)
        return worker

    def start_watcher(self) -> subprocess.Popen:
        """Start the hub watcher (`manage.py watch_hubs`), which moves hubs to running and
        deleted; with a lease of this test's own, since other tests' watchers run too."""
        log_path = self.logs / f"watcher-{len(self.watchers)}.log"
        with log_path.open("w") as log:
            watcher = subprocess.Popen(
                [sys.executable, "manage.py", "watch_hubs"],
                cwd=REPO_ROOT,
                env={**self.env, "HUB_WATCH_LEASE": self.lease, "HUB_WATCH_RESYNC_SECONDS": "5"},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.watchers.append(watcher)
        return watcher

    def log(self, index: int = -1) -> str:
        return (self.logs / f"worker-{index % len(self.processes)}.log").read_text()

    def watcher_log(self, index: int = -1) -> str:
        return (self.logs / f"watcher-{index % len(self.watchers)}.log").read_text()

    def stop_all(self) -> None:
        for worker in [*self.processes, *self.watchers]:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in [*self.processes, *self.watchers]:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.fixture
def broker_url() -> str:
    """The broker this test's tasks go through (a Redis database per xdist worker)."""
    return redis_url_for_this_worker()


@pytest.fixture
def workers(kubeconfig_path, tmp_path, monkeypatch, broker_url):
    """Start real Celery workers that consume `broker_url` and write to this test's
    database; this process's tasks are sent to the same broker."""
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a shared database: set DATABASE_URL to PostgreSQL")
    import redis

    from portal.celery import app

    redis.Redis.from_url(broker_url).flushdb()
    # Celery reads CELERY_BROKER_URL from the environment before any setting.
    monkeypatch.setenv("CELERY_BROKER_URL", broker_url)
    use_current_broker(app)
    assert app.conf.broker_url == broker_url
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": broker_url,
        "KUBECONFIG": str(kubeconfig_path),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    started = Workers(broker_url, env, tmp_path)
    yield started
    started.stop_all()
    monkeypatch.delenv("CELERY_BROKER_URL")
    use_current_broker(app)
    for index in range(len(started.processes)):
        print(started.log(index)[-3000:])
    for index in range(len(started.watchers)):
        print(started.watcher_log(index)[-3000:])


@pytest.fixture
def celery_worker(workers):
    """One real Celery worker, and the hub watcher, for this test."""
    workers.start_watcher()
    return workers.start()
