"""Render the Kubernetes objects of one hub from its spec, as plain dicts ready to apply.

Every object carries the portal's labels (managed-by, hub id, owner) so that the portal can
list a hub's objects with one label-selected call per kind.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from provisioning import hubconfig
from provisioning.hubconfig import HubOAuthClient
from provisioning.spec import HubSpec

FIELD_MANAGER = "hub-on-demand"
MANAGED_BY = "hub-on-demand"
LABEL_HUB_ID = "hub-on-demand.io/hub-id"
LABEL_OWNER = "hub-on-demand.io/owner"
ANNOTATION_OWNER = "hub-on-demand.io/owner"
ANNOTATION_CONFIG_CHECKSUM = "hub-on-demand.io/config-checksum"
# Which of a hub's namespaces this is: the hub's own ("hub"), its users' ("users") or one
# user's jobs namespace ("jobs").
LABEL_NAMESPACE_ROLE = "hub-on-demand.io/namespace-role"
ROLE_HUB = "hub"
ROLE_USERS = "users"
# A user's own jobs namespace (see jobs_objects), and whose it is.
ROLE_JOBS = "jobs"
ANNOTATION_MEMBER = "hub-on-demand.io/member"
# The RoleBinding of the portal's own rights in each hub namespace (RenderSettings.portal_role).
PORTAL_BINDING = "hub-on-demand-portal"
JOBS_ROLE = "jobs"
SECRET_NAME = "hub"
CONFIG_MAP_NAME = "hub"
HUB_SERVICE_ACCOUNT = "hub"
QUOTA_NAME = "hub-quota"
LIMITS_NAME = "hub-defaults"
# What the users' namespace admits (see admission_params and provisioning.admission).
ADMISSION_PARAMS = "hub-admission"

# Pods the hub's namespace runs (hub, proxy, room for a rolling update).
SYSTEM_PODS = 4
SYSTEM_CPU = 1.0
SYSTEM_MEM_GIB = 2.0
HUB_DB_GIB = 1
# Scratch space per container (container layers, logs, emptyDir) unless it states its own.
EPHEMERAL_REQUEST_GIB = 1
EPHEMERAL_LIMIT_GIB = 10

Manifest = dict[str, Any]


@dataclass(frozen=True)
class IdentityProvider:
    """The identity provider hubs log in with, as the client the portal registered for the hub
    (HubSpec.login_client_id), or else the client all hubs share, or else prefix + slug."""

    authorize_url: str = "https://sso.example.org/authorize"
    token_url: str = "https://sso.example.org/token"
    userdata_url: str = "https://sso.example.org/userinfo"
    client_id_prefix: str = "hub-"
    shared_client_id: str = ""
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"

    def for_hub(self, spec: HubSpec) -> HubOAuthClient:
        """The OAuth client settings of one hub."""
        return HubOAuthClient(
            authorize_url=self.authorize_url,
            token_url=self.token_url,
            userdata_url=self.userdata_url,
            client_id=(
                spec.login_client_id
                or self.shared_client_id
                or f"{self.client_id_prefix}{spec.slug}"
            ),
            scopes=self.scopes,
            username_claim=self.username_claim,
            groups_claim=self.groups_claim,
        )


@dataclass(frozen=True)
class RenderSettings:
    """Installation-wide choices that are not part of a hub's spec."""

    hub_image: str = "quay.io/jupyterhub/k8s-hub:4.3.1"
    proxy_image: str = "quay.io/jupyterhub/configurable-http-proxy:5.0.1"
    ingress_class: str = ""
    ingress_annotations: dict[str, str] = field(default_factory=dict)
    # Namespace of the ingress controller, the only one allowed to reach a hub's proxy.
    ingress_namespace: str = "ingress-nginx"
    # Storage class for the hub's own volumes (hub state, shared volume); "" = the default.
    storage_class: str = ""
    # Egress of user servers and jobs: "restricted" to the cluster's DNS, the hub's API and
    # addresses outside private ranges, or "open" for every hub (an admin may also open it
    # for one hub: HubSpec.open_egress). The hub itself keeps talking to the Kubernetes API.
    egress: str = "restricted"
    # More addresses restricted egress never reaches, e.g. the API server's public address.
    denied_egress: tuple[str, ...] = ()
    # The API server's addresses, which user servers of hubs with jobs access reach.
    api_server_cidrs: tuple[str, ...] = ()
    # Priority classes that pods in users' namespaces may name (none by default).
    priority_classes: tuple[str, ...] = ()
    # The image placeholder pods run (they only sleep).
    placeholder_image: str = "registry.k8s.io/pause:3.10"
    # Installation-wide ceilings on any hub's quota, e.g. {"requests.nvidia.com/gpu": "16"}.
    quota_caps: dict[str, str] = field(default_factory=dict)
    # The portal's OpenID Connect provider, which every hub logs its users in with.
    identity_provider: IdentityProvider = field(default_factory=lambda: IdentityProvider())
    # Least privilege (the Helm chart): the ClusterRole the portal acts with inside hub
    # namespaces and the portal's ServiceAccount ("namespace/name"). Each hub namespace then
    # binds the one to the other first thing, so the portal's rights there come and go with
    # the namespace. Empty: the portal's credentials reach every namespace already.
    portal_role: str = ""
    portal_account: str = ""
    # Where a hub's pods run (the hub, the proxy, user servers): a node selector and the
    # tolerations to go with it, e.g. the local cluster's real node (README: a real node).
    # Empty: wherever the scheduler puts them.
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str], ...] = ()

    def placement(self) -> dict[str, Any]:
        """The pod spec fields that place a hub's pods; none when unset."""
        fields: dict[str, Any] = {}
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [dict(t) for t in self.tolerations]
        return fields


