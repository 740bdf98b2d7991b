"""Make a hub's namespace match its spec: apply every rendered object, keep its secrets,
and delete the objects of this hub that the spec no longer asks for."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from provisioning import k8s
from provisioning.admission import jobs_admission
from provisioning.render import (
    LABEL_HUB_ID,
    MANAGED_BY,
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


def foreign_namespace(api: client.ApiClient, namespace: str, hub_id: int) -> str | None:
    """Why the hub may not use the namespace of its name, or None: it does not exist yet, or
    this portal made it for this hub (its labels say so). A namespace someone made by hand,
    another hub's, or another portal's on the same cluster is never applied into, adopted or
    deleted."""
    existing = k8s.get(api, "Namespace", namespace)
    if existing is None:
        return None
    labels = (existing.get("metadata") or {}).get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
        whose = "it was not made by this portal"
    elif labels.get(LABEL_HUB_ID) != str(hub_id):
        whose = f"it belongs to hub {labels.get(LABEL_HUB_ID) or '(none)'}, maybe of another portal"
    else:
        return None
    return (
        f"The namespace {namespace} already exists and is not this hub's: {whose}. The portal "
        "leaves it alone; choose another slug or have a cluster admin remove it."
    )


def desired_objects(
    api: client.ApiClient, spec: HubSpec, settings: RenderSettings, login_secret: str = ""
) -> list[Manifest]:
    """The hub's objects as they should be, with the secrets it already has (if any) and the
    secret of its login client at the identity provider (when the portal knows it)."""
    existing = k8s.get(api, "Secret", SECRET_NAME, spec.namespace)
    return render_hub(spec, settings, HubSecrets.from_secret(existing, login_secret))


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


def sync_hub(
    api: client.ApiClient, spec: HubSpec, settings: RenderSettings, login_secret: str = ""
) -> SyncResult:
    """Apply every object of the hub in order, then prune what the spec no longer needs.

    `login_secret` is the secret of the hub's OAuth client at the identity provider; without
    it the hub keeps the one it has.

    Raises k8s.ClusterError naming the object the cluster refused, or saying why the
    namespace of the hub's name is not its own (see foreign_namespace).
    """
    conflict = foreign_namespace(api, spec.namespace, spec.hub_id)
    if conflict:
        raise k8s.ClusterError(conflict, transient=False, status=409)
    desired = desired_objects(api, spec, settings, login_secret)
    # Cluster-wide and the same for every hub: in place before a member can create a Job.
    admission = jobs_admission() if spec.jobs_access else []
    for manifest in [*admission, *desired]:
        try:
            k8s.apply(api, manifest)
        except k8s.ClusterError as error:
            what = f"{manifest['kind']} {manifest['metadata']['name']}"
            raise k8s.ClusterError(
                f"The cluster refused {what}: {error.message}",
                transient=error.transient,
                status=error.status,
            ) from error
    return SyncResult(applied=len(admission) + len(desired), pruned=prune(api, spec, desired))
