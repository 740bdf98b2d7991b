"""Rendering a hub's objects from its spec (pure; the cluster tests apply them for real)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from kubernetes.utils.quantity import parse_quantity

from provisioning.render import (
    ANNOTATION_CONFIG_CHECKSUM,
    LABEL_HUB_ID,
    LABEL_OWNER,
    PORTAL_BINDING,
    HubSecrets,
    RenderSettings,
    jobs_quota_totals,
    label_value,
    quota_amounts,
    quota_totals,
    render_hub,
    selector,
)
from provisioning.spec import (
    ExternalVolume,
    GpuRequest,
    GroupGrantSpec,
    HubSpec,
    ImageChoice,
    ServerOption,
    TierSpec,
)
from tests.provisioning.examples import EXAMPLES, FIXED_SECRETS

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


USERS_KINDS = {"Role", "RoleBinding"}  # the hub's rights are in the users' namespace


def test_what_runs_the_hub_and_what_users_run_live_in_separate_namespaces():
    one = spec(shared_size_gib=50, shared_mode="rw", jobs_access=True)
    manifests = render_hub(one)
    assert [m["metadata"]["name"] for m in manifests[:2]] == [
        "hub-astro-101",
        "hub-astro-101-users",
    ]
    (jobs_namespace,) = one.jobs_namespaces  # the owner's: the spec names no member
    assert jobs_namespace.startswith("hub-astro-101-jobs-") and len(jobs_namespace) <= 63
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "hub-on-demand"
        assert labels[LABEL_HUB_ID] == "42"
        assert labels[LABEL_OWNER] == "ada-uni.example"
    where = [
        (m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
        for m in manifests
        if m["kind"] != "Namespace"
    ]
    hub_side = {(kind, name) for kind, name, ns in where if ns == "hub-astro-101"}
    users_side = {(kind, name) for kind, name, ns in where if ns == "hub-astro-101-users"}
    jobs_side = {(kind, name) for kind, name, ns in where if ns == jobs_namespace}
    assert len(hub_side) + len(users_side) + len(jobs_side) == len(where)
    # The hub's Secret, its ServiceAccount and database claim, the hub and the proxy are
    # never next to what users run.
    for kept_apart in [
        ("Secret", "hub"),
        ("ServiceAccount", "hub"),
        ("PersistentVolumeClaim", "hub-db"),
        ("Deployment", "hub"),
        ("Deployment", "proxy"),
        ("Service", "hub"),
        ("ConfigMap", "hub"),
    ]:
        assert kept_apart in hub_side
    assert not {k for k in users_side if k[0] in ("Secret", "Deployment", "Service")}
    for users_thing in [
        ("PersistentVolumeClaim", "shared"),
        ("ServiceAccount", one.jobs_account("ada@uni.example")),
        ("ConfigMap", "hub-admission"),
        ("Role", "hub"),
    ]:
        assert users_thing in users_side
    # What one user's Jobs need is in that user's jobs namespace, and nothing else is.
    assert jobs_side == {
        ("ConfigMap", "hub-admission"),
        ("ResourceQuota", "hub-quota"),
        ("LimitRange", "hub-defaults"),
        ("NetworkPolicy", "default-deny-ingress"),
        ("NetworkPolicy", "egress"),
        ("Role", "jobs"),
        ("RoleBinding", "jobs"),
    }
    assert (
        selector(spec().hub_id) == f"app.kubernetes.io/managed-by=hub-on-demand,{LABEL_HUB_ID}=42"
    )


def test_pod_security_restricted_is_enforced_unless_an_image_needs_baseline():
    hub_ns, users_ns = (m["metadata"]["labels"] for m in render_hub(spec())[:2])
    assert hub_ns["pod-security.kubernetes.io/enforce"] == "restricted"
    assert users_ns["pod-security.kubernetes.io/enforce"] == "restricted"
    assert users_ns["hub-on-demand.io/namespace-role"] == "users"
    needs_more = ImageChoice("desktop", "Desktop", "example.org/desktop:1", pod_security="baseline")
    labels = render_hub(spec(images=(needs_more,)))[1]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_quota_covers_expected_users_with_the_largest_option_and_counts_everything():
    hard = quota_totals(spec(expected_users=40, notebooks_per_user=2))
    servers = 80
    assert hard["pods"] == str(servers)
    assert hard["count/jobs.batch"] == "0"
    assert hard["services"] == "0"
    assert hard["requests.cpu"] == f"{servers * 2000}m"
    assert hard["limits.cpu"] == f"{servers * 4000}m"
    assert hard["limits.memory"] == f"{servers * 16 * 1024}Mi"
    assert hard["limits.ephemeral-storage"] == f"{servers * 10}Gi"
    # A home volume per server (see quota_totals), plus the shared volume.
    assert hard["persistentvolumeclaims"] == str(servers + 1)
    assert hard["requests.storage"] == f"{servers * 10}Gi"
    assert hard["requests.nvidia.com/gpu"] == "0"
    # Jobs run in their users' own namespaces, never here.
    with_jobs = quota_totals(spec(expected_users=40, notebooks_per_user=2, jobs_access=True))
    assert with_jobs == hard


def test_a_users_jobs_get_the_cpu_and_memory_of_that_users_servers_and_no_volumes():
    gpu = GpuRequest("nvidia.com/gpu", "A100", 1)
    one = spec(notebooks_per_user=2, jobs_access=True, gpu=gpu, members=("bo",))
    jobs = jobs_quota_totals(one)
    assert jobs["limits.cpu"] == f"{2 * 4000}m" and jobs["limits.memory"] == f"{2 * 16384}Mi"
    # GPUs stay with the servers, which the GPU calendar reserves.
    assert jobs["requests.nvidia.com/gpu"] == "0"
    assert jobs["persistentvolumeclaims"] == "0" and jobs["services"] == "0"
    # Limits over several hubs count the jobs namespaces too (here only the owner's).
    assert one.jobs_users == ("ada@uni.example",)
    amounts = quota_amounts(one)
    assert amounts["limits.cpu"] == parse_quantity(quota_totals(one)["limits.cpu"]) + 8
    assert jobs_quota_totals(dataclasses.replace(one, suspended=True))["pods"] == "0"


def test_no_container_in_the_users_namespace_is_larger_than_the_largest_option():
    limits = [m for m in render_hub(spec()) if m["kind"] == "LimitRange"]
    users = next(m for m in limits if m["metadata"]["namespace"] == "hub-astro-101-users")
    (container,) = users["spec"]["limits"]
    assert container["max"] == {"cpu": "4000m", "memory": "16384Mi", "ephemeral-storage": "10Gi"}
    assert container["default"]["cpu"] == "1000m"


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


def names(manifests, kind):
    return {m["metadata"]["name"] for m in manifests if m["kind"] == kind}


def test_the_hub_gets_its_complete_object_set():
    manifests = render_hub(EXAMPLES["cpu-course"], RenderSettings(), FIXED_SECRETS)
    kinds = [m["kind"] for m in manifests]
    assert kinds.index("Namespace") == 0
    assert names(manifests, "ServiceAccount") == {"hub"}
    assert names(manifests, "Secret") == {"hub"}
    assert names(manifests, "ConfigMap") == {"hub", "hub-members", "hub-admission"}
    assert names(manifests, "PersistentVolumeClaim") == {"hub-db"}
    assert names(manifests, "Deployment") == {"hub", "proxy"}
    assert names(manifests, "NetworkPolicy") == {
        "default-deny-ingress",
        "proxy",
        "hub",
        "singleuser",
        "proxy-egress",
        "egress",
    }
    # Everything the hub's pods refer to is applied before the Deployments.
    assert kinds.index("Secret") < kinds.index("Deployment")
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Deployment")


def test_the_hub_may_manage_pods_and_volumes_in_the_users_namespace_and_nothing_more():
    manifests = render_hub(EXAMPLES["cpu-course"], RenderSettings(), FIXED_SECRETS)
    (role,) = [m for m in manifests if m["kind"] == "Role"]
    assert role["metadata"]["namespace"] == EXAMPLES["cpu-course"].users_namespace
    (binding,) = [m for m in manifests if m["kind"] == "RoleBinding"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hub", "namespace": EXAMPLES["cpu-course"].namespace}
    ]
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert ("pods", "create") in granted and ("persistentvolumeclaims", "delete") in granted
    assert ("events", "list") in granted
    assert not {r for r, _ in granted} - {"pods", "persistentvolumeclaims", "events"}
    assert not {v for _, v in granted} & {"*", "update", "patch", "escalate", "bind"}


def test_each_user_with_jobs_manages_jobs_in_their_own_namespace_only():
    research = EXAMPLES["gpu-research"]
    with_jobs = render_hub(research, RenderSettings(), FIXED_SECRETS)
    without = render_hub(EXAMPLES["cpu-course"], RenderSettings(), FIXED_SECRETS)
    assert not [name for name in names(without, "ServiceAccount") if name.startswith("jobs")]
    assert len(research.jobs_users) > 1
    for user in research.jobs_users:
        where = research.jobs_namespace(user)
        (role,) = [
            m for m in with_jobs if m["kind"] == "Role" and m["metadata"]["namespace"] == where
        ]
        verbs = {r: rule["verbs"] for rule in role["rules"] for r in rule["resources"]}
        assert set(verbs) == {"jobs", "pods", "events", "pods/log"}
        assert "create" not in verbs["pods"] and "delete" not in verbs["pods"]
        (binding,) = [
            m
            for m in with_jobs
            if m["kind"] == "RoleBinding" and m["metadata"]["namespace"] == where
        ]
        # Bound to that user's account alone, which lives in the users' namespace.
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": research.jobs_account(user),
                "namespace": research.users_namespace,
            }
        ]
    # No account of a user has any role in the users' namespace: none reads a server's pod.
    users_roles = [
        m
        for m in with_jobs
        if m["kind"] == "Role" and m["metadata"]["namespace"] == research.users_namespace
    ]
    assert [m["metadata"]["name"] for m in users_roles] == ["hub"]


def test_shared_and_external_claims_follow_the_spec():
    spec = EXAMPLES["gpu-research"]
    assert names(render_hub(spec), "PersistentVolumeClaim") == {"hub-db", "shared"}
    no_shared = HubSpec(**{**spec.__dict__, "shared_mode": "none", "shared_size_gib": 0})
    assert names(render_hub(no_shared), "PersistentVolumeClaim") == {"hub-db"}
    external = HubSpec(
        **{
            **spec.__dict__,
            "external_volumes": (
                ExternalVolume("scratch", "pvc", "/mnt/scratch", read_only=False, size_gib=100),
            ),
        }
    )
    assert "ext-scratch" in names(render_hub(external), "PersistentVolumeClaim")


def test_proxy_is_reachable_from_the_ingress_namespace_only_on_its_public_port():
    settings = RenderSettings(ingress_namespace="traefik")
    spec = EXAMPLES["cpu-course"]
    policies = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"]
        for m in render_hub(spec, settings)
        if m["kind"] == "NetworkPolicy"
    }
    for namespace in spec.namespaces:
        assert policies[namespace, "default-deny-ingress"] == {
            "podSelector": {},
            "policyTypes": ["Ingress"],
        }
    public = policies[spec.namespace, "proxy"]["ingress"][0]
    assert public["ports"] == [{"port": 8000}]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}} in (
        public["from"]
    )
    # Every other peer names its namespace and component: user servers reach the hub, the
    # hub and the proxy reach user servers; a job (no component label) reaches nothing.
    peers = [
        peer
        for key in [(spec.namespace, "hub"), (spec.users_namespace, "singleuser")]
        for rule in policies[key]["ingress"]
        for peer in rule["from"]
    ]
    assert all("namespaceSelector" in p and "podSelector" in p for p in peers)
    (users_peer,) = [
        p
        for p in policies[spec.namespace, "hub"]["ingress"][0]["from"]
        if p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        == spec.users_namespace
    ]
    assert users_peer["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/component": "singleuser-server"}
    }


def test_secrets_are_kept_from_the_existing_secret_and_only_missing_ones_generated():
    first = render_hub(EXAMPLES["cpu-course"])
    (secret,) = [m for m in first if m["kind"] == "Secret"]
    kept = HubSecrets.from_secret(secret)
    (again,) = [m for m in render_hub(EXAMPLES["cpu-course"], None, kept) if m["kind"] == "Secret"]
    assert again["data"] == secret["data"]
    partial = {"data": {"cookie-secret": secret["data"]["cookie-secret"]}}
    refilled = HubSecrets.from_secret(partial)
    assert refilled.cookie_secret == kept.cookie_secret
    assert refilled.proxy_token != kept.proxy_token
    assert len(HubSecrets.generate().crypt_key) == 64


def test_hub_restarts_when_its_configuration_changes_and_only_then():
    def checksum(spec):
        (hub,) = [
            m
            for m in render_hub(spec, RenderSettings(), FIXED_SECRETS)
            if m["kind"] == "Deployment" and m["metadata"]["name"] == "hub"
        ]
        return hub["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_CHECKSUM]

    spec = EXAMPLES["cpu-course"]
    assert checksum(spec) == checksum(spec)
    more_notebooks = HubSpec(**{**spec.__dict__, "notebooks_per_user": spec.notebooks_per_user + 1})
    assert checksum(more_notebooks) != checksum(spec)


def test_a_change_of_members_or_tiers_restarts_nothing():
    """Members and tiers live in their own ConfigMap, mounted as a directory (refreshed in
    place by the kubelet) and left out of the hub's config checksum."""
    spec = EXAMPLES["cpu-course"]
    changed = HubSpec(
        **{
            **spec.__dict__,
            "members": ("ta-1", "student-9"),
            "co_owners": ("grace",),
            "tiers": (TierSpec("members", default=True), TierSpec("students", gpu=False)),
            "member_tiers": (("student-9", "students"),),
            "group_grants": (GroupGrantSpec("astro-2027", "member", "students"),),
        }
    )

    def objects(spec):
        return {
            (m["kind"], m["metadata"]["name"]): m
            for m in render_hub(spec, RenderSettings(), FIXED_SECRETS)
        }

    before, after = objects(spec), objects(changed)
    differ = {key for key in before if before[key] != after[key]}
    assert differ == {("ConfigMap", "hub-members")}
    members = json.loads(after["ConfigMap", "hub-members"]["data"]["members.json"])
    assert members["user_tiers"]["student-9"] == "students"
    assert members["allowed_groups"] == ["astro-2027"]

    pod = after["Deployment", "hub"]["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "members"]
    assert mount == {"name": "members", "mountPath": "/usr/local/etc/hub-members", "readOnly": True}
    assert "subPath" not in mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == "members"]
    assert volume["configMap"] == {"name": "hub-members"}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["HUB_MEMBERS_FILE"] == "/usr/local/etc/hub-members/members.json"