@dataclass(frozen=True)
class HubSecrets:
    """Secrets a hub is created with and keeps for its life: a re-apply never rotates them."""

    cookie_secret: str
    proxy_token: str
    crypt_key: str
    portal_token: str
    oauth_client_secret: str

    KEYS = {
        "cookie_secret": "cookie-secret",
        "proxy_token": "proxy-token",
        "crypt_key": "crypt-key",
        "portal_token": "portal-service-token",
        "oauth_client_secret": "oauth-client-secret",
    }

    @classmethod
    def generate(cls) -> HubSecrets:
        return cls(**{attr: secrets.token_hex(32) for attr in cls.KEYS})

    @classmethod
    def from_secret(cls, existing: dict[str, Any] | None, login_secret: str = "") -> HubSecrets:
        """The secrets in an existing Secret object, keys it lacks generated; `login_secret`,
        the secret of the hub's client at the identity provider, wins over the one it has."""
        data = (existing or {}).get("data") or {}
        values = {
            attr: base64.b64decode(data[key]).decode() if key in data else secrets.token_hex(32)
            for attr, key in cls.KEYS.items()
        }
        if login_secret:
            values["oauth_client_secret"] = login_secret
        return cls(**values)

    def data(self) -> dict[str, str]:
        """The Secret's `data`: base64 of each value, under its key."""
        return {
            key: base64.b64encode(getattr(self, attr).encode()).decode()
            for attr, key in self.KEYS.items()
        }


def label_value(text: str) -> str:
    """Turn any text (a username, an e-mail) into a valid label value (<= 63 characters)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return value.strip("-_.") or "unknown"


def hub_labels(spec: HubSpec) -> dict[str, str]:
    """The labels every object of this hub carries."""
    return {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_HUB_ID: str(spec.hub_id),
        LABEL_OWNER: label_value(spec.owner),
    }


def selector(hub_id: int) -> str:
    """Label selector that finds all objects of one hub."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_HUB_ID}={hub_id}"


def _meta(spec: HubSpec, name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    """Metadata of one object: in the hub's namespace unless `namespace` says otherwise ("" for
    objects outside any namespace)."""
    meta: dict[str, Any] = {"name": name, "labels": {**hub_labels(spec), **labels}}
    where = spec.namespace if namespace is None else namespace
    if where:
        meta["namespace"] = where
    return meta


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _mem(gib: float) -> str:
    return f"{round(gib * 1024)}Mi"


def _namespace(spec: HubSpec, name: str, role: str, pod_security: str) -> Manifest:
    meta = _meta(
        spec,
        name,
        namespace="",
        **{
            LABEL_NAMESPACE_ROLE: role,
            "pod-security.kubernetes.io/enforce": pod_security,
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
        },
    )
    meta["annotations"] = {ANNOTATION_OWNER: spec.owner}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def portal_binding(spec: HubSpec, settings: RenderSettings, namespace: str) -> list[Manifest]:
    """The RoleBinding that gives the portal its rights in one of the hub's namespaces (see
    RenderSettings.portal_role), or nothing."""
    if not (settings.portal_role and settings.portal_account):
        return []
    account_namespace, _, account = settings.portal_account.partition("/")
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(spec, PORTAL_BINDING, namespace),
            "subjects": [
                {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
            ],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": settings.portal_role,
            },
        }
    ]


def namespace(spec: HubSpec) -> Manifest:
    """The hub's namespace (hub, proxy, their Secret and the hub's database), where Pod
    Security `restricted` is enforced: the portal writes every pod there itself."""
    return _namespace(spec, spec.namespace, ROLE_HUB, "restricted")


def users_namespace(spec: HubSpec) -> Manifest:
    """The namespace of user servers and jobs. Pod Security `restricted` is enforced unless
    one of the hub's images needs `baseline` (marked so in the catalogue, shown to the admin
    who approves the hub); `restricted` is then still reported as warnings and audit
    entries."""
    return _namespace(spec, spec.users_namespace, ROLE_USERS, spec.pod_security)


def _largest_request(spec: HubSpec) -> tuple[float, float, float, float]:
    """CPU and memory guarantee and limit of the hub's largest server options."""
    options = spec.server_options
    return (
        max((o.cpu_guarantee for o in options), default=0.5),
        max((o.cpu_limit for o in options), default=1.0),
        max((o.mem_guarantee_gib for o in options), default=1.0),
        max((o.mem_limit_gib for o in options), default=2.0),
    )


