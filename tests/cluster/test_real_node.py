"""The local cluster's real node (make cluster NODE=real): pods really run there, the host
reaches them at their addresses and through their Services, they find Services by name, and
pods that do not ask for the node stay on the simulated ones."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from kubernetes import client

from tests.cluster.realnode import (
    BASE_IMAGE,
    NODE_NAME,
    ensure_real_node,
    run_in_pod,
    server_pod,
    wait_running,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]


@pytest.fixture
def core(kube_api):
    api = client.CoreV1Api(kube_api)
    ensure_real_node(api)
    return api


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_a_pod_on_the_real_node_answers_at_its_address_its_service_and_its_name(core, namespace):
    core.create_namespaced_pod(namespace, server_pod("web", {"http": 8080}, {"app": "web"}))
    core.create_namespaced_pod(namespace, server_pod("client", {}))
    service = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    ips = wait_running(core, namespace, ["web", "client"])
    pod = core.read_namespaced_pod("web", namespace)
    assert pod.spec.node_name == NODE_NAME
    # From the host: the pod's own address (routed to the node), then the Service's (kube-proxy
    # in the node's namespace translates it).
    assert _get(f"http://{ips['web']}:8080/") == "web"
    assert _get(f"http://{service.spec.cluster_ip}/") == "web"
    # From another pod, by name: the cluster DNS (CoreDNS on the real node) answers.
    url = f"http://web.{namespace}.svc.cluster.local/"
    fetch = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    assert run_in_pod(core, namespace, "client", ["python3", "-c", fetch]).strip() == "web"


def test_a_pod_that_does_not_ask_for_the_real_node_stays_on_a_simulated_one(core, namespace):
    name = f"plain-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": BASE_IMAGE}]},
        },
    )
    wait_running(core, namespace, [name])
    node = core.read_namespaced_pod(name, namespace).spec.node_name
    assert node != NODE_NAME and node.startswith("kwok-")
