"""The local control plane behaves like the clusters the portal provisions hubs into.

These tests talk to a real kube-apiserver, controller manager, scheduler and kwok nodes;
nothing here is mocked. Waits poll the cluster with a deadline (a failure, not a timing
assertion: speed is measured in benchmarks/).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support import eventually

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
H100 = "NVIDIA-H100-80GB-HBM3"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def versions_env() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in (REPO_ROOT / "devcluster/versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return dict(pairs)


def pod(name: str, requests: dict[str, str], **spec: Any) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image=PAUSE_IMAGE,
                    resources=client.V1ResourceRequirements(requests=requests, limits=requests),
                )
            ],
            **spec,
        ),
    )


def test_api_server_reports_the_pinned_version_and_python_client_matches(kube_api):
    pinned = versions_env()["KUBERNETES_VERSION"]
    served = client.VersionApi(kube_api).get_code().git_version
    assert served == pinned
    from importlib.metadata import version

    client_major = int(version("kubernetes").split(".")[0])
    assert client_major == int(pinned.split(".")[1]), (
        f"Python client {version('kubernetes')} does not match Kubernetes {pinned}"
    )


def test_simulated_nodes_are_ready_with_cpu_and_gpu_capacity(kube_api):
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube_api).list_node().items}
    assert {"kwok-cpu-1", "kwok-cpu-2", "kwok-cpu-3", "kwok-gpu-a100", "kwok-gpu-h100"} <= set(
        nodes
    )
    for node in nodes.values():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name
    h100 = nodes["kwok-gpu-h100"]
    assert h100.metadata.labels["nvidia.com/gpu.product"] == H100
    assert h100.status.allocatable["nvidia.com/gpu"] == "8"
    assert nodes["kwok-gpu-a100"].status.allocatable["nvidia.com/gpu"] == "4"


def test_deployment_yields_a_ready_pod_on_a_simulated_node(kube_api, namespace):
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image=PAUSE_IMAGE)]
                    ),
                ),
            ),
        ),
    )
    eventually(
        lambda: (
            apps.read_namespaced_deployment_status("web", namespace).status.ready_replicas or 0
        )
        == 1
    )
    (web_pod,) = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert web_pod.status.phase == "Running"
    assert web_pod.spec.node_name.startswith("kwok-")
    assert web_pod.status.pod_ip
    assert {c.type: c.status for c in web_pod.status.conditions}["Ready"] == "True"


def test_gpu_pod_lands_on_the_node_with_the_requested_product(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace,
        pod(
            "train",
            {"nvidia.com/gpu": "2", "cpu": "1", "memory": "1Gi"},
            node_selector={"nvidia.com/gpu.product": H100},
        ),
    )
    running = eventually(
        lambda: (p := core.read_namespaced_pod("train", namespace)).status.phase == "Running" and p
    )
    assert running.spec.node_name == "kwok-gpu-h100"
    # GPU nodes are tainted; ExtendedResourceToleration added the toleration for us.
    assert any(t.key == "nvidia.com/gpu" for t in running.spec.tolerations)


def test_pod_asking_for_more_gpus_than_exist_stays_pending_with_a_scheduling_event(
    kube_api, namespace
):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, pod("greedy", {"nvidia.com/gpu": "16"}))

    def failed_scheduling():
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=greedy,reason=FailedScheduling"
        ).items
        return events and events[0]

    event = eventually(failed_scheduling)
    assert "Insufficient nvidia.com/gpu" in event.message
    greedy = core.read_namespaced_pod("greedy", namespace)
    assert greedy.status.phase == "Pending"
    assert not greedy.spec.node_name


def test_resource_quota_refuses_an_over_quota_pod(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="hub-quota"),
            spec=client.V1ResourceQuotaSpec(hard={"requests.cpu": "1", "limits.cpu": "1"}),
        ),
    )
    # Admission can only enforce the quota once the controller manager has computed its usage.
    eventually(lambda: core.read_namespaced_resource_quota("hub-quota", namespace).status.used)
    core.create_namespaced_pod(namespace, pod("fits", {"cpu": "500m"}))
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, pod("too-big", {"cpu": "2"}))
    assert refused.value.status == 403
    assert "exceeded quota: hub-quota" in refused.value.body
    names = [p.metadata.name for p in core.list_namespaced_pod(namespace).items]
    assert names == ["fits"]


def test_namespace_deletion_completes_and_takes_its_objects(kube_api):
    core = client.CoreV1Api(kube_api)
    name = f"doomed-{int(time.time() * 1000) % 10**8}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="data"), data={"k": "v"})
    )
    core.create_namespaced_pod(name, pod("worker", {"cpu": "100m"}))
    core.delete_namespace(name)

    def gone():
        try:
            core.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(gone, timeout=90)
    assert not core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={name}"
    ).items
    assert not core.list_pod_for_all_namespaces(field_selector=f"metadata.namespace={name}").items


def apply_config_map(core, namespace: str, data: dict, manager: str, force: bool = False):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": data}
    return core.patch_namespaced_config_map(
        "settings",
        namespace,
        body,
        field_manager=manager,
        force=force,
        _content_type="application/apply-patch+yaml",
    )


def test_server_side_apply_creates_updates_and_detects_conflicts(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    created = apply_config_map(core, namespace, {"idle": "3600"}, "hub-on-demand")
    assert created.data == {"idle": "3600"}
    updated = apply_config_map(core, namespace, {"idle": "7200"}, "hub-on-demand")
    assert updated.data == {"idle": "7200"}
    assert updated.metadata.resource_version != created.metadata.resource_version
    # Applying the same thing again changes nothing.
    again = apply_config_map(core, namespace, {"idle": "7200"}, "hub-on-demand")
    assert again.metadata.resource_version == updated.metadata.resource_version

    with pytest.raises(ApiException) as conflict:
        apply_config_map(core, namespace, {"idle": "60"}, "someone-else")
    assert conflict.value.status == 409
    assert "conflict" in conflict.value.body.lower()
    assert core.read_namespaced_config_map("settings", namespace).data == {"idle": "7200"}

    forced = apply_config_map(core, namespace, {"idle": "60"}, "someone-else", force=True)
    assert forced.data == {"idle": "60"}
    owners = {
        entry.manager
        for entry in forced.metadata.managed_fields
        if entry.operation == "Apply" and "f:idle" in str(entry.fields_v1)
    }
    assert owners == {"someone-else"}


def can_create_pods(kube_api, namespace: str, service_account: str, in_namespace: str) -> bool:
    review = client.AuthorizationV1Api(kube_api).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:{service_account}",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
                resource_attributes=client.V1ResourceAttributes(
                    namespace=in_namespace, verb="create", resource="pods"
                ),
            )
        )
    )
    return review.status.allowed


def test_role_binding_allows_pods_in_its_namespace_only(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="spawner"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="spawner"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods"], verbs=["get", "list", "create", "delete"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="spawner"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="spawner"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="spawner", namespace=namespace)
            ],
        ),
    )
    # The API server's RBAC authorizer sees a new binding through its informer cache, a moment
    # after the write: wait for it, then check what it does not allow.
    eventually(lambda: can_create_pods(kube_api, namespace, "spawner", in_namespace=namespace))
    assert not can_create_pods(kube_api, namespace, "spawner", in_namespace="default")
    assert not can_create_pods(kube_api, namespace, "default", in_namespace=namespace)


def test_restricted_pod_security_refuses_a_privileged_pod(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    privileged = pod("root", {"cpu": "100m"})
    privileged.spec.containers[0].security_context = client.V1SecurityContext(privileged=True)
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, privileged)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message
    assert not core.list_namespaced_pod(namespace).items


def test_start_reports_a_taken_port_clearly(tmp_path):
    """Starting a cluster whose port is taken fails at once and says which port and why."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "devcluster/scripts/up.sh")],
            env={
                **os.environ,
                "DEVCLUSTER_STATE": str(tmp_path / "state"),
                "DEVCLUSTER_ETCD_PORT": str(port),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port 127.0.0.1:{port}, needed by etcd, is taken by another process" in result.stderr
    assert not (tmp_path / "state" / "pids").exists()


def bound_claim(core, namespace: str, name: str, mode: str, size: str):
    """Create a claim of the default class and wait until it is bound; return it."""
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=[mode],
                resources=client.V1VolumeResourceRequirements(requests={"storage": size}),
            ),
        ),
    )
    return eventually(
        lambda: (c := core.read_namespaced_persistent_volume_claim(name, namespace)).status.phase
        == "Bound"
        and c
    )


def test_a_claim_of_the_default_storage_class_gets_a_volume(kube_api, namespace):
    bound = bound_claim(client.CoreV1Api(kube_api), namespace, "home", "ReadWriteOnce", "5Gi")
    assert bound.spec.storage_class_name == "standard"
    assert bound.status.capacity["storage"] == "5Gi"


def test_a_shared_claim_gets_a_volume_that_goes_with_it(kube_api, namespace):
    """ReadWriteMany claims (a hub's project volume) bind too, and their volume is deleted
    with them."""
    core = client.CoreV1Api(kube_api)
    bound = bound_claim(core, namespace, "shared", "ReadWriteMany", "20Gi")
    assert bound.status.access_modes == ["ReadWriteMany"]
    assert bound.status.capacity["storage"] == "20Gi"
    volume = bound.spec.volume_name

    core.delete_namespaced_persistent_volume_claim("shared", namespace)

    def volume_gone():
        try:
            core.read_persistent_volume(volume)
        except client.ApiException as error:
            return error.status == 404
        return False

    eventually(volume_gone)