def _compute(spec: HubSpec, servers: int, pods: int) -> dict[str, str]:
    """CPU, memory, GPUs and scratch space of `servers` of the hub's largest option, for
    `pods` pods."""
    cpu_request, cpu_limit, mem_request, mem_limit = _largest_request(spec)
    hard = {
        "requests.cpu": _cpu(servers * cpu_request),
        "limits.cpu": _cpu(servers * cpu_limit),
        "requests.memory": _mem(servers * mem_request),
        "limits.memory": _mem(servers * mem_limit),
        "requests.ephemeral-storage": f"{pods * EPHEMERAL_REQUEST_GIB}Gi",
        "limits.ephemeral-storage": f"{pods * EPHEMERAL_LIMIT_GIB}Gi",
    }
    resource = spec.gpu.resource_name if spec.gpu else "nvidia.com/gpu"
    hard[f"requests.{resource}"] = str(spec.gpu.count * servers if spec.gpu else 0)
    return hard


def quota_totals(spec: HubSpec) -> dict[str, str]:
    """Quota of the users' namespace: expected users x servers each x the largest option, and
    counts of what users may hold there (servers, claims; no Jobs, no Services)."""
    servers = spec.expected_users * spec.notebooks_per_user
    external_claims = [v for v in spec.external_volumes if v.kind == "pvc"]
    external_gib = sum(v.size_gib or 1 for v in external_claims)
    storage_gib = servers * spec.home_size_gib + spec.shared_size_gib + external_gib
    # Placeholders of a class held now come on top: a Deployment keeps them (running, or
    # pending once a server preempted one), so servers still get at most their own share.
    warm = spec.warm_servers + spec.warm_gpu_servers
    compute = _compute(spec, servers + warm, servers + warm)
    if spec.gpu:
        # GPU seats: what the users hold at once, however many of them there are.
        seats = spec.gpu_seats + spec.warm_gpu_servers * spec.gpu.count
        compute[f"requests.{spec.gpu.resource_name}"] = str(seats)
    return {
        "pods": str(servers + warm),
        "count/jobs.batch": "0",
        "services": "0",
        **compute,
        # A home volume per user, the shared volume and external claims. Homes are counted per
        # server: a user's named servers share one home, but KubeSpawner asks to create it at
        # every start and quota admission charges that request before the API server answers
        # that the claim exists.
        "persistentvolumeclaims": str(servers + 1 + len(external_claims)),
        "requests.storage": f"{storage_gib}Gi",
    }


# What one user's jobs namespace holds at most: Jobs (finished ones count until deleted) and
# their pods, within the CPU, memory and GPUs of that user's servers.
JOBS_PER_USER = 20
JOB_PODS_PER_USER = 4


def jobs_quota_totals(spec: HubSpec) -> dict[str, str]:
    """Quota of one user's jobs namespace: the CPU and memory of that user's servers (servers
    per user x the largest option), a few pods, and no claims, Services or GPUs: the GPU
    calendar reserves a hub's GPUs for its servers (`capacity.reserved_gpus`), and jobs that
    took GPUs beyond them would take another hub's."""
    hard = {
        # A suspended hub runs nothing: no job pod either (see the suspend task).
        "pods": "0" if spec.suspended else str(JOB_PODS_PER_USER),
        "count/jobs.batch": str(JOBS_PER_USER),
        "services": "0",
        **_compute(spec, spec.notebooks_per_user, JOB_PODS_PER_USER),
        "persistentvolumeclaims": "0",
        "requests.storage": "0",
    }
    if spec.gpu:
        hard[f"requests.{spec.gpu.resource_name}"] = "0"
    return hard


def hub_quota_totals() -> dict[str, str]:
    """Quota of the hub's namespace: the hub and the proxy (room for a rolling update), their
    three Services and the hub's database claim; the same for every hub."""
    return {
        "pods": str(SYSTEM_PODS),
        "services": "3",
        "requests.cpu": _cpu(SYSTEM_CPU),
        "limits.cpu": _cpu(SYSTEM_CPU * 2),
        "requests.memory": _mem(SYSTEM_MEM_GIB),
        "limits.memory": _mem(SYSTEM_MEM_GIB * 2),
        "requests.ephemeral-storage": f"{SYSTEM_PODS * EPHEMERAL_REQUEST_GIB}Gi",
        "limits.ephemeral-storage": f"{SYSTEM_PODS * EPHEMERAL_LIMIT_GIB}Gi",
        "persistentvolumeclaims": "1",
        "requests.storage": f"{HUB_DB_GIB}Gi",
        "count/jobs.batch": "0",
    }


def capped(hard: dict[str, str], caps: dict[str, str]) -> dict[str, str]:
    """The quota with every resource held to its installation-wide ceiling."""
    return {
        resource: (
            caps[resource]
            if resource in caps and parse_quantity(caps[resource]) < parse_quantity(value)
            else value
        )
        for resource, value in hard.items()
    }


def quota_amounts(spec: HubSpec, caps: dict[str, str] | None = None) -> dict[str, Decimal]:
    """The users' quota and those of the jobs namespaces as numbers (cores, bytes, counts),
    held to the installation's ceilings: what the hub's users can hold at most, for limits
    that add up several hubs."""
    amounts = {
        key: parse_quantity(value) for key, value in capped(quota_totals(spec), caps or {}).items()
    }
    jobs = capped(jobs_quota_totals(spec), caps or {})
    for key, value in jobs.items():
        amounts[key] = amounts.get(key, Decimal(0)) + parse_quantity(value) * len(spec.jobs_users)
    return amounts