def test_quota_is_held_to_the_installations_ceilings():
    spec = EXAMPLES["gpu-research"]
    uncapped = quota_totals(spec)
    assert uncapped["requests.nvidia.com/gpu"] == "18"
    settings = RenderSettings(quota_caps={"requests.nvidia.com/gpu": "8", "pods": "1000"})
    (quota,) = [
        m
        for m in render_hub(spec, settings)
        if m["kind"] == "ResourceQuota" and m["metadata"]["namespace"] == spec.users_namespace
    ]
    hard = quota["spec"]["hard"]
    assert hard["requests.nvidia.com/gpu"] == "8"  # capped
    assert hard["pods"] == uncapped["pods"]  # below its ceiling: unchanged
    assert hard["limits.cpu"] == uncapped["limits.cpu"]  # no ceiling


def _egress(manifests):
    return {
        m["metadata"]["name"]: m["spec"]
        for m in manifests
        if m["kind"] == "NetworkPolicy" and "Egress" in m["spec"]["policyTypes"]
    }


def test_egress_of_what_users_run_is_restricted_by_default_and_the_hub_is_not_limited():
    spec = EXAMPLES["cpu-course"]
    policies = _egress(render_hub(spec, RenderSettings()))
    assert set(policies) == {"egress", "proxy-egress"}  # nothing selects the hub
    assert policies["egress"]["podSelector"] == {}  # every pod in the users' namespace
    rules = policies["egress"]["egress"]
    (world,) = [r for r in rules if "ipBlock" in r.get("to", [{}])[0]]
    v4, v6 = (peer["ipBlock"] for peer in world["to"])
    for denied in ("10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"):
        assert denied in v4["except"]
    assert v6["cidr"] == "::/0" and "fe80::/10" in v6["except"] and "fc00::/7" in v6["except"]
    assert not [r for r in rules if not r]  # no rule that allows everything

    api = RenderSettings(denied_egress=("203.0.113.10/32",), api_server_cidrs=("203.0.113.10/32",))
    assert (
        "203.0.113.10/32"
        in _egress(render_hub(spec, api))["egress"]["egress"][2]["to"][0]["ipBlock"]["except"]
    )
    jobs = HubSpec(**{**spec.__dict__, "jobs_access": True})
    (to_api,) = _egress(render_hub(jobs, api))["api-server-egress"]["egress"]
    assert to_api == {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}]}


