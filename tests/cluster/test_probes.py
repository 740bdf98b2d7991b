"""Probes and metrics against the local control plane: /readyz with the Kubernetes check, and
the metrics of the web, the worker and the hub watcher moving through a hub's lifecycle (the
REST API, real worker and watcher processes, PostgreSQL, Redis)."""

from __future__ import annotations

import secrets

import pytest
from django.test import Client

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from tests.support import eventually, free_port
from tests.test_monitoring import POD, TOKEN, scrape, value
from tests.test_monitoring_worker import healthcheck
from tests.test_monitoring_worker import scrape as scrape_port

pytestmark = pytest.mark.cluster


@pytest.mark.django_db
def test_readyz_is_ready_when_database_broker_and_kubernetes_answer(settings, kubeconfig_path):
    settings.KUBECONFIG = str(kubeconfig_path)
    response = Client().get("/readyz", **POD)
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "kubernetes": "ok"},
    }


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_metrics_move_through_a_hubs_lifecycle(api, alice, charlie, payload, workers, settings):
    settings.METRICS_TOKEN = TOKEN
    worker_port, watcher_port = free_port(), free_port()
    workers.env.update(METRICS_LISTEN_ADDRESS="127.0.0.1", WATCHER_METRICS_PORT=str(watcher_port))
    workers.start_watcher()
    workers.start(WORKER_METRICS_PORT=str(worker_port))
    before = scrape()
    assert value(before, "hubondemand_hubs", state="running") == 0

    api.force_authenticate(alice)
    slug = f"metrics-{secrets.token_hex(3)}"
    created = api.post("/api/v1/hubs/", payload(slug=slug, expected_users=500), format="json")
    assert created.status_code == 201, created.content
    hub_id = created.json()["id"]
    waiting = scrape()
    assert value(waiting, "hubondemand_hubs", state="pending") == 1
    assert value(waiting, "hubondemand_pending_approvals", kind="hub") == 1

    api.force_authenticate(charlie)
    assert api.post(f"/api/v1/hubs/{hub_id}/approve/", {}, format="json").status_code == 200

    def state() -> str:
        current = Hub.objects.values_list("state", flat=True).get(pk=hub_id)
        assert current != HubState.FAILED, Hub.objects.get(pk=hub_id).state_reason
        return current

    eventually(lambda: state() == HubState.RUNNING, timeout=120)
    running = scrape()
    assert value(running, "hubondemand_hubs", state="running") == 1
    assert value(running, "hubondemand_hubs", state="pending") == 0
    assert value(running, "hubondemand_pending_approvals", kind="hub") == 0

    # The worker applied it; the watcher saw it run and timed its provisioning.
    task = ("task", "portal.hubs.tasks.provision_hub")
    provisioned = ("hubondemand_celery_tasks_total", (("outcome", "success"), task))
    eventually(lambda: (scrape_port(worker_port) or {}).get(provisioned, 0) >= 1, timeout=30)
    watched = scrape_port(watcher_port)
    assert watched[("hubondemand_provisioning_duration_seconds_count", ())] == 1
    assert 0 < watched[("hubondemand_provisioning_duration_seconds_sum", ())] < 120

    alive = healthcheck(workers.env, "watcher")  # its loop turns
    assert alive.returncode == 0, alive.stdout + alive.stderr

    api.force_authenticate(alice)
    assert api.delete(f"/api/v1/hubs/{hub_id}/").status_code == 202
    eventually(lambda: state() == HubState.DELETED, timeout=120)
    gone = scrape()
    assert value(gone, "hubondemand_hubs", state="running") == 0
    assert value(gone, "hubondemand_hubs", state="deleted") == 1