# Classes that start warm: placeholder pods run at this PriorityClass, below every server, so
# that the scheduler preempts them for a real server; they never preempt anything themselves.
PLACEHOLDER_PRIORITY_CLASS = "hub-on-demand-placeholder"
PLACEHOLDER_PRIORITY = -100
PLACEHOLDERS = "warm-servers"
GPU_PLACEHOLDERS = "warm-gpu-servers"
COMPONENT_PLACEHOLDER = "placeholder"


def placeholder_priority_class() -> Manifest:
    """The PriorityClass of placeholders: cluster-wide, the same for every hub."""
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {
            "name": PLACEHOLDER_PRIORITY_CLASS,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "value": PLACEHOLDER_PRIORITY,
        "preemptionPolicy": "Never",
        "globalDefault": False,
        "description": "Hub on Demand: room held for a class; any real server preempts it.",
    }


def resource_quotas(spec: HubSpec, settings: RenderSettings | None = None) -> list[Manifest]:
    """The ResourceQuota of each namespace: the users' one derived from the spec (see
    `quota_totals`) and capped by the installation's ceilings; the hub's fixed."""
    caps = settings.quota_caps if settings else {}
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": _meta(spec, QUOTA_NAME),
            "spec": {"hard": hub_quota_totals()},
        },
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": _meta(spec, QUOTA_NAME, spec.users_namespace),
            "spec": {"hard": capped(quota_totals(spec), caps)},
        },
    ]


def _largest_option(spec: HubSpec) -> tuple[float, float]:
    options = spec.server_options or (hubconfig.DEFAULT_OPTION,)
    return max(o.cpu_limit for o in options), max(o.mem_limit_gib for o in options)


# Defaults for containers that state no resources, so that the quotas admit them.
CONTAINER_DEFAULTS = {
    "type": "Container",
    "defaultRequest": {
        "cpu": "100m",
        "memory": "128Mi",
        "ephemeral-storage": f"{EPHEMERAL_REQUEST_GIB}Gi",
    },
    "default": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": f"{EPHEMERAL_LIMIT_GIB}Gi"},
}


def _users_limits(spec: HubSpec) -> dict[str, Any]:
    """The container limits where users run things: the defaults, and at most the hub's
    largest server option per container."""
    cpu, mem = _largest_option(spec)
    return {
        **CONTAINER_DEFAULTS,
        "default": {
            "cpu": _cpu(min(cpu, 1.0)),
            "memory": _mem(min(mem, 1.0)),
            "ephemeral-storage": f"{EPHEMERAL_LIMIT_GIB}Gi",
        },
        "max": {
            "cpu": _cpu(cpu),
            "memory": _mem(mem),
            "ephemeral-storage": f"{EPHEMERAL_LIMIT_GIB}Gi",
        },
    }


def limit_ranges(spec: HubSpec) -> list[Manifest]:
    """Defaults for containers that state no resources (so that the quotas admit them), and in
    the users' namespace a maximum per container: the hub's largest server option."""
    return [
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": _meta(spec, LIMITS_NAME),
            "spec": {"limits": [CONTAINER_DEFAULTS]},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": _meta(spec, LIMITS_NAME, spec.users_namespace),
            "spec": {"limits": [_users_limits(spec)]},
        },
    ]


def _policy(
    spec: HubSpec, name: str, pod_selector: dict, ingress: list[dict], namespace: str | None = None
) -> Manifest:
    body: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": ["Ingress"]}
    # No rules is written as no field: the API server drops an empty list, and applying one
    # would count as a change on every re-apply.
    if ingress:
        body["ingress"] = ingress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, name, namespace),
        "spec": body,
    }


def _component(name: str) -> dict[str, Any]:
    return {"matchLabels": {"app.kubernetes.io/component": name}}


def _in_namespace(namespace_name: str, *components: str) -> list[dict[str, Any]]:
    """Peers: pods of these components in the named namespace."""
    where = {"matchLabels": {"kubernetes.io/metadata.name": namespace_name}}
    return [{"namespaceSelector": where, "podSelector": _component(name)} for name in components]


def network_policies(spec: HubSpec, settings: RenderSettings) -> list[Manifest]:
    """Isolate both namespaces (z2jh's model, per component, across the two namespaces).

    Nothing reaches a pod unless a policy names it: the ingress controller's namespace
    reaches the proxy's public port; the hub reaches the proxy's API; user servers reach the
    hub's API; the proxy and the hub reach user servers. Jobs are reached by nothing, and reach
    nothing of the hub (they cannot carry a user server's labels: see `admission`).
    """
    hub_ns, users_ns = spec.namespace, spec.users_namespace
    ingress_controller = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": settings.ingress_namespace}
        }
    }
    return [
        _policy(spec, "default-deny-ingress", {}, []),
        _policy(
            spec,
            "proxy",
            _component("proxy"),
            [
                {
                    "from": [ingress_controller, *_in_namespace(hub_ns, "hub")],
                    "ports": [{"port": 8000}],
                },
                {"from": _in_namespace(hub_ns, "hub"), "ports": [{"port": 8001}]},
            ],
        ),
        _policy(
            spec,
            "hub",
            _component("hub"),
            [
                {
                    "from": [
                        *_in_namespace(hub_ns, "proxy"),
                        *_in_namespace(users_ns, "singleuser-server"),
                    ],
                    "ports": [{"port": 8081}],
                }
            ],
        ),
        _policy(spec, "default-deny-ingress", {}, [], users_ns),
        _policy(
            spec,
            "singleuser",
            _component("singleuser-server"),
            [{"from": _in_namespace(hub_ns, "proxy", "hub"), "ports": [{"port": 8888}]}],
            users_ns,
        ),
    ]


