"""Small helpers shared by tests that wait on real services."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Ports handed out by free_port(), held until this test process exits.
_held_ports: list[socket.socket] = []


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port for a service a test starts, or one where nothing answers; held for the rest
    of this test process so that no other process on the machine is given it.

    Binding port 0 and closing the probe lets another xdist worker, or another clone's run,
    be given the same port before the service binds it. The probe is kept open instead, bound
    with SO_REUSEADDR and never listening: no other bind to port 0 gets that port, a service
    that binds it with SO_REUSEADDR (tornado, Node, asyncio, Go, redis-server and Python's
    http.server all do) still can, and while nothing listens a connection is refused.
    """
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind((host, 0))
    _held_ports.append(probe)
    return probe.getsockname()[1]


_ANY = object()


def eventually(
    check: Callable[[], Any], timeout: float = 60, interval: float = 0.25, *, equals: Any = _ANY
) -> Any:
    """Poll `check` until it returns something truthy (or, given `equals`, that value) and
    return that; fail after `timeout`, naming the last value `check` returned.

    A deadline for a condition, not a timing assertion: speed is measured in benchmarks/.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if (last == equals) if equals is not _ANY else last:
            return last
        time.sleep(interval)
    wanted = f" (wanted {equals!r})" if equals is not _ANY else ""
    pytest.fail(f"condition not met within {timeout}s; last value: {last!r}{wanted}")


def race(*attempts: Callable[[], Any], losing: tuple[type[BaseException], ...]) -> list[Any]:
    """Run the attempts at the same moment, each in its own thread and database connection.

    Returns, in the attempts' order, "won" for each that returned and the exception for each
    that raised one of `losing` (anything else fails the test when it is re-raised).
    """
    import threading

    from django.db import connection

    barrier = threading.Barrier(len(attempts))
    outcomes: list[Any] = [None] * len(attempts)
    errors: list[BaseException] = []

    def run(index: int, attempt: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            attempt()
            outcomes[index] = "won"
        except losing as lost:
            outcomes[index] = lost
        except BaseException as error:  # re-raised in the test's thread below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=item) for item in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return outcomes


def won_or_lost(outcomes: list[Any]) -> list[str]:
    """The outcomes of `race` as "won" and "lost", sorted."""
    return sorted("won" if outcome == "won" else "lost" for outcome in outcomes)


def _on_postgresql() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


# Races between transactions need a database that runs writers at once.
needs_postgresql = pytest.mark.skipif(
    not _on_postgresql(), reason="SQLite serialises writers; race needs PostgreSQL"
)


@contextmanager
def http_server(
    answer: Callable[[str, str], tuple[int, Any]],
) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A local HTTP server standing in for a service that misbehaves (an identity provider
    without registration, one answering 503). `answer(method, path)` gives the status and a
    JSON body (None: empty). Yields the server's base URL and the (method, path) it was asked."""
    asked: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            asked.append((self.command, self.path))
            status, body = answer(self.command, self.path)
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", asked
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def broker_hand_over(record):
    """Call `record(task name, args, the queue CELERY_TASK_ROUTES picks)` for every task that
    portal/hubs/queue.py hands to the broker, instead of sending it."""
    from portal.celery import app

    def send_task(name, args=(), **options):
        record(name, tuple(args), app.amqp.router.route(options, name)["queue"].name)

    with mock.patch.object(app, "send_task", side_effect=send_task):
        yield


def delete_namespaces(api, hub) -> None:
    """Ask for the deletion of every namespace of a hub (or spec): its own, its users' and the
    jobs namespaces of its users."""
    from provisioning import k8s
    from provisioning.sync import own_namespaces

    hub_id = getattr(hub, "hub_id", None) or hub.pk
    found = {item["metadata"]["name"] for item in own_namespaces(api, hub.slug, hub_id)}
    for name in {hub.namespace, hub.users_namespace} | found:
        k8s.delete_namespace(api, name)


def unschedulable(api, hub) -> None:
    """Give the hub's Deployment a node selector no node has, as when a cluster is full, and
    wait until the Deployment controller has replaced its pod with one nothing can place."""
    from kubernetes import client

    from portal.hubs import tasks
    from provisioning import k8s

    client.AppsV1Api(api).patch_namespaced_deployment(
        "hub",
        hub.namespace,
        {"spec": {"template": {"spec": {"nodeSelector": {"example.org/no-such-node": "x"}}}}},
    )

    # Its status may lag behind the pods.
    def replaced():
        deployment = k8s.get(api, "Deployment", "hub", hub.namespace)
        status = deployment.get("status", {})
        current = status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        pods = k8s.list_objects(api, "Pod", hub.namespace, "app.kubernetes.io/component=hub")
        return current and not status.get("availableReplicas") and tasks.waiting_for_room(pods)

    eventually(replaced, timeout=60)


