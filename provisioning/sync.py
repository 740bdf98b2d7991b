"""Make a hub's namespace match its spec: apply every rendered object, keep its secrets,
and delete the objects of this hub that the spec no longer asks for."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from provisioning import k8s
from provisioning.render import (
    SECRET_NAME,
    HubSecrets,
    Manifest,
    RenderSettings,
    render_hub,
    selector,
)
from provisioning.spec import HubSpec

# Kinds a hub's spec can stop asking for; listed by label, so only objects that carry this
# hub's labels are ever deleted (never user home volumes, which KubeSpawner creates).
PRUNABLE_KINDS = (
    "NetworkPolicy",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Service",
    "Deployment",
    "Ingress",
)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    applied: int
    pruned: tuple[str, ...]


def desired_objects(
    api: client.ApiClient, spec: HubSpec, settings: RenderSettings
) -> list[Manifest]:
    """The hub's objects as they should be, with the secrets it already has (if any)."""
    existing = k8s.get(api, "Secret", SECRET_NAME, spec.namespace)
    return render_hub(spec, settings, HubSecrets.from_secret(existing))


def prune(api: client.ApiClient, spec: HubSpec, desired: list[Manifest]) -> tuple[str, ...]:
    """Delete this hub's objects that are not in `desired`; return what was deleted."""
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    deleted = []
    for kind in PRUNABLE_KINDS:
        for item in k8s.list_objects(api, kind, spec.namespace, selector(spec.hub_id)):
            name = item["metadata"]["name"]
            if (kind, name) not in wanted and k8s.delete(api, kind, name, spec.namespace):
                deleted.append(f"{kind} {name}")
    return tuple(deleted)


def sync_hub(api: client.ApiClient, spec: HubSpec, settings: RenderSettings) -> SyncResult:
    """Apply every object of the hub in order, then prune what the spec no longer needs.

    Raises k8s.ClusterError naming the object the cluster refused.
    """
    desired = desired_objects(api, spec, settings)
    for manifest in desired:
        try:
            k8s.apply(api, manifest)
        except k8s.ClusterError as error:
            what = f"{manifest['kind']} {manifest['metadata']['name']}"
            raise k8s.ClusterError(
                f"The cluster refused {what}: {error.message}",
                transient=error.transient,
                status=error.status,
            ) from error
    return SyncResult(applied=len(desired), pruned=prune(api, spec, desired))