# Addresses that user workloads never reach with restricted egress: private, shared (carrier
# NAT), loopback, link-local (the cloud metadata address 169.254.169.254) and "this network";
# for IPv6 unique-local, link-local and loopback (the API server refuses IPv4-mapped ones).
PRIVATE_RANGES = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
)
PRIVATE_RANGES_V6 = ("fc00::/7", "fe80::/10", "::1/128")
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def egress_restricted(spec: HubSpec, settings: RenderSettings) -> bool:
    """Whether user workloads' egress is restricted: unless the installation or an admin for
    this hub opened it."""
    return settings.egress != "open" and not spec.open_egress


def _dns_rule() -> dict[str, Any]:
    """Egress to the cluster's DNS."""
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    return {"to": [{"namespaceSelector": kube_system}], "ports": DNS_PORTS}


def _outside_rules(spec: HubSpec, settings: RenderSettings) -> list[dict[str, Any]]:
    """Egress beyond the cluster: restricted to addresses outside every private range (and the
    installation's denied ones), or anything when open."""
    if not egress_restricted(spec, settings):
        return [{}]
    world = [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE_RANGES, *settings.denied_egress]}},
        {"ipBlock": {"cidr": "::/0", "except": list(PRIVATE_RANGES_V6)}},
    ]
    return [{"to": world}]


def _egress_policy(
    spec: HubSpec, name: str, pods: dict, rules: list[dict], namespace: str
) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, name, namespace),
        "spec": {"podSelector": pods, "policyTypes": ["Egress"], "egress": rules},
    }


def egress_policies(spec: HubSpec, settings: RenderSettings) -> list[Manifest]:
    """Egress of what users run and of the proxy.

    The proxy reaches the hub and user servers only. User servers and jobs reach the cluster's
    DNS, the hub's API (user servers), and, restricted (the default), the public internet
    outside every private range and the addresses the installation names as its API server's
    (`RenderSettings.denied_egress`); open, everything. The hub itself is not limited: it talks
    to the Kubernetes API and the identity provider.
    """
    hub_ns, users_ns = spec.namespace, spec.users_namespace
    dns, outside = _dns_rule(), _outside_rules(spec, settings)
    egress = functools.partial(_egress_policy, spec)

    policies = [
        egress(
            "proxy-egress",
            _component("proxy"),
            [
                dns,
                {"to": _in_namespace(hub_ns, "hub"), "ports": [{"port": 8081}]},
                {"to": _in_namespace(users_ns, "singleuser-server"), "ports": [{"port": 8888}]},
            ],
            hub_ns,
        ),
        egress(
            "egress",
            {},
            [dns, {"to": _in_namespace(hub_ns, "hub"), "ports": [{"port": 8081}]}, *outside],
            users_ns,
        ),
    ]
    if spec.jobs_access and settings.api_server_cidrs and egress_restricted(spec, settings):
        # Members with the jobs role create their Jobs from their servers.
        api_server = [{"ipBlock": {"cidr": cidr}} for cidr in settings.api_server_cidrs]
        policies.append(
            egress(
                "api-server-egress", _component("singleuser-server"), [{"to": api_server}], users_ns
            )
        )
    return policies


def admission_params(
    spec: HubSpec, settings: RenderSettings, jobs_user: str | None = None
) -> Manifest:
    """What a users' or jobs namespace admits (read by the `admission` policies as their
    params): claims (`claim.<name>`: "ro" or "rw"), the catalogue's NFS exports
    (`nfs.<volume>`: "server:path" with "ro" or "rw"), priority classes (`priority.<name>`)
    and ServiceAccounts (`account.<name>`). The portal writes it; no user or hub can.

    In the users' namespace, pods run as `default` or as the jobs ServiceAccount of a user
    with Jobs; in that user's jobs namespace (`jobs_user`) as `default`, and no claim is
    granted there: claims live in the users' namespace.
    """
    accounts = ["default"]
    if jobs_user is None:
        accounts += [spec.jobs_account(user) for user in spec.jobs_users]
    data = {f"account.{name}": "yes" for name in accounts}
    if jobs_user is None and spec.shared_mode in ("ro", "rw") and spec.shared_size_gib:
        data[f"claim.{hubconfig.SHARED_PVC}"] = "rw"
    for volume in spec.external_volumes:
        mode = "ro" if volume.read_only else "rw"
        name = hubconfig.external_volume_name(volume.name)
        if volume.kind == "pvc" and jobs_user is None:
            data[f"claim.{name}"] = mode
        elif volume.kind == "nfs":
            data[f"nfs.{name}"] = f"{mode}:{volume.server}:{volume.path}"
    for name in settings.priority_classes:
        data[f"priority.{name}"] = "yes"
    if jobs_user is None:
        data[f"priority.{PLACEHOLDER_PRIORITY_CLASS}"] = "yes"
    where = spec.users_namespace if jobs_user is None else spec.jobs_namespace(jobs_user)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, ADMISSION_PARAMS, where),
        "data": data,
    }