def test_open_egress_is_an_admins_choice_per_hub_or_per_installation():
    spec = EXAMPLES["cpu-course"]
    opened = HubSpec(**{**spec.__dict__, "open_egress": True})
    for manifests in (render_hub(opened), render_hub(spec, RenderSettings(egress="open"))):
        assert {} in _egress(manifests)["egress"]["egress"]


def test_with_least_privilege_each_hub_namespace_binds_the_portal_first_thing():
    research = EXAMPLES["gpu-research"]
    settings = RenderSettings(portal_role="portal-hub-namespace", portal_account="ops/portal")
    manifests = render_hub(research, settings, FIXED_SECRETS)
    namespaces = [m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"]
    assert set(namespaces) == set(research.namespaces)
    for name in namespaces:
        first_in_it = next(
            i for i, m in enumerate(manifests) if m["metadata"].get("namespace") == name
        )
        binding = manifests[first_in_it]
        # Applied right after its namespace and before anything else in it.
        assert manifests[first_in_it - 1]["metadata"]["name"] == name
        assert binding["kind"] == "RoleBinding"
        assert binding["metadata"]["name"] == PORTAL_BINDING
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "portal-hub-namespace",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "portal", "namespace": "ops"}
        ]
    # Without it (the portal's credentials reach every namespace), no such binding.
    plain = render_hub(research, RenderSettings(), FIXED_SECRETS)
    assert PORTAL_BINDING not in names(plain, "RoleBinding")