HOLD_FINALIZER = "hub-on-demand.test/hold"


@contextmanager
def namespace_held(api, namespace: str) -> Iterator[None]:
    """A ConfigMap with a finalizer in `namespace`: a deleted namespace stays Terminating (its
    content cannot all go) until the block ends and the finalizer is removed."""
    from provisioning import k8s

    k8s.apply(
        api,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "held", "namespace": namespace, "finalizers": [HOLD_FINALIZER]},
        },
    )
    try:
        yield
    finally:
        k8s.merge_patch(api, "ConfigMap", "held", namespace, {"metadata": {"finalizers": None}})


def waited(hub, seconds: float) -> None:
    """Move the hub's last transition `seconds` into the past: it has waited that long."""
    from datetime import timedelta

    from django.db.models import F

    type(hub).objects.filter(pk=hub.pk).update(
        state_changed=F("state_changed") - timedelta(seconds=seconds)
    )


# --- Real background processes: Celery workers and hub watchers --------------------------------


def redis_url_for_this_worker() -> str:
    """A Redis database of its own per pytest-xdist worker, so queues never mix.

    TEST_REDIS_DB_BASE moves the block, so two test runs on one Redis do not share queues."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1")
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    first = int(os.environ.get("TEST_REDIS_DB_BASE", "10"))
    return f"{base}/{first + int(worker.removeprefix('gw')) + 1}"


def database_url() -> str:
    """The URL of this test's database (pytest-django's test database), for the worker."""
    from django.db import connection

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
    """Starts real `celery worker` processes (and hub watchers, Celery beat) for one test and
    stops them afterwards."""

    def __init__(self, broker: str, env: dict[str, str], logs: Path):
        self.broker = broker
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen] = []
        self.watchers: list[subprocess.Popen] = []
        self.beats: list[subprocess.Popen] = []
        self.lease = f"hub-watcher-test-{secrets.token_hex(4)}"

    def _spawn(self, log_name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start one process in the repository, its output going to `log_name` in the logs."""
        with (self.logs / log_name).open("w") as log:
            return subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def start(self, pool: str = "solo", **extra_env: str) -> subprocess.Popen:
        """Start a worker on both queues (the `solo` pool, or `prefork` with one pool
        process); `extra_env` adds settings."""
        worker = self._spawn(
            f"worker-{len(self.processes)}.log",
            [
                sys.executable, "-m", "celery", "-A", "portal", "worker",
                "--queues", "provisioning,celery", "--pool", pool, "--concurrency", "1",
                "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            {**self.env, **extra_env},
        )  # fmt: skip
        self.processes.append(worker)
        return worker

    def start_watcher(self) -> subprocess.Popen:
        """Start the hub watcher (`manage.py watch_hubs`), which moves hubs to running and
        deleted; with a lease of this test's own, since other tests' watchers run too."""
        watcher = self._spawn(
            f"watcher-{len(self.watchers)}.log",
            [sys.executable, "manage.py", "watch_hubs"],
            {**self.env, "HUB_WATCH_LEASE": self.lease, "HUB_WATCH_RESYNC_SECONDS": "5"},
        )
        self.watchers.append(watcher)
        return watcher

    def start_beat(self, **extra_env: str) -> subprocess.Popen:
        """Start Celery beat, with its schedule file in the test's folder."""
        beat = self._spawn(
            f"beat-{len(self.beats)}.log",
            [
                sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO",
                "--schedule", str(self.logs / f"celerybeat-schedule-{len(self.beats)}"),
            ],
            {**self.env, **extra_env},
        )  # fmt: skip
        self.beats.append(beat)
        return beat

    def log(self, index: int = -1) -> str:
        return (self.logs / f"worker-{index % len(self.processes)}.log").read_text()

    def watcher_log(self, index: int = -1) -> str:
        return (self.logs / f"watcher-{index % len(self.watchers)}.log").read_text()

    def stop_all(self) -> None:
        self.stop(*self.processes, *self.watchers, *self.beats)

    @staticmethod
    def stop(*processes: subprocess.Popen) -> None:
        """Stop these processes as their service manager would (SIGTERM), then wait."""
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
