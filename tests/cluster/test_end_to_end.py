"""The main flow end to end: the REST API, a real Celery worker process on Redis, PostgreSQL
and the local control plane. Submit beyond policy, approve, watch the namespace fill and the
hub reach running; delete, watch the namespace go and the hub reach deleted."""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from tests.support import eventually

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


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
    assert created.json()["state"] == HubState.PENDING  # GPUs are beyond the self-service policy

    api.force_authenticate(charlie)
    approved = api.post(f"/api/v1/hubs/{hub_id}/approve/", {}, format="json")
    assert approved.status_code == 200, approved.content

    def hub_state(*wanted):
        current = state_of(hub_id)
        assert current != HubState.FAILED, Hub.objects.get(pk=hub_id).state_reason
        return current in wanted

    eventually(lambda: hub_state(HubState.RUNNING), timeout=120)

    namespace = f"hub-{slug}"
    core = client.CoreV1Api(kube_api)
    labels = core.read_namespace(namespace).metadata.labels
    assert labels["hub-on-demand.io/hub-id"] == str(hub_id)
    assert labels["hub-on-demand.io/owner"] == "alice"
    users_namespace = f"hub-{slug}-users"
    assert shown_namespaces(api, alice, hub_id) == (namespace, users_namespace)
    quota = core.read_namespaced_resource_quota("hub-quota", users_namespace)
    assert quota.spec.hard["requests.nvidia.com/gpu"] == "5"
    deployments = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace).items
    assert {d.metadata.name for d in deployments} == {"hub", "proxy"}
    ingress = client.NetworkingV1Api(kube_api).read_namespaced_ingress("jupyterhub", namespace)
    assert ingress.spec.rules[0].host == f"{slug}.hubs.localhost"

    api.force_authenticate(alice)
    shown = api.get(f"/api/v1/hubs/{hub_id}/").json()
    assert shown["state"] == HubState.RUNNING
    assert shown["url"] == f"https://{slug}.hubs.localhost"

    deleted = api.delete(f"/api/v1/hubs/{hub_id}/")
    assert deleted.status_code == 202
    eventually(lambda: hub_state(HubState.DELETED), timeout=120)

    for name in (namespace, users_namespace):
        with pytest.raises(ApiException) as gone:
            core.read_namespace(name)
        assert gone.value.status == 404
    timeline = [e["to_state"] for e in api.get(f"/api/v1/hubs/{hub_id}/").json()["events"]]
    assert timeline == [
        HubState.PENDING,
        HubState.APPROVED,
        HubState.PROVISIONING,
        HubState.RUNNING,
        HubState.DEPROVISIONING,
        HubState.DELETED,
    ]


def shown_namespaces(api, user, hub_id: int) -> tuple[str, str]:
    api.force_authenticate(user)
    shown = api.get(f"/api/v1/hubs/{hub_id}/").json()
    return shown["namespace"], shown["users_namespace"]