def _role(
    spec: HubSpec, name: str, namespace: str, rules: list[dict], account: str
) -> list[Manifest]:
    """A Role in `namespace` and its binding to a ServiceAccount of the hub (`account`, in the
    namespace it lives in: the hub's for the hub, else the users')."""
    account_namespace = spec.namespace if account == HUB_SERVICE_ACCOUNT else spec.users_namespace
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(spec, name, namespace),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(spec, name, namespace),
            "subjects": [
                {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
            ],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        },
    ]


def _service_account(spec: HubSpec, name: str, namespace: str | None = None) -> Manifest:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(spec, name, namespace)}


def hub_rbac(spec: HubSpec) -> list[Manifest]:
    """The hub's ServiceAccount (in the hub's namespace) with exactly what KubeSpawner needs in
    the users' namespace: user pods and their home claims, and events to report spawn
    progress. It has no rights in its own namespace: nothing there reads the hub's Secret
    through the API."""
    manage = ["get", "watch", "list", "create", "delete"]
    return [
        _service_account(spec, HUB_SERVICE_ACCOUNT),
        *_role(
            spec,
            HUB_SERVICE_ACCOUNT,
            spec.users_namespace,
            [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "persistentvolumeclaims"],
                    "verbs": manage,
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
            ],
            HUB_SERVICE_ACCOUNT,
        ),
    ]


def jobs_objects(spec: HubSpec, settings: RenderSettings) -> list[Manifest]:
    """With jobs access, for each user with Jobs (`HubSpec.jobs_users`): a namespace of their
    own, where their Jobs run, and the ServiceAccount their server runs as (in the users'
    namespace), which may manage Jobs and read their pods and logs there and nowhere else. So
    no member sees, changes or deletes another's Jobs, and nobody with Jobs reads a user
    server's pod (whose spec holds that user's hub token).

    Each jobs namespace has the users' namespace's admission (no claims: those live in the
    users' namespace; the catalogue's NFS exports the hub was granted), Pod Security, egress,
    no ingress at all, and a quota of one user's servers (`jobs_quota_totals`).
    """
    manage = ["get", "watch", "list", "create", "delete", "patch", "update"]
    read = ["get", "watch", "list"]
    rules = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": manage},
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": read},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]
    caps = settings.quota_caps
    objects: list[Manifest] = []
    for user in spec.jobs_users:
        where, account = spec.jobs_namespace(user), spec.jobs_account(user)
        jobs_namespace = _namespace(spec, where, ROLE_JOBS, spec.pod_security)
        jobs_namespace["metadata"]["annotations"][ANNOTATION_MEMBER] = user
        objects += [
            jobs_namespace,
            *portal_binding(spec, settings, where),
            admission_params(spec, settings, user),
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": _meta(spec, QUOTA_NAME, where),
                "spec": {"hard": capped(jobs_quota_totals(spec), caps)},
            },
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": _meta(spec, LIMITS_NAME, where),
                "spec": {"limits": [_users_limits(spec)]},
            },
            _policy(spec, "default-deny-ingress", {}, [], where),
            _egress_policy(
                spec, "egress", {}, [_dns_rule(), *_outside_rules(spec, settings)], where
            ),
            _service_account(spec, account, spec.users_namespace),
            *_role(spec, JOBS_ROLE, where, rules, account),
        ]
    return objects


def hub_secret(spec: HubSpec, hub_secrets: HubSecrets) -> Manifest:
    """Generated hub secrets (cookie secret, proxy token, crypt key, tokens)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(spec, SECRET_NAME),
        "type": "Opaque",
        "data": hub_secrets.data(),
    }


def hub_config_map(spec: HubSpec, settings: RenderSettings) -> Manifest:
    """The static jupyterhub_config.py and the hub's values it reads."""
    values = hubconfig.hub_values(
        spec, settings.identity_provider.for_hub(spec), placement=settings.placement()
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, CONFIG_MAP_NAME),
        "data": {
            hubconfig.CONFIG_FILE_KEY: hubconfig.CONFIG_FILE.read_text(),
            hubconfig.VALUES_FILE_KEY: json.dumps(values, indent=2, sort_keys=True),
        },
    }


