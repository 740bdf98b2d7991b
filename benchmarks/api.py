"""Time the REST API as the Docker image serves it: the hub list, a hub detail and a write.

    make bench-api
    .venv/bin/python benchmarks/api.py --hubs 100 --requests 500 --workers 2

Seeds a throwaway database (created and dropped here, like the test runner's) with N hubs of
one owner, each with members, events and a revision, and an API token; starts gunicorn as the
image's CMD does (WEB_CONCURRENCY workers, here --workers); then, for each endpoint, prints
p50, p95, requests/s and the count of 5xx answers at 1 client and at 50 concurrent clients.
The write is a hub request (POST /api/v1/hubs/, each with a new slug). It also prints the
list's server time and query count measured in-process (Django's test client, no network).

Needs PostgreSQL (DATABASE_URL, as `make bench-api` sets it) and Redis (hub requests are
handed to it); the cluster is not used.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only")
# Writes are limited per user; the benchmark measures the server, not the limit.
os.environ.setdefault("API_WRITE_RATE", "100000/min")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from benchmarks.latency import percentiles  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(count: int) -> tuple[str, int]:
    """N hubs of one owner (with members, events, a revision) and a write token; the token
    and one hub's id."""
    import datetime

    from django.utils import timezone

    from portal.accounts import tokens
    from portal.hubs import lifecycle
    from portal.hubs.lifecycle import HubState
    from portal.hubs.models import Member
    from tests.factories import HardwareOptionFactory, HubFactory, ImageFactory, UserFactory

    owner = UserFactory(username="bench-owner")
    members = [UserFactory(username=f"bench-member-{i}") for i in range(3)]
    small, image = HardwareOptionFactory(name="bench-small"), ImageFactory(name="bench-scipy")
    first = None
    for i in range(count):
        hub = HubFactory(slug=f"bench-{i:04d}", owner=owner, state=HubState.RUNNING)
        hub.hardware_options.set([small])
        hub.images.set([image])
        for member in members:
            Member.objects.create(hub=hub, user=member)
        lifecycle.record_event(hub.pk, "", HubState.PENDING, owner, "Requested")
        lifecycle.record_event(hub.pk, HubState.PENDING, HubState.RUNNING, None, "Running")
        first = first or hub.pk
    _, clear = tokens.issue(
        owner, name="bench", scope="write", expires_at=timezone.now() + datetime.timedelta(days=1)
    )
    return clear, first


def start_gunicorn(port: int, workers: int, database: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "ALLOWED_HOSTS": "127.0.0.1",
        "WEB_CONCURRENCY": str(workers),
    }
    process = subprocess.Popen(
        [
            str(REPO_ROOT / ".venv/bin/gunicorn"),
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--worker-tmp-dir",
            "/dev/shm",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            if requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=2).ok:
                return process
        except requests.RequestException:  # not listening yet, or still starting
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("gunicorn did not start")


def measure(call, clients: int, total: int) -> dict[str, float]:
    """Run `call(session)` `total` times from `clients` threads; latencies and 5xx."""
    local = threading.local()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def one(_):
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        status = call(session)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            if status >= 500:
                errors[0] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(total)))
    wall = time.perf_counter() - started
    p50, p95 = percentiles(latencies)
    return {
        "p50": p50,
        "p95": p95,
        "rps": total / wall,
        "5xx": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=100)
    parser.add_argument("--requests", type=int, default=500, help="per endpoint and concurrency")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args()

    if connection.vendor != "postgresql":
        raise SystemExit("bench-api needs PostgreSQL: set DATABASE_URL (make bench-api does)")
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_api_{os.getpid()}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    process = None
    try:
        token, hub_id = seed(args.hubs)
        name = connection.settings_dict["NAME"]
        database = f"postgres://%2Fvar%2Frun%2Fpostgresql/{name}"
        headers = {"Authorization": f"Token {token}"}

        # Server time of the list, in-process.
        client = Client(HTTP_HOST="127.0.0.1")
        client.get("/api/v1/hubs/", HTTP_AUTHORIZATION=headers["Authorization"])
        times = []
        for _ in range(30):
            started = time.perf_counter()
            with CaptureQueriesContext(connection) as queries:
                response = client.get("/api/v1/hubs/", HTTP_AUTHORIZATION=headers["Authorization"])
            times.append(time.perf_counter() - started)
        size = len(response.content)
        print(
            f"hub list in-process: {statistics.median(times) * 1000:.1f} ms median over 30, "
            f"{len(queries)} queries, {size / 1024:.0f} KiB for {response.json()['count']} hubs "
            f"(page of {len(response.json()['results'])})"
        )

        port = free_port()
        process = start_gunicorn(port, args.workers, database)
        base = f"http://127.0.0.1:{port}/api/v1"
        counter = iter(range(10**9))
        lock = threading.Lock()

        def write(session):
            with lock:
                n = next(counter)
            body = {
                "display_name": f"Bench {n}",
                "slug": f"w{n:06d}-{os.getpid() % 1000}",
                "kind": "course",
                "start_date": "2027-01-10",
                "end_date": "2027-02-10",
                "expected_users": 10,
                "hardware_options": ["bench-small"],
                "images": ["bench-scipy"],
            }
            return session.post(f"{base}/hubs/", json=body, headers=headers, timeout=60).status_code

        endpoints = {
            "list": lambda s: s.get(f"{base}/hubs/", headers=headers, timeout=60).status_code,
            "detail": lambda s: s.get(
                f"{base}/hubs/{hub_id}/", headers=headers, timeout=60
            ).status_code,
            "write": write,
        }
        print(
            f"\ngunicorn, {args.workers} workers, {args.hubs} hubs, {args.requests} requests each"
        )
        print(f"{'endpoint':<8} {'clients':>7} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'5xx':>5}")
        for label, call in endpoints.items():
            for clients in (1, 50):
                result = measure(call, clients, args.requests)
                print(
                    f"{label:<8} {clients:>7} {result['p50']:>8.1f} {result['p95']:>8.1f}"
                    f" {result['rps']:>8.1f} {result['5xx']:>5}"
                )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
