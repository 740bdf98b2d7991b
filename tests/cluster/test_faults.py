"""Fault injection with real processes: a Celery worker killed mid-task, Redis down while
people submit and approve, kube-apiserver stopped during provisioning (and under the hub
watcher's feet). Each test ends with
the hub in the state it should be in and no duplicate objects.

These tests stop shared services, so `make test` runs them on their own, after the rest
(marker `faults`). They use a Redis server of their own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes import client

from portal.hubs import tasks
from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from provisioning import k8s
from tests.support import eventually, free_port, http_server

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

REPO_ROOT = Path(__file__).resolve().parents[2]


class RedisServer:
    """A redis-server of this test's own, which the test may stop and start again."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        eventually(lambda: _answers(redis.Redis.from_url(self.url)), timeout=10, interval=0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _answers(server) -> bool:
    try:
        return server.ping()
    except Exception:
        return False


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def broker_url(redis_server) -> str:
    """Tasks of these tests go through their own Redis server."""
    return redis_server.url


def state_of(hub_id: int) -> str:
    return Hub.objects.values_list("state", flat=True).get(pk=hub_id)


def running(hub_id: int) -> bool:
    state = state_of(hub_id)
    assert state != HubState.FAILED, Hub.objects.get(pk=hub_id).state_reason
    return state == HubState.RUNNING


def request_hub(api, owner, payload, slug: str, **changes) -> int:
    api.force_authenticate(owner)
    response = api.post("/api/v1/hubs/", payload(slug=slug, **changes), format="json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def assert_one_of_each(kube_api, namespace: str) -> None:
    apps = client.AppsV1Api(kube_api)
    assert sorted(d.metadata.name for d in apps.list_namespaced_deployment(namespace).items) == [
        "hub",
        "proxy",
    ]
    # One ReplicaSet per Deployment: nothing was rolled out twice.
    assert len(apps.list_namespaced_replica_set(namespace).items) == 2


@contextmanager
def identity_provider_that_holds_registration() -> Iterator[tuple[dict, threading.Event]]:
    """A stand-in issuer whose client registration, the first thing provisioning does with a
    hub, holds the first request until released: a hook the task reaches mid-way (the hub is
    provisioning, nothing is applied yet). Yields the worker settings pointing at it, and the
    event set once a request is held."""
    held, release = threading.Event(), threading.Event()

    def answer(method: str, path: str):
        if method == "POST" and path == "/register" and not held.is_set():
            held.set()
            release.wait(120)
            return 503, None
        if method == "POST" and path == "/register":
            return 201, {
                "client_id": f"hub-{secrets.token_hex(4)}",
                "client_secret": secrets.token_hex(16),
            }
        return 404, None

    with http_server(answer) as (base, _):
        try:
            yield (
                {
                    "OIDC_ISSUER": base,
                    "OIDC_CLIENT_ID": "portal",
                    "OIDC_CLIENT_SECRET": secrets.token_hex(16),
                    "OIDC_AUTHORIZE_URL": base + "/authorize",
                    "OIDC_TOKEN_URL": base + "/token",
                    "OIDC_USERINFO_URL": base + "/userinfo",
                    "OIDC_REGISTRATION_URL": base + "/register",
                    "OIDC_HUB_REGISTRATION_TOKEN": "initial-access-token",
                },
                held,
            )
        finally:
            release.set()


def test_a_worker_killed_while_provisioning_is_replaced_and_the_hub_runs(
    api, alice, charlie, payload, kube_api, workers
):
    workers.start_watcher()
    slug = f"kill-{os.getpid() % 10000}-{int(time.time()) % 100000}"
    with identity_provider_that_holds_registration() as (idp, held):
        first = workers.start(**idp)
        hub_id = request_hub(api, alice, payload, slug, gpu_type="a100", gpus_per_user=1)
        api.force_authenticate(charlie)
        assert api.post(f"/api/v1/hubs/{hub_id}/approve/", {}, format="json").status_code == 200

        # The kill lands mid-task: the worker is inside the task, waiting for the provider.
        assert held.wait(60), workers.log()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert state_of(hub_id) == HubState.PROVISIONING
        assert k8s.get(kube_api, "Namespace", f"hub-{slug}") is None  # nothing applied yet

        # The task the killed worker held was never acknowledged: the broker hands it out
        # again once its visibility timeout (shortened here from 600 s) has passed.
        workers.start(CELERY_VISIBILITY_TIMEOUT="2", **idp)
        eventually(lambda: running(hub_id), timeout=120)
    assert_one_of_each(kube_api, f"hub-{slug}")


def test_requests_made_while_redis_is_down_are_provisioned_once_it_is_back(
    api, alice, charlie, payload, kube_api, workers, redis_server, settings
):
    workers.start_watcher()
    workers.start()
    redis_server.stop()

    inside = request_hub(api, alice, payload, f"nored-a-{int(time.time()) % 100000}")
    beyond = request_hub(
        api, alice, payload, f"nored-b-{int(time.time()) % 100000}", gpu_type="h100",
        gpus_per_user=1,
    )  # fmt: skip
    api.force_authenticate(charlie)
    approved = api.post(f"/api/v1/hubs/{beyond}/approve/", {}, format="json")
    assert approved.status_code == 200
    # Saved, and shown as approved (queued), though no task could be sent.
    assert approved.json()["state"] == HubState.APPROVED
    assert state_of(inside) == HubState.APPROVED

    redis_server.start()
    settings.SWEEP_APPROVED_AFTER_SECONDS = 0
    assert tasks.sweep_stuck_hubs()["provision"] == 2

    eventually(lambda: running(inside) and running(beyond), timeout=120)
    for hub_id in (inside, beyond):
        assert_one_of_each(kube_api, Hub.objects.get(pk=hub_id).namespace)


def test_provisioning_retries_while_the_api_server_is_down_and_converges(
    api, alice, payload, kube_api, kubeconfig_path, workers
):
    pid_file = kubeconfig_path.parent / "pids" / "kube-apiserver.pid"
    if not pid_file.exists():
        pytest.skip("needs the local control plane (it stops and restarts its kube-apiserver)")
    # The watcher runs through the API server's restart: its watches fail, it relists.
    watcher = workers.start_watcher()
    worker = workers.start()
    apiserver = int(pid_file.read_text())
    # Killed, not asked to stop: a graceful shutdown drains for a long while.
    os.kill(apiserver, signal.SIGKILL)
    eventually(lambda: not _alive(apiserver), timeout=30)
    try:
        hub_id = request_hub(api, alice, payload, f"noapi-{int(time.time()) % 100000}")
        eventually(lambda: "provision.retry" in workers.log(), timeout=60)
        assert state_of(hub_id) == HubState.PROVISIONING
    finally:
        restarted = subprocess.run(
            ["bash", str(REPO_ROOT / "devcluster/scripts/up.sh")], capture_output=True, text=True
        )
        assert restarted.returncode == 0, restarted.stderr
    eventually(lambda: running(hub_id), timeout=180)
    assert worker.poll() is None and watcher.poll() is None
    assert "watch.relist" in workers.watcher_log()
    assert_one_of_each(kube_api, Hub.objects.get(pk=hub_id).namespace)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