def members_config_map(spec: HubSpec) -> Manifest:
    """The hub's members and tiers, which the hub reads at each login and spawn; kept apart
    from `hub_config_map` (and its checksum) so that a change restarts nothing."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, hubconfig.MEMBERS_CONFIG_MAP),
        "data": {
            hubconfig.MEMBERS_FILE_KEY: json.dumps(
                hubconfig.members_values(spec), indent=2, sort_keys=True
            ),
        },
    }


def _pvc(
    spec: HubSpec,
    name: str,
    size_gib: int,
    mode: str,
    storage_class: str,
    namespace: str | None = None,
) -> Manifest:
    body: dict[str, Any] = {
        "accessModes": [mode],
        "resources": {"requests": {"storage": f"{size_gib}Gi"}},
    }
    if storage_class:
        body["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(spec, name, namespace),
        "spec": body,
    }


def volumes(spec: HubSpec, settings: RenderSettings) -> list[Manifest]:
    """The hub's state volume (in its namespace), the shared project volume and external
    volumes from a class (in the users')."""
    claims = [_pvc(spec, hubconfig.HUB_DB_PVC, HUB_DB_GIB, "ReadWriteOnce", settings.storage_class)]
    if spec.shared_mode != "none" and spec.shared_size_gib:
        claims.append(
            _pvc(
                spec,
                hubconfig.SHARED_PVC,
                spec.shared_size_gib,
                "ReadWriteMany",
                settings.storage_class,
                spec.users_namespace,
            )
        )
    for volume in spec.external_volumes:
        if volume.kind == "pvc":
            claims.append(
                _pvc(
                    spec,
                    hubconfig.external_volume_name(volume.name),
                    volume.size_gib or 1,
                    "ReadOnlyMany" if volume.read_only else "ReadWriteMany",
                    volume.storage_class,
                    spec.users_namespace,
                )
            )
    return claims


def _secret_env(name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": key}}}


def _deployment(
    spec: HubSpec, component: str, container: dict[str, Any], pod: dict[str, Any]
) -> Manifest:
    labels = {"app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/component": component}
    template_meta: dict[str, Any] = {"labels": {**hub_labels(spec), **labels}}
    if "annotations" in pod:
        template_meta["annotations"] = pod.pop("annotations")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, component, **labels),
        "spec": {
            "replicas": 0 if spec.suspended else 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {**labels, LABEL_HUB_ID: str(spec.hub_id)}},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    **pod,
                    "containers": [
                        {
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            **container,
                        }
                    ],
                },
            },
        },
    }


def hub_deployment(spec: HubSpec, settings: RenderSettings, config: Manifest) -> Manifest:
    """The JupyterHub process, restarted whenever its configuration changes (not when its
    members change: see `members_config_map`)."""
    checksum = hashlib.sha256(json.dumps(config["data"], sort_keys=True).encode()).hexdigest()[:16]
    return _deployment(
        spec,
        "hub",
        {
            "name": "hub",
            "image": settings.hub_image,
            "args": [
                "jupyterhub",
                "--config",
                f"{hubconfig.CONFIG_MOUNT_PATH}/{hubconfig.CONFIG_FILE_KEY}",
            ],
            "env": [
                {
                    "name": hubconfig.VALUES_FILE_ENV,
                    "value": f"{hubconfig.CONFIG_MOUNT_PATH}/{hubconfig.VALUES_FILE_KEY}",
                },
                {
                    "name": hubconfig.MEMBERS_FILE_ENV,
                    "value": f"{hubconfig.MEMBERS_MOUNT_PATH}/{hubconfig.MEMBERS_FILE_KEY}",
                },
                _secret_env(hubconfig.ENV_COOKIE_SECRET, HubSecrets.KEYS["cookie_secret"]),
                _secret_env(hubconfig.ENV_PROXY_AUTH_TOKEN, HubSecrets.KEYS["proxy_token"]),
                _secret_env(hubconfig.ENV_CRYPT_KEY, HubSecrets.KEYS["crypt_key"]),
                _secret_env(hubconfig.ENV_PORTAL_SERVICE_TOKEN, HubSecrets.KEYS["portal_token"]),
                _secret_env(
                    hubconfig.ENV_OAUTH_CLIENT_SECRET, HubSecrets.KEYS["oauth_client_secret"]
                ),
            ],
            "ports": [{"name": "http", "containerPort": 8081}],
            "volumeMounts": [
                {"name": "config", "mountPath": hubconfig.CONFIG_MOUNT_PATH, "readOnly": True},
                # A directory mount (not subPath): the kubelet refreshes it in place.
                {"name": "members", "mountPath": hubconfig.MEMBERS_MOUNT_PATH, "readOnly": True},
                {"name": "state", "mountPath": hubconfig.HUB_STATE_MOUNT_PATH},
            ],
            "resources": {
                "requests": {"cpu": "200m", "memory": "512Mi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            },
            "readinessProbe": {"httpGet": {"path": "/hub/health", "port": "http"}},
        },
        {
            "annotations": {ANNOTATION_CONFIG_CHECKSUM: checksum},
            **settings.placement(),
            "serviceAccountName": HUB_SERVICE_ACCOUNT,
            "volumes": [
                {"name": "config", "configMap": {"name": CONFIG_MAP_NAME}},
                {"name": "members", "configMap": {"name": hubconfig.MEMBERS_CONFIG_MAP}},
                {
                    "name": "state",
                    "persistentVolumeClaim": {"claimName": hubconfig.HUB_DB_PVC},
                },
            ],
        },
    )


def proxy_deployment(spec: HubSpec, settings: RenderSettings) -> Manifest:
    """configurable-http-proxy, the hub's public entry point."""
    return _deployment(
        spec,
        "proxy",
        {
            "name": "chp",
            "image": settings.proxy_image,
            "args": [
                "configurable-http-proxy",
                "--ip=",
                "--api-ip=",
                "--api-port=8001",
                "--default-target=http://hub:8081",
                "--error-target=http://hub:8081/hub/error",
                "--port=8000",
            ],
            "env": [_secret_env(hubconfig.ENV_PROXY_AUTH_TOKEN, HubSecrets.KEYS["proxy_token"])],
            "ports": [
                {"name": "http", "containerPort": 8000},
                {"name": "api", "containerPort": 8001},
            ],
            "resources": {
                "requests": {"cpu": "200m", "memory": "512Mi"},
                "limits": {"cpu": "500m", "memory": "1Gi"},
            },
            "readinessProbe": {"httpGet": {"path": "/_chp_healthz", "port": "http"}},
        },
        {**settings.placement(), "automountServiceAccountToken": False},
    )


def _service(spec: HubSpec, name: str, component: str, ports: list[dict]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, name),
        "spec": {
            "type": "ClusterIP",
            "selector": {
                "app.kubernetes.io/component": component,
                LABEL_HUB_ID: str(spec.hub_id),
            },
            "ports": ports,
        },
    }


def service_objects(spec: HubSpec) -> list[Manifest]:
    """hub, proxy-api and proxy-public Services."""
    return [
        _service(spec, "hub", "hub", [{"name": "http", "port": 8081, "targetPort": "http"}]),
        _service(spec, "proxy-api", "proxy", [{"name": "api", "port": 8001, "targetPort": "api"}]),
        _service(
            spec, "proxy-public", "proxy", [{"name": "http", "port": 80, "targetPort": "http"}]
        ),
    ]


def ingress(spec: HubSpec, settings: RenderSettings) -> Manifest:
    """Ingress for `<slug>.<HUBS_DOMAIN>` with TLS."""
    body: dict[str, Any] = {
        "tls": [{"hosts": [spec.host], "secretName": f"{spec.namespace}-tls"}],
        "rules": [
            {
                "host": spec.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": "proxy-public", "port": {"name": "http"}}
                            },
                        }
                    ]
                },
            }
        ],
    }
    if settings.ingress_class:
        body["ingressClassName"] = settings.ingress_class
    meta = _meta(spec, "jupyterhub")
    if settings.ingress_annotations:
        meta["annotations"] = dict(settings.ingress_annotations)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": body}


