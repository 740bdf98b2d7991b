"""The rendered objects of a hub, applied to the real control plane with server-side apply."""

from __future__ import annotations

import pytest
from kubernetes import client

from provisioning import k8s
from provisioning.render import render_hub, selector
from provisioning.spec import GpuRequest, HubSpec, ServerOption
from provisioning.tasks import deployments_available
from tests.support import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture
def hub_spec(kube_api):
    import secrets

    spec = HubSpec(
        hub_id=secrets.randbelow(10**6),
        slug=f"t{secrets.token_hex(3)}",
        owner="ada@uni.example",
        hubs_domain="hubs.localhost",
        expected_users=3,
        server_options=(ServerOption("small", "Small", 0.5, 1, 1, 2),),
        gpu=GpuRequest("nvidia.com/gpu", "NVIDIA-A100-SXM4-80GB", 1),
    )
    yield spec
    k8s.delete_namespace(kube_api, spec.namespace)


def wait_until_available(kube_api, spec: HubSpec) -> list[dict]:
    def available():
        items = k8s.list_objects(kube_api, "Deployment", spec.namespace, selector(spec))
        return deployments_available(items)[0] and items

    return eventually(available)


def test_rendered_hub_is_accepted_and_becomes_available(kube_api, hub_spec):
    for manifest in render_hub(hub_spec):
        k8s.apply(kube_api, manifest)

    deployments = wait_until_available(kube_api, hub_spec)
    assert {d["metadata"]["name"] for d in deployments} == {"hub", "proxy"}

    core = client.CoreV1Api(kube_api)
    ns = core.read_namespace(hub_spec.namespace)
    assert ns.metadata.labels["hub-on-demand.io/hub-id"] == str(hub_spec.hub_id)
    quota = core.read_namespaced_resource_quota("hub-quota", hub_spec.namespace)
    assert quota.spec.hard["requests.nvidia.com/gpu"] == "3"
    # The hub's own pods fit its quota and pass baseline Pod Security.
    pods = core.list_namespaced_pod(hub_spec.namespace).items
    assert len(pods) == 2 and all(p.status.phase == "Running" for p in pods)


def test_applying_twice_changes_nothing(kube_api, hub_spec):
    manifests = render_hub(hub_spec)
    for manifest in manifests:
        k8s.apply(kube_api, manifest)
    # Let controllers finish writing status (quota usage, rollout) before comparing.
    wait_until_available(kube_api, hub_spec)
    eventually(
        lambda: k8s.get(kube_api, "ResourceQuota", "hub-quota", hub_spec.namespace)
        .get("status", {})
        .get("used")
    )

    def versions(objects):
        return {
            (o["kind"], o["metadata"]["name"]): o["metadata"]["resourceVersion"] for o in objects
        }

    settled = versions(
        k8s.get(kube_api, m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
        for m in manifests
    )
    reapplied = versions(k8s.apply(kube_api, m) for m in manifests)
    assert reapplied == settled


def test_apply_takes_back_fields_changed_by_hand(kube_api, hub_spec):
    manifests = render_hub(hub_spec)
    for manifest in manifests:
        k8s.apply(kube_api, manifest)
    core = client.CoreV1Api(kube_api)
    core.patch_namespaced_resource_quota(
        "hub-quota", hub_spec.namespace, {"spec": {"hard": {"requests.nvidia.com/gpu": "99"}}}
    )
    (quota,) = [m for m in manifests if m["kind"] == "ResourceQuota"]
    k8s.apply(kube_api, quota)
    restored = core.read_namespaced_resource_quota("hub-quota", hub_spec.namespace)
    assert restored.spec.hard["requests.nvidia.com/gpu"] == "3"


def test_an_object_the_api_server_refuses_is_a_permanent_error_with_its_message(kube_api, hub_spec):
    k8s.apply(kube_api, render_hub(hub_spec)[0])
    bad_quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "broken", "namespace": hub_spec.namespace},
        "spec": {"hard": {"requests.cpu": "-1"}},
    }
    with pytest.raises(k8s.ClusterError) as refused:
        k8s.apply(kube_api, bad_quota)
    assert refused.value.transient is False
    assert refused.value.status == 422
    assert "must be greater than or equal to 0" in refused.value.message


def test_an_unreachable_api_server_is_a_transient_error():
    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:1"
    configuration.verify_ssl = False
    configuration.retries = 0
    with pytest.raises(k8s.ClusterError) as unreachable:
        k8s.get(client.ApiClient(configuration), "Namespace", "default")
    assert unreachable.value.transient is True
    assert "cannot reach the Kubernetes API server" in unreachable.value.message


def test_deleting_a_namespace_that_is_gone_is_not_an_error(kube_api):
    assert k8s.delete_namespace(kube_api, "hub-never-existed") is False
