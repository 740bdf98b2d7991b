"""Render the Kubernetes objects of one hub from its spec, as plain dicts ready to apply.

Every object carries the portal's labels (managed-by, hub id, owner) so that the portal can
list a hub's objects with one label-selected call per kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from provisioning.spec import HubSpec

FIELD_MANAGER = "hub-on-demand"
MANAGED_BY = "hub-on-demand"
LABEL_HUB_ID = "hub-on-demand.io/hub-id"
LABEL_OWNER = "hub-on-demand.io/owner"
ANNOTATION_OWNER = "hub-on-demand.io/owner"

# Pods the hub itself runs besides user servers (hub, proxy, room for a rolling update).
SYSTEM_PODS = 4
SYSTEM_CPU = 1.0
SYSTEM_MEM_GIB = 2.0
HUB_DB_GIB = 1

Manifest = dict[str, Any]


@dataclass(frozen=True)
class RenderSettings:
    """Installation-wide choices that are not part of a hub's spec."""

    hub_image: str = "quay.io/jupyterhub/k8s-hub:4.3.1"
    proxy_image: str = "quay.io/jupyterhub/configurable-http-proxy:5.0.1"
    ingress_class: str = ""
    ingress_annotations: dict[str, str] = field(default_factory=dict)
    # Namespace of the ingress controller, the only one allowed to reach a hub's proxy.
    ingress_namespace: str = "ingress-nginx"


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


def selector(spec: HubSpec) -> str:
    """Label selector that finds all objects of this hub."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_HUB_ID}={spec.hub_id}"


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
        "persistentvolumeclaims": str(spec.expected_users + 2),
        "requests.storage": (
            f"{spec.expected_users * spec.home_size_gib + spec.shared_size_gib + HUB_DB_GIB}Gi"
        ),
    }
    gpus = spec.gpu.count * servers if spec.gpu else 0
    resource = spec.gpu.resource_name if spec.gpu else "nvidia.com/gpu"
    hard[f"requests.{resource}"] = str(gpus)
    return hard


def resource_quota(spec: HubSpec) -> Manifest:
    """ResourceQuota derived from the spec (see `quota_totals`)."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(spec, "hub-quota"),
        "spec": {"hard": quota_totals(spec)},
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


def network_policy(spec: HubSpec, settings: RenderSettings) -> Manifest:
    """Isolate the namespace: pods accept traffic from their own namespace only, and the
    proxy additionally from the ingress controller's namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, "hub-isolation"),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {}}]},
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {
                                    "kubernetes.io/metadata.name": settings.ingress_namespace
                                }
                            }
                        }
                    ],
                    "ports": [{"port": 8000, "protocol": "TCP"}],
                },
            ],
        },
    }


def _deployment(spec: HubSpec, component: str, container: dict[str, Any]) -> Manifest:
    labels = {"app.kubernetes.io/name": "jupyterhub", "app.kubernetes.io/component": component}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, component, **labels),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {**labels, LABEL_HUB_ID: str(spec.hub_id)}},
            "template": {
                "metadata": {"labels": {**hub_labels(spec), **labels}},
                "spec": {
                    "automountServiceAccountToken": component == "hub",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
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


def hub_deployment(spec: HubSpec, settings: RenderSettings) -> Manifest:
    """The JupyterHub process."""
    return _deployment(
        spec,
        "hub",
        {
            "name": "hub",
            "image": settings.hub_image,
            "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"],
            "ports": [{"name": "http", "containerPort": 8081}],
            "resources": {
                "requests": {"cpu": "200m", "memory": "512Mi"},
                "limits": {"cpu": "500m", "memory": "1Gi"},
            },
            "readinessProbe": {"httpGet": {"path": "/hub/health", "port": "http"}},
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


def services(spec: HubSpec) -> list[Manifest]:
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


def render_hub(spec: HubSpec, settings: RenderSettings | None = None) -> list[Manifest]:
    """All objects of a hub, in the order they are applied (namespace and policy first)."""
    settings = settings or RenderSettings()
    return [
        namespace(spec),
        resource_quota(spec),
        limit_range(spec),
        network_policy(spec, settings),
        *services(spec),
        hub_deployment(spec, settings),
        proxy_deployment(spec, settings),
        ingress(spec, settings),
    ]