def _placeholder(spec: HubSpec, settings: RenderSettings, name: str, count: int, gpu: bool):
    """Sleeping pods sized like the hub's largest server (with its GPUs and node placement
    when `gpu`), at the placeholder PriorityClass."""
    cpu_request, _, mem_request, _ = _largest_request(spec)
    requests = {"cpu": _cpu(cpu_request), "memory": _mem(mem_request)}
    limits = dict(requests)
    pod: dict[str, Any] = {
        "priorityClassName": PLACEHOLDER_PRIORITY_CLASS,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "pause",
                "image": settings.placeholder_image,
                "resources": {"requests": requests, "limits": limits},
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 65535,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True,
                },
            }
        ],
    }
    if gpu and spec.gpu:
        amount = str(spec.gpu.count)
        requests[spec.gpu.resource_name] = limits[spec.gpu.resource_name] = amount
        pod["nodeSelector"] = {spec.gpu.node_label_key: spec.gpu.product}
        pod["tolerations"] = [
            {"key": spec.gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"}
        ]
    labels = {**hub_labels(spec), "app.kubernetes.io/component": COMPONENT_PLACEHOLDER}
    meta = _meta(
        spec, name, spec.users_namespace, **{"app.kubernetes.io/component": COMPONENT_PLACEHOLDER}
    )
    match = {LABEL_HUB_ID: str(spec.hub_id), "hub-on-demand.io/placeholder": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": count,
            "selector": {"matchLabels": match},
            "template": {"metadata": {"labels": {**labels, **match}}, "spec": pod},
        },
    }


def placeholders(spec: HubSpec, settings: RenderSettings | None = None) -> list[Manifest]:
    """The placeholder servers that hold room for the hub's classes now (none between them)."""
    settings = settings or RenderSettings()
    found = []
    if spec.warm_servers:
        found.append(_placeholder(spec, settings, PLACEHOLDERS, spec.warm_servers, gpu=False))
    if spec.warm_gpu_servers and spec.gpu:
        found.append(
            _placeholder(spec, settings, GPU_PLACEHOLDERS, spec.warm_gpu_servers, gpu=True)
        )
    return found


def render_hub(
    spec: HubSpec, settings: RenderSettings | None = None, hub_secrets: HubSecrets | None = None
) -> list[Manifest]:
    """All objects of a hub, in the order they are applied: the namespaces and their policies
    first, then identities, secrets and configuration, then storage and workloads.

    `hub_secrets` are the hub's existing secrets (HubSecrets.from_secret); new ones are
    generated when it has none.
    """
    settings = settings or RenderSettings()
    config = hub_config_map(spec, settings)
    return [
        namespace(spec),
        *portal_binding(spec, settings, spec.namespace),
        users_namespace(spec),
        *portal_binding(spec, settings, spec.users_namespace),
        admission_params(spec, settings),
        *resource_quotas(spec, settings),
        *limit_ranges(spec),
        *network_policies(spec, settings),
        *egress_policies(spec, settings),
        *hub_rbac(spec),
        *jobs_objects(spec, settings),
        hub_secret(spec, hub_secrets or HubSecrets.generate()),
        config,
        members_config_map(spec),
        *volumes(spec, settings),
        *service_objects(spec),
        hub_deployment(spec, settings, config),
        proxy_deployment(spec, settings),
        ingress(spec, settings),
        *placeholders(spec, settings),
    ]
