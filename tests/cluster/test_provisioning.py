"""A hub's rendered objects against the real control plane: admission, server-side apply,
secrets that survive re-applies, pruning by label, and error classification."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from kubernetes import client

from portal.hubs.tasks import deployments_available
from provisioning import k8s
from provisioning.render import RenderSettings, render_hub, selector
from provisioning.spec import HubSpec
from provisioning.sync import desired_objects, sync_hub
from tests.provisioning.examples import EXAMPLES
from tests.support import delete_namespaces, eventually

pytestmark = pytest.mark.cluster

SETTINGS = RenderSettings()


def unique(spec: HubSpec) -> HubSpec:
    """The example with a slug and id of its own, so tests never share a namespace."""
    suffix = secrets.token_hex(3)
    return dataclasses.replace(
        spec, slug=f"{spec.slug[:30]}-{suffix}", hub_id=secrets.randbelow(10**9)
    )


@pytest.fixture
def hub_specs(kube_api):
    """Hub specs whose namespaces are deleted after the test."""
    made: list[HubSpec] = []

    def make(example: str = "cpu-course", **changes) -> HubSpec:
        spec = dataclasses.replace(unique(EXAMPLES[example]), **changes)
        made.append(spec)
        return spec

    yield make
    for spec in made:
        delete_namespaces(kube_api, spec)


def wait_until_available(kube_api, spec: HubSpec) -> list[dict]:
    def available():
        items = k8s.list_objects(kube_api, "Deployment", spec.namespace, selector(spec.hub_id))
        return deployments_available(items)[0] and items

    return eventually(available, timeout=90)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
@pytest.mark.parametrize(
    "rendering",
    [SETTINGS, RenderSettings(egress="restricted", quota_caps={"limits.cpu": "100"})],
    ids=["default", "restricted-egress-capped-quota"],
)
def test_every_rendered_object_passes_a_server_side_dry_run(
    kube_api, hub_specs, example, rendering
):
    spec = hub_specs(example)
    manifests = render_hub(spec, rendering)
    # Namespaced objects need their namespaces to exist.
    namespaces = [m for m in manifests if m["kind"] == "Namespace"]
    assert [m["metadata"]["name"] for m in namespaces] == list(spec.namespaces)
    for manifest in namespaces:
        k8s.apply(kube_api, manifest)
    for manifest in manifests:
        if manifest["kind"] != "Namespace":
            k8s.apply(kube_api, manifest, dry_run=True)
    # A dry run stores nothing.
    assert not k8s.list_objects(kube_api, "ConfigMap", spec.namespace, selector(spec.hub_id))


def test_a_synced_hub_becomes_available_and_its_pods_fit_quota_and_pod_security(
    kube_api, hub_specs
):
    spec = hub_specs("gpu-research")
    result = sync_hub(kube_api, spec, SETTINGS)
    assert result.pruned == ()
    deployments = wait_until_available(kube_api, spec)
    assert {d["metadata"]["name"] for d in deployments} == {"hub", "proxy"}

    core = client.CoreV1Api(kube_api)
    for namespace in spec.namespaces:
        labels = core.read_namespace(namespace).metadata.labels
        assert labels["hub-on-demand.io/hub-id"] == str(spec.hub_id)
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = core.read_namespaced_resource_quota("hub-quota", spec.users_namespace)
    assert quota.spec.hard["requests.nvidia.com/gpu"] == str(6 * 3)
    hub_pod = core.list_namespaced_pod(
        spec.namespace, label_selector="app.kubernetes.io/component=hub"
    ).items[0]
    assert hub_pod.status.phase == "Running"
    assert hub_pod.spec.service_account_name == "hub"
    eventually(
        lambda: core.read_namespaced_persistent_volume_claim("hub-db", spec.namespace).status.phase
        == "Bound"
    )


def test_re_applying_an_unchanged_hub_writes_nothing(kube_api, hub_specs):
    spec = hub_specs("custom-image-workshop")
    sync_hub(kube_api, spec, SETTINGS)
    wait_until_available(kube_api, spec)
    for namespace in spec.namespaces:
        eventually(
            lambda namespace=namespace: k8s.get(kube_api, "ResourceQuota", "hub-quota", namespace)
            .get("status", {})
            .get("used")
        )
    # Claims bind (a status update by the volume binder, not a write of the portal's).
    eventually(
        lambda: all(
            claim.get("status", {}).get("phase") == "Bound"
            for namespace in spec.namespaces
            for claim in k8s.list_objects(
                kube_api, "PersistentVolumeClaim", namespace, selector(spec.hub_id)
            )
        )
    )

    def versions() -> dict:
        return {
            (m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]): k8s.get(
                kube_api, m["kind"], m["metadata"]["name"], m["metadata"].get("namespace")
            )["metadata"]["resourceVersion"]
            for m in desired_objects(kube_api, spec, SETTINGS)
        }

    before = versions()
    result = sync_hub(kube_api, spec, SETTINGS)
    assert result.pruned == ()
    assert versions() == before


def test_the_hub_secrets_survive_a_re_apply(kube_api, hub_specs):
    spec = hub_specs()
    sync_hub(kube_api, spec, SETTINGS)
    first = k8s.get(kube_api, "Secret", "hub", spec.namespace)["data"]
    sync_hub(kube_api, dataclasses.replace(spec, idle_timeout_minutes=120), SETTINGS)
    assert k8s.get(kube_api, "Secret", "hub", spec.namespace)["data"] == first


def test_objects_the_spec_no_longer_needs_are_pruned_and_nothing_else(kube_api, hub_specs):
    spec = hub_specs("gpu-research")
    sync_hub(kube_api, spec, SETTINGS)
    core = client.CoreV1Api(kube_api)
    # Objects the portal does not own: a user's home volume and someone's ConfigMap.
    core.create_namespaced_persistent_volume_claim(
        spec.users_namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name="home-grace", labels={"component": "singleuser"}),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )
    core.create_namespaced_config_map(
        spec.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="notes"))
    )

    smaller = dataclasses.replace(spec, jobs_access=False, shared_mode="none", shared_size_gib=0)
    result = sync_hub(kube_api, smaller, SETTINGS)

    users = f" (in {spec.users_namespace})"
    # Without jobs access every user's jobs namespace and account goes.
    assert set(result.pruned) == {
        *(f"Namespace {name}" for name in spec.jobs_namespaces),
        *(f"ServiceAccount {spec.jobs_account(user)}{users}" for user in spec.jobs_users),
        "PersistentVolumeClaim shared" + users,
    }
    owner_account = spec.jobs_account(spec.owner)
    assert k8s.get(kube_api, "ServiceAccount", owner_account, spec.users_namespace) is None
    assert k8s.get(kube_api, "PersistentVolumeClaim", "home-grace", spec.users_namespace)
    assert k8s.get(kube_api, "ConfigMap", "notes", spec.namespace)
    assert k8s.get(kube_api, "ServiceAccount", "hub", spec.namespace)


def test_an_object_the_api_server_refuses_is_a_permanent_error_naming_it(kube_api, hub_specs):
    spec = hub_specs()
    bad = RenderSettings(ingress_annotations={"not a valid key!": "x"})
    with pytest.raises(k8s.ClusterError) as refused:
        sync_hub(kube_api, spec, bad)
    assert refused.value.transient is False
    assert refused.value.status == 422
    assert refused.value.message.startswith("The cluster refused Ingress jupyterhub: ")


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
