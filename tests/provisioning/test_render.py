"""Rendering a hub's objects from its spec (pure; the cluster tests apply them for real)."""

from __future__ import annotations

import pytest

from provisioning.render import (
    LABEL_HUB_ID,
    LABEL_OWNER,
    label_value,
    quota_totals,
    render_hub,
    selector,
)
from provisioning.spec import GpuRequest, HubSpec, ServerOption

SMALL = ServerOption("small", "Small", 0.5, 1, 1, 2)
LARGE = ServerOption("large", "Large", 2, 4, 8, 16)


def spec(**overrides) -> HubSpec:
    values = dict(
        hub_id=42,
        slug="astro-101",
        owner="ada@uni.example",
        hubs_domain="hubs.example.org",
        expected_users=40,
        server_options=(SMALL, LARGE),
        home_size_gib=10,
    )
    values.update(overrides)
    return HubSpec(**values)


def by_kind(manifests, kind):
    return [m for m in manifests if m["kind"] == kind]


def test_every_object_lives_in_the_hub_namespace_and_carries_the_portal_labels():
    manifests = render_hub(spec())
    assert manifests[0]["kind"] == "Namespace"
    assert manifests[0]["metadata"]["name"] == "hub-astro-101"
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "hub-on-demand"
        assert labels[LABEL_HUB_ID] == "42"
        assert labels[LABEL_OWNER] == "ada-uni.example"
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "hub-astro-101"
    assert selector(spec()) == f"app.kubernetes.io/managed-by=hub-on-demand,{LABEL_HUB_ID}=42"


def test_namespace_enforces_baseline_pod_security_and_warns_restricted():
    labels = render_hub(spec())[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_quota_covers_expected_users_with_the_largest_option_plus_the_hub():
    hard = quota_totals(spec(expected_users=40, notebooks_per_user=2))
    servers = 80
    assert hard["pods"] == str(servers + 4)
    assert hard["requests.cpu"] == f"{servers * 2000 + 1000}m"
    assert hard["limits.cpu"] == f"{servers * 4000 + 1000}m"
    assert hard["limits.memory"] == f"{(servers * 16 + 2) * 1024}Mi"
    assert hard["requests.storage"] == f"{40 * 10 + 1}Gi"
    assert hard["requests.nvidia.com/gpu"] == "0"


def test_quota_reserves_gpus_per_server():
    gpu = GpuRequest("nvidia.com/gpu", "NVIDIA-H100-80GB-HBM3", 2)
    hard = quota_totals(spec(expected_users=5, gpu=gpu))
    assert hard["requests.nvidia.com/gpu"] == "10"


def test_ingress_serves_the_hub_host_with_tls():
    (ingress,) = by_kind(render_hub(spec()), "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "astro-101.hubs.example.org"
    assert ingress["spec"]["tls"][0] == {
        "hosts": ["astro-101.hubs.example.org"],
        "secretName": "hub-astro-101-tls",
    }


def test_services_select_their_own_hubs_pods_only():
    for service in by_kind(render_hub(spec()), "Service"):
        assert service["spec"]["selector"][LABEL_HUB_ID] == "42"
    names = {s["metadata"]["name"] for s in by_kind(render_hub(spec()), "Service")}
    assert names == {"hub", "proxy-api", "proxy-public"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ada", "ada"), ("ada@uni.example", "ada-uni.example"), ("-x-", "x"), ("@@@", "unknown")],
)
def test_label_value_is_always_a_valid_label(text, expected):
    assert label_value(text) == expected
    assert len(label_value("a" * 200)) == 63
