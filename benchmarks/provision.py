"""Time provisioning at scale on the local control plane: N hubs approved at once until all
run, with 50 API clients reading the hub list, against the same objects applied with
`kubectl apply --server-side`.

    make bench-provision
    .venv/bin/python benchmarks/provision.py --hubs 100 --readers 50 --workers 2

Seeds a throwaway database (created and dropped here) with N pending hubs; starts what `make
up` starts for the work (a Celery worker with --concurrency WORKERS and the hub watcher) and
gunicorn as the image runs it (2 workers) for the readers; adds simulated nodes so that both
runs fit (removed afterwards); approves every hub in one go and waits until the database says
all run. The reference applies every hub's rendered objects (new namespaces) with one
`kubectl apply --server-side` of the cluster's own kubectl, then waits until every Deployment
is available. Prints both times, their ratio, and the readers' p50, p95, requests/s and 5xx.

Needs PostgreSQL and Redis (DATABASE_URL and REDIS_URL, as `make bench-provision` sets
them) and the local control plane (started here when none runs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("KUBECONFIG", str(REPO_ROOT / ".devcluster" / "kubeconfig"))
# A Redis database of its own: the benchmark's tasks never mix with another portal's.
os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ["CELERY_BROKER_URL"] = os.environ["REDIS_URL"]

import requests  # noqa: E402
import yaml  # noqa: E402
from django.db import connection  # noqa: E402

from benchmarks.api import free_port, start_gunicorn  # noqa: E402 (sets Django up)
from benchmarks.latency import percentiles  # noqa: E402

BENCH_NODES = 4  # 32 CPU, 128 GiB, 110 pods each: 2 x 100 hubs of 2 pods fit beside the rest


def cluster_runs() -> bool:
    status = subprocess.run(
        ["bash", str(REPO_ROOT / "devcluster/scripts/status.sh")], capture_output=True, check=False
    )
    return status.returncode == 0


def kubectl_path() -> str:
    found = subprocess.run(
        ["bash", "-c", "source devcluster/scripts/common.sh && kubernetes_bin_dir"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(found.stdout.strip()) / "kubectl")


def bench_node(index: int) -> dict:
    size = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"kwok-bench-{index}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": f"kwok-bench-{index}"},
        },
        "spec": {},
        "status": {"allocatable": size, "capacity": size},
    }


def seed(count: int):
    """N pending hubs of one owner, an admin to approve them and a read token."""
    import datetime

    from django.utils import timezone

    from portal.accounts import tokens
    from portal.hubs.lifecycle import HubState
    from tests.factories import HardwareOptionFactory, HubFactory, ImageFactory, UserFactory

    owner = UserFactory(username="bench-owner")
    admin = UserFactory(username="bench-admin", is_staff=True, is_superuser=True)
    small, image = HardwareOptionFactory(name="bench-small"), ImageFactory(name="bench-scipy")
    hubs = []
    for i in range(count):
        hub = HubFactory(
            slug=f"prov-{secrets.token_hex(2)}-{i:04d}",
            owner=owner,
            state=HubState.PENDING,
            expected_users=2,
        )
        hub.hardware_options.set([small])
        hub.images.set([image])
        hubs.append(hub)
    _, clear = tokens.issue(
        owner, name="bench", scope="read", expires_at=timezone.now() + datetime.timedelta(days=1)
    )
    return hubs, admin, clear


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)


class Readers:
    """`clients` threads reading the hub list until stopped; their latencies and 5xx."""

    def __init__(self, url: str, token: str, clients: int):
        self.url, self.headers, self.clients = url, {"Authorization": f"Token {token}"}, clients
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._read, daemon=True) for _ in range(clients)]

    def _read(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                status = session.get(self.url, headers=self.headers, timeout=60).status_code
            except requests.RequestException:
                status = 599
            with self.lock:
                self.latencies.append(time.perf_counter() - started)
                self.errors += status >= 500

    def __enter__(self):
        self.began = time.perf_counter()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.wall = time.perf_counter() - self.began

    def figures(self) -> str:
        p50, p95 = percentiles(self.latencies)
        return (
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, {len(self.latencies) / self.wall:.1f} req/s, "
            f"{len(self.latencies)} requests, {self.errors} 5xx"
        )


def wait_running(hubs, deadline: float) -> tuple[float, dict[str, int]]:
    from portal.hubs.lifecycle import HubState
    from portal.hubs.models import Hub

    ids = [hub.pk for hub in hubs]
    while time.monotonic() < deadline:
        states = dict.fromkeys(HubState.values, 0)
        for state in Hub.objects.filter(pk__in=ids).values_list("state", flat=True):
            states[state] += 1
        if states[HubState.RUNNING] == len(ids) or states[HubState.FAILED]:
            return time.monotonic(), states
        time.sleep(0.1)
    return time.monotonic(), states


def reference(api, specs, kubectl: str, workdir: Path, deadline: float) -> tuple[float, int]:
    """The same objects applied by kubectl in one server-side apply, until all available."""
    from portal.hubs.tasks import deployments_available
    from provisioning import k8s
    from provisioning.render import render_hub

    manifests = [m for spec in specs for m in render_hub(spec)]
    path = workdir / "reference.yaml"
    path.write_text(yaml.safe_dump_all(manifests))
    started = time.monotonic()
    applied = subprocess.run(
        [kubectl, "apply", "--server-side", "--field-manager", "bench-reference", "-f", str(path)],
        capture_output=True,
        text=True,
    )
    if applied.returncode != 0:
        raise SystemExit(f"kubectl apply failed: {applied.stderr[-2000:]}")
    namespaces = {spec.namespace for spec in specs}
    while time.monotonic() < deadline:
        items = k8s.list_objects(
            api, "Deployment", None, "app.kubernetes.io/managed-by=hub-on-demand", True
        )
        by_namespace: dict[str, list] = {}
        for item in items:
            if item["metadata"]["namespace"] in namespaces:
                by_namespace.setdefault(item["metadata"]["namespace"], []).append(item)
        if len(by_namespace) == len(namespaces) and all(
            deployments_available(found)[0] for found in by_namespace.values()
        ):
            return time.monotonic() - started, len(manifests)
        time.sleep(0.1)
    raise SystemExit("the reference's Deployments did not all become available in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=100)
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker concurrency")
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("bench-provision needs PostgreSQL: make bench-provision sets it")

    started_cluster = not cluster_runs()
    if started_cluster:
        subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/up.sh")], check=True)

    from portal.hubs.cluster import api_client
    from portal.hubs.hubspec import from_hub
    from portal.hubs.services import decisions
    from provisioning import k8s

    api = api_client()
    kubectl = kubectl_path()
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    workdir = REPO_ROOT / ".state" / "bench-provision"
    workdir.mkdir(parents=True, exist_ok=True)
    # A database name of its own: bench-api may run beside it.
    connection.settings_dict.setdefault("TEST", {})["NAME"] = f"bench_provision_{os.getpid()}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    processes: list[subprocess.Popen] = []
    specs = []
    hubs = []
    try:
        nodes = workdir / "nodes.yaml"
        nodes.write_text(yaml.safe_dump_all([bench_node(i) for i in range(BENCH_NODES)]))
        subprocess.run(
            [kubectl, "apply", "--server-side", "--field-manager", "bench", "-f", str(nodes)],
            check=True,
            capture_output=True,
        )
        hubs, admin, token = seed(args.hubs)
        name = connection.settings_dict["NAME"]
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://%2Fvar%2Frun%2Fpostgresql/{name}",
            "HUB_WATCH_LEASE": f"bench-watcher-{secrets.token_hex(3)}",
        }
        processes.append(
            start(
                [str(REPO_ROOT / ".venv/bin/celery"), "-A", "portal", "worker", "--queues",
                 "provisioning,celery", "--concurrency", str(args.workers), "--loglevel",
                 "WARNING", "--without-gossip", "--without-mingle"],
                env, workdir / "worker.log",
            )
        )  # fmt: skip
        processes.append(
            start([sys.executable, "manage.py", "watch_hubs"], env, workdir / "watcher.log")
        )
        port = free_port()
        processes.append(start_gunicorn(port, 2, env["DATABASE_URL"]))
        time.sleep(3)  # the worker connects to the broker

        deadline = time.monotonic() + args.timeout
        url = f"http://127.0.0.1:{port}/api/v1/hubs/"
        with Readers(url, token, args.readers) as readers:
            began = time.monotonic()
            for hub in hubs:
                decisions.approve(hub, admin)
            approved = time.monotonic() - began
            finished, states = wait_running(hubs, deadline)
        portal_seconds = finished - began
        print(f"portal: {args.hubs} hubs approved in {approved:.1f} s, all running after "
              f"{portal_seconds:.1f} s (worker concurrency {args.workers}, the hub watcher); "
              f"states: { {k: v for k, v in states.items() if v} }")  # fmt: skip
        print(f"readers: {args.readers} clients on the hub list while provisioning: "
              f"{readers.figures()}")  # fmt: skip

        specs = [
            dataclasses.replace(from_hub(hub), slug=f"ref{hub.slug[4:]}", hub_id=10**8 + hub.pk)
            for hub in hubs
        ]
        kubectl_seconds, objects = reference(api, specs, kubectl, workdir, time.monotonic() + 600)
        print(
            f"reference: one kubectl apply --server-side of the same {args.hubs} hubs' "
            f"{objects} objects, all Deployments available after {kubectl_seconds:.1f} s"
        )
        print(f"ratio portal / kubectl: {portal_seconds / kubectl_seconds:.2f}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for namespace in {n for hub in hubs for n in (hub.namespace, hub.users_namespace)} | {
            n for spec in specs for n in spec.namespaces
        }:
            k8s.delete_namespace(api, namespace)
        names = [f"kwok-bench-{index}" for index in range(BENCH_NODES)]
        subprocess.run([kubectl, "delete", "node", "--ignore-not-found", *names], check=False)
        connection.creation.destroy_test_db(old_name, verbosity=0)
        if started_cluster:
            subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/down.sh")], check=False)


if __name__ == "__main__":
    main()
