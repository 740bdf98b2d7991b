"""A hub's NetworkPolicies, enforced (kube-router on the real node) and tried with real
connections from inside pods.

Two hubs' namespaces get the policies and Services the portal renders for them (nothing else:
no quota, so that plain stand-ins fit); stand-in pods carry the labels of the hub, the proxy, a
user server and a job and listen on their ports. Each refusal is checked beside a connection
that the policies allow to the same server, so a refusal means a policy, not a server that is
down. A refused connection shows as a timeout (kube-router drops) or a reset.
"""

from __future__ import annotations

import dataclasses
import os
import secrets

import pytest
from kubernetes import client, utils

from provisioning.render import (
    RenderSettings,
    admission_params,
    egress_policies,
    hub_labels,
    namespace,
    network_policies,
    service_objects,
    users_namespace,
)
from tests.cluster.realnode import connect, ensure_real_node, server_pod, wait_running
from tests.provisioning.examples import EXAMPLES

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

REFUSED = ("timeout", "refused")


@pytest.fixture
def core(kube_api):
    api = client.CoreV1Api(kube_api)
    ensure_real_node(api)
    return api


def _hub(kube_api, core, settings: RenderSettings, hub_id: int):
    """A hub's namespaces, policies and Services, with stand-in pods; returns (spec, pod IPs)."""
    suffix = secrets.token_hex(3)
    spec = dataclasses.replace(EXAMPLES["cpu-course"], hub_id=hub_id, slug=f"np-{suffix}")
    objects = [
        namespace(spec),
        users_namespace(spec),
        # What the users' namespace admits (read by the cluster-wide admission policies, once
        # a sync has installed them).
        admission_params(spec, settings),
        *network_policies(spec, settings),
        *egress_policies(spec, settings),
        *service_objects(spec),
    ]
    for manifest in objects:
        manifest["metadata"].setdefault("labels", {})["hub-on-demand.test"] = "true"
        utils.create_from_dict(kube_api, manifest)
    labels = hub_labels(spec)

    def component(name: str) -> dict[str, str]:
        return {**labels, "app.kubernetes.io/component": name}

    hub_ns, users_ns = spec.namespace, spec.users_namespace
    core.create_namespaced_pod(hub_ns, server_pod("hub", {"http": 8081}, component("hub")))
    core.create_namespaced_pod(
        hub_ns, server_pod("proxy", {"http": 8000, "api": 8001}, component("proxy"))
    )
    core.create_namespaced_pod(
        users_ns, server_pod("server", {"notebook-port": 8888}, component("singleuser-server"))
    )
    # A job: what a member with Jobs runs in the users' namespace, without a server's labels.
    core.create_namespaced_pod(users_ns, server_pod("job", {}, labels))
    ips = wait_running(core, hub_ns, ["hub", "proxy"])
    ips.update(wait_running(core, users_ns, ["server", "job"]))
    return spec, ips


@pytest.fixture
def hubs(kube_api, core):
    settings = RenderSettings()
    made = [_hub(kube_api, core, settings, 900_000 + n) for n in (1, 2)]
    yield made
    for spec, _ in made:
        for name in spec.namespaces:
            core.delete_namespace(name, propagation_policy="Background")


def test_hub_policies_let_through_what_a_hub_needs_and_stop_the_rest(core, hubs):
    (spec, ips), (other, other_ips) = hubs
    hub_ns, users_ns = spec.namespace, spec.users_namespace
    hub_service = f"hub.{hub_ns}.svc.cluster.local"

    def probe(ns, pod, address, port):
        return connect(core, ns, pod, address, port)

    # The proxy reaches the hub (by the Service name it is configured with) and the user server.
    assert probe(hub_ns, "proxy", hub_service, 8081) == "open"
    assert probe(hub_ns, "proxy", ips["server"], 8888) == "open"
    # The hub reaches the proxy's API and the user server.
    assert probe(hub_ns, "hub", ips["proxy"], 8001) == "open"
    assert probe(hub_ns, "hub", ips["server"], 8888) == "open"
    # A user server reaches the hub's API (single-user servers report to it) ...
    assert probe(users_ns, "server", hub_service, 8081) == "open"
    # ... but not the proxy's API, which would let it rewrite every route.
    assert probe(users_ns, "server", ips["proxy"], 8001) in REFUSED
    # A job reaches nothing of the hub: not its API, not the proxy, not a user server.
    assert probe(users_ns, "job", hub_service, 8081) in REFUSED
    assert probe(users_ns, "job", ips["proxy"], 8000) in REFUSED
    assert probe(users_ns, "job", ips["server"], 8888) in REFUSED

    # Another hub's pods are out of reach, though its own user server reaches its hub.
    other_hub = f"hub.{other.namespace}.svc.cluster.local"
    assert probe(other.users_namespace, "server", other_hub, 8081) == "open"
    assert probe(users_ns, "server", other_hub, 8081) in REFUSED
    assert probe(users_ns, "server", other_ips["server"], 8888) in REFUSED
    assert probe(hub_ns, "proxy", other_ips["server"], 8888) in REFUSED


def test_restricted_egress_keeps_user_workloads_off_the_clusters_internal_addresses(core, hubs):
    (spec, _), _ = hubs
    hub_ns, users_ns = spec.namespace, spec.users_namespace
    # The Kubernetes API through its Service address, and the private address behind it (the
    # node's way to the API server): the hub, whose egress is not limited, gets through.
    api_port = int(os.environ.get("DEVCLUSTER_APISERVER_PORT", "6443"))
    endpoints = client.DiscoveryV1Api(core.api_client).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    )
    (api_address,) = {
        address for slice_ in endpoints.items for e in slice_.endpoints for address in e.addresses
    }
    service_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert connect(core, hub_ns, "hub", service_ip, 443) == "open"
    assert connect(core, hub_ns, "hub", api_address, api_port) == "open"
    for pod in ("server", "job"):
        assert connect(core, users_ns, pod, service_ip, 443) in REFUSED
        assert connect(core, users_ns, pod, api_address, api_port) in REFUSED
