"""Small helpers shared by tests that wait on real services."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest


def eventually(check: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    """Poll `check` until it returns something truthy and return that; fail after `timeout`.

    A deadline for a condition, not a timing assertion: speed is measured in benchmarks/.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s; last value: {last!r}")


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
