"""Render the Kubernetes objects of one hub from its spec, as plain dicts ready to apply.

Every object carries the portal's labels (managed-by, hub id, owner) so that the portal can
list a hub's objects with one label-selected call per kind.
"""

from __future__ import annotations

import base64
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
SECRET_NAME = "hub"
CONFIG_MAP_NAME = "hub"
HUB_SERVICE_ACCOUNT = "hub"

# Pods the hub itself runs besides user servers (hub, proxy, room for a rolling update).
SYSTEM_PODS = 4
SYSTEM_CPU = 1.0
SYSTEM_MEM_GIB = 2.0
HUB_DB_GIB = 1

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
    # Egress of user servers and the proxy: "open", or "restricted" to their own namespace,
    # the cluster's DNS and addresses outside private ranges (the hub itself keeps talking
    # to the Kubernetes API).
    egress: str = "open"
    # Installation-wide ceilings on any hub's quota, e.g. {"requests.nvidia.com/gpu": "16"}.
    quota_caps: dict[str, str] = field(default_factory=dict)
    # The portal's OpenID Connect provider, which every hub logs its users in with.
    identity_provider: IdentityProvider = field(default_factory=lambda: IdentityProvider())


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


def _meta(spec: HubSpec, name: str, namespaced: bool = True, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**hub_labels(spec), **labels}}
    if namespaced:
        meta["namespace"] = spec.namespace
    return meta


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _mem(gib: float) -> str:
    return f"{round(gib * 1024)}Mi"


def namespace(spec: HubSpec) -> Manifest:
    """The hub's namespace, with Pod Security Admission labels.

    `baseline` is enforced: it refuses privileged pods and host access while allowing the
    images of the Jupyter stacks as they are; `restricted` is reported as warnings and audit
    entries, so owners see what a stricter policy would refuse.
    """
    meta = _meta(
        spec,
        spec.namespace,
        namespaced=False,
        **{
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
        },
    )
    meta["annotations"] = {ANNOTATION_OWNER: spec.owner}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def quota_totals(spec: HubSpec) -> dict[str, str]:
    """Namespace quota: expected users x servers each x the largest option, plus the hub."""
    servers = spec.expected_users * spec.notebooks_per_user
    options = spec.server_options
    external_claims = [v for v in spec.external_volumes if v.kind == "pvc"]
    external_gib = sum(v.size_gib or 1 for v in external_claims)
    cpu_request = max((o.cpu_guarantee for o in options), default=0.5)
    cpu_limit = max((o.cpu_limit for o in options), default=1.0)
    mem_request = max((o.mem_guarantee_gib for o in options), default=1.0)
    mem_limit = max((o.mem_limit_gib for o in options), default=2.0)
    hard = {
        "pods": str(servers + SYSTEM_PODS),
        "requests.cpu": _cpu(servers * cpu_request + SYSTEM_CPU),
        "limits.cpu": _cpu(servers * cpu_limit + SYSTEM_CPU),
        "requests.memory": _mem(servers * mem_request + SYSTEM_MEM_GIB),
        "limits.memory": _mem(servers * mem_limit + SYSTEM_MEM_GIB),
        # A home volume per user, the hub's state, the shared volume and external claims.
        # Homes are counted per server: a user's named servers share one home, but
        # KubeSpawner asks to create it at every start and quota admission charges that
        # request before the API server answers that the claim exists.
        "persistentvolumeclaims": str(servers + 2 + len(external_claims)),
        "requests.storage": (
            f"{servers * spec.home_size_gib + spec.shared_size_gib + HUB_DB_GIB + external_gib}Gi"
        ),
    }
    gpus = spec.gpu.count * servers if spec.gpu else 0
    resource = spec.gpu.resource_name if spec.gpu else "nvidia.com/gpu"
    hard[f"requests.{resource}"] = str(gpus)
    return hard


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
    """The hub's quota as numbers (cores, bytes, counts), held to the installation's ceilings:
    what the hub can hold at most, for limits that add up several hubs."""
    return {
        key: parse_quantity(value) for key, value in capped(quota_totals(spec), caps or {}).items()
    }


def resource_quota(spec: HubSpec, settings: RenderSettings | None = None) -> Manifest:
    """ResourceQuota derived from the spec (see `quota_totals`), capped by the installation's
    ceilings."""
    caps = settings.quota_caps if settings else {}
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(spec, "hub-quota"),
        "spec": {"hard": capped(quota_totals(spec), caps)},
    }


