"""The main flow end to end: the REST API, a real Celery worker process on Redis, PostgreSQL
and the local control plane. Submit beyond policy, approve, watch the namespace fill and the
hub reach running; delete, watch the namespace go and the hub reach deleted."""

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
from kubernetes import client
from kubernetes.client.rest import ApiException

from portal.hubs.lifecycle import State
from portal.hubs.models import Hub
from tests.support import eventually

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

REPO_ROOT = Path(__file__).resolve().parents[2]


def redis_url_for_this_worker() -> str:
    """A Redis database of its own per pytest-xdist worker, so queues never mix."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw-1")
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0]
    return f"{base}/{10 + int(worker.removeprefix('gw')) + 1}"


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


def drop_broker_connections(app) -> None:
    """Make this process's Celery producer connect anew, to the broker now configured.

    Celery caches broker connections in two pools; drop both (as Celery itself does after a
    fork).
    """
    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def celery_worker(kubeconfig_path, tmp_path, monkeypatch):
    """A real `celery worker` process consuming the provisioning queue of this test's broker
    database and writing to this test's database."""
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a shared database: set DATABASE_URL to PostgreSQL")
    import redis

    from portal.celery import app

    broker = redis_url_for_this_worker()
    redis.Redis.from_url(broker).flushdb()
    # Celery reads CELERY_BROKER_URL from the environment before any setting.
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    drop_broker_connections(app)
    assert app.conf.broker_url == broker
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": broker,
        "KUBECONFIG": str(kubeconfig_path),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "portal", "worker",
                "--queues", "provisioning,celery", "--pool", "solo", "--loglevel", "INFO",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield worker
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
    monkeypatch.delenv("CELERY_BROKER_URL")
    drop_broker_connections(app)
    print(log_path.read_text()[-4000:])


def state_of(hub_id: int) -> str:
    return Hub.objects.values_list("state", flat=True).get(pk=hub_id)


def test_request_approve_provision_run_and_delete_through_the_api(
    api, alice, charlie, payload, kube_api, celery_worker
):
    slug = f"e2e-{secrets.token_hex(3)}"
    api.force_authenticate(alice)
    created = api.post(
        "/api/v1/hubs/",
        payload(slug=slug, expected_users=5, gpu_type="a100", gpus_per_user=1),
        format="json",
    )
    assert created.status_code == 201, created.content
    hub_id = created.json()["id"]
    assert created.json()["state"] == State.PENDING  # GPUs are beyond the self-service policy

    api.force_authenticate(charlie)
    approved = api.post(f"/api/v1/hubs/{hub_id}/approve/", {}, format="json")
    assert approved.status_code == 200, approved.content

    def hub_state(*wanted):
        current = state_of(hub_id)
        assert current != State.FAILED, Hub.objects.get(pk=hub_id).state_reason
        return current in wanted

    eventually(lambda: hub_state(State.RUNNING), timeout=120)

    namespace = f"hub-{slug}"
    core = client.CoreV1Api(kube_api)
    labels = core.read_namespace(namespace).metadata.labels
    assert labels["hub-on-demand.io/hub-id"] == str(hub_id)
    assert labels["hub-on-demand.io/owner"] == "alice"
    quota = core.read_namespaced_resource_quota("hub-quota", namespace)
    assert quota.spec.hard["requests.nvidia.com/gpu"] == "5"
    deployments = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    assert {d.metadata.name for d in deployments} == {"hub", "proxy"}
    ingress = client.NetworkingV1Api(kube_api).read_namespaced_ingress("jupyterhub", namespace)
    assert ingress.spec.rules[0].host == f"{slug}.hubs.localhost"

    api.force_authenticate(alice)
    shown = api.get(f"/api/v1/hubs/{hub_id}/").json()
    assert shown["state"] == State.RUNNING
    assert shown["url"] == f"https://{slug}.hubs.localhost"

    deleted = api.delete(f"/api/v1/hubs/{hub_id}/")
    assert deleted.status_code == 202
    eventually(lambda: hub_state(State.DELETED), timeout=120)

    with pytest.raises(ApiException) as gone:
        core.read_namespace(namespace)
    assert gone.value.status == 404
    timeline = [e["to_state"] for e in api.get(f"/api/v1/hubs/{hub_id}/").json()["events"]]
    assert timeline == [
        State.PENDING,
        State.APPROVED,
        State.PROVISIONING,
        State.RUNNING,
        State.DEPROVISIONING,
        State.DELETED,
    ]