def limit_range(spec: HubSpec) -> Manifest:
    """Defaults for containers that state no resources, so the quota admits them."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(spec, "hub-defaults"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    "default": {"cpu": "1", "memory": "1Gi"},
                }
            ]
        },
    }


def _policy(spec: HubSpec, name: str, pod_selector: dict, ingress: list[dict]) -> Manifest:
    body: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": ["Ingress"]}
    # No rules is written as no field: the API server drops an empty list, and applying one
    # would count as a change on every re-apply.
    if ingress:
        body["ingress"] = ingress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, name),
        "spec": body,
    }


def _component(name: str) -> dict[str, Any]:
    return {"matchLabels": {"app.kubernetes.io/component": name}}


def _from_components(*names: str) -> list[dict[str, Any]]:
    return [{"podSelector": _component(name)} for name in names]


def network_policies(spec: HubSpec, settings: RenderSettings) -> list[Manifest]:
    """Isolate the namespace (z2jh's model, per component).

    Nothing outside the namespace reaches its pods, except the ingress controller's namespace,
    which reaches the proxy's public port only. Inside, the proxy and user servers reach the
    hub, and the proxy and the hub reach user servers. Egress stays open: user servers fetch
    packages and data.
    """
    same_namespace = {"podSelector": {}}
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
                {"from": [ingress_controller, same_namespace], "ports": [{"port": 8000}]},
                {"from": _from_components("hub"), "ports": [{"port": 8001}]},
            ],
        ),
        _policy(
            spec,
            "hub",
            _component("hub"),
            [{"from": _from_components("proxy", "singleuser-server"), "ports": [{"port": 8081}]}],
        ),
        _policy(
            spec,
            "singleuser",
            _component("singleuser-server"),
            [{"from": _from_components("proxy", "hub"), "ports": [{"port": 8888}]}],
        ),
    ]


PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]


def egress_policy(spec: HubSpec) -> Manifest:
    """With restricted egress: user servers and the proxy reach their own namespace, the
    cluster's DNS and addresses outside private ranges only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, "egress"),
        "spec": {
            "podSelector": {
                "matchExpressions": [
                    {
                        "key": "app.kubernetes.io/component",
                        "operator": "In",
                        "values": ["proxy", "singleuser-server"],
                    }
                ]
            },
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {}}]},
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            }
                        }
                    ],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                },
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]},
            ],
        },
    }


def _rbac(spec: HubSpec, name: str, rules: list[dict]) -> list[Manifest]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(spec, name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(spec, name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(spec, name),
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": spec.namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        },
    ]


def hub_rbac(spec: HubSpec) -> list[Manifest]:
    """The hub's ServiceAccount with exactly what KubeSpawner needs in its own namespace:
    user pods and their home PVCs, and events to report spawn progress."""
    manage = ["get", "watch", "list", "create", "delete"]
    return _rbac(
        spec,
        HUB_SERVICE_ACCOUNT,
        [
            {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"], "verbs": manage},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "watch", "list"]},
        ],
    )


def jobs_rbac(spec: HubSpec) -> list[Manifest]:
    """With jobs access: a ServiceAccount for user servers, limited to Jobs and Pods in the
    namespace (and within its quota)."""
    manage = ["get", "watch", "list", "create", "delete", "patch", "update"]
    return _rbac(
        spec,
        hubconfig.JOBS_SERVICE_ACCOUNT,
        [
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": manage},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch", "list", "delete"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ],
    )


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
    values = hubconfig.hub_values(spec, settings.identity_provider.for_hub(spec))
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


def _pvc(spec: HubSpec, name: str, size_gib: int, mode: str, storage_class: str) -> Manifest:
    body: dict[str, Any] = {
        "accessModes": [mode],
        "resources": {"requests": {"storage": f"{size_gib}Gi"}},
    }
    if storage_class:
        body["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(spec, name),
        "spec": body,
    }


def volumes(spec: HubSpec, settings: RenderSettings) -> list[Manifest]:
    """The hub's state volume, the shared project volume and external volumes from a class."""
    claims = [_pvc(spec, hubconfig.HUB_DB_PVC, HUB_DB_GIB, "ReadWriteOnce", settings.storage_class)]
    if spec.shared_mode != "none" and spec.shared_size_gib:
        claims.append(
            _pvc(
                spec,
                hubconfig.SHARED_PVC,
                spec.shared_size_gib,
                "ReadWriteMany",
                settings.storage_class,
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
        {"automountServiceAccountToken": False},
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


def render_hub(
    spec: HubSpec, settings: RenderSettings | None = None, hub_secrets: HubSecrets | None = None
) -> list[Manifest]:
    """All objects of a hub, in the order they are applied: the namespace and its policies
    first, then identities, secrets and configuration, then storage and workloads.

    `hub_secrets` are the hub's existing secrets (HubSecrets.from_secret); new ones are
    generated when it has none.
    """
    settings = settings or RenderSettings()
    config = hub_config_map(spec, settings)
    return [
        namespace(spec),
        resource_quota(spec, settings),
        limit_range(spec),
        *network_policies(spec, settings),
        *([egress_policy(spec)] if settings.egress == "restricted" else []),
        *hub_rbac(spec),
        *(jobs_rbac(spec) if spec.jobs_access else []),
        hub_secret(spec, hub_secrets or HubSecrets.generate()),
        config,
        members_config_map(spec),
        *volumes(spec, settings),
        *service_objects(spec),
        hub_deployment(spec, settings, config),
        proxy_deployment(spec, settings),
        ingress(spec, settings),
    ]
