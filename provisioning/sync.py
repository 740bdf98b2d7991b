"""Make a hub's namespaces match its spec: apply every rendered object, keep its secrets, and
delete the objects (and jobs namespaces) of this hub that the spec no longer asks for."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kubernetes import client

from provisioning import k8s, migrate
from provisioning.admission import users_admission
from provisioning.render import (
    LABEL_HUB_ID,
    MANAGED_BY,
    PORTAL_BINDING,
    SECRET_NAME,
    HubSecrets,
    Manifest,
    RenderSettings,
    render_hub,
    selector,
)
from provisioning.spec import JOBS_NAMESPACE_INFIX, HubSpec

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
# Kinds the portal reads only inside a hub's own namespace, never across the cluster: with
# least privilege it may not read any other Secret (the portal keeps a hub's Secrets in the
# hub's namespace).
HUB_NAMESPACE_ONLY_KINDS = ("Secret",)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    applied: int
    pruned: tuple[str, ...]
    # Claims moved from the hub's namespace to the users' (hubs of the one-namespace layout).
    moved: tuple[str, ...] = ()


def _whose(existing: dict) -> str | None:
    """Why an existing namespace is not this portal's, or None."""
    labels = (existing.get("metadata") or {}).get("labels") or {}
    if labels.get("app.kubernetes.io/managed-by") != MANAGED_BY:
        return "it was not made by this portal"
    return None


def is_hub_namespace(name: str, slug: str) -> bool:
    """Whether a namespace's name is one of the hub's: its own, its users' or a jobs one."""
    return name in (f"hub-{slug}", f"hub-{slug}-users") or name.startswith(
        f"hub-{slug}{JOBS_NAMESPACE_INFIX}"
    )


def is_own_namespace(item: dict, slug: str, hub_id: int) -> bool:
    """Whether a namespace (as read) is one this portal made for this hub: one of the hub's
    names, labelled with the hub's id."""
    if (item["metadata"].get("labels") or {}).get(LABEL_HUB_ID) != str(hub_id):
        return False
    return is_hub_namespace(item["metadata"]["name"], slug)


def own_namespaces(api: client.ApiClient, slug: str, hub_id: int) -> list[dict]:
    """The namespaces that exist and that this portal made for this hub (one list call): its
    own, its users' and its users' jobs namespaces, including those of users who lost Jobs.
    One of the hub's names that is not its own (made by hand, another portal's) is never
    among them."""
    found = k8s.list_objects(api, "Namespace", None, selector(hub_id))
    return sorted(
        (item for item in found if is_own_namespace(item, slug, hub_id)),
        key=lambda item: item["metadata"]["name"],
    )


def foreign_namespace(
    api: client.ApiClient, namespace: str, hub_id: int, existing: dict | None = None
) -> str | None:
    """Why the hub may not use the namespace of its name, or None: it does not exist yet, or
    this portal made it for this hub (its labels say so). A namespace someone made by hand,
    another hub's, or another portal's on the same cluster is never applied into, adopted or
    deleted. `existing` is the namespace as already read (else it is read here)."""
    existing = existing if existing is not None else k8s.get(api, "Namespace", namespace)
    if existing is None:
        return None
    labels = (existing.get("metadata") or {}).get("labels") or {}
    whose = _whose(existing)
    if whose is None and labels.get(LABEL_HUB_ID) != str(hub_id):
        whose = f"it belongs to hub {labels.get(LABEL_HUB_ID) or '(none)'}, maybe of another portal"
    if whose is None:
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


def prunable(kind: str, namespace: str, name: str, spec: HubSpec) -> bool:
    """Whether an object of this hub that its spec no longer asks for may be deleted: never a
    users' claim left in the hub's namespace (a move that could not finish; see migrate)."""
    if kind not in PRUNABLE_KINDS:
        return False
    return not (
        kind == "PersistentVolumeClaim"
        and namespace == spec.namespace
        and migrate.is_users_claim(name)
    )


def prune(api: client.ApiClient, spec: HubSpec, desired: list[Manifest]) -> tuple[str, ...]:
    """Delete this hub's objects that are not in `desired`; return what was deleted."""
    wanted = {
        (m["kind"], m["metadata"].get("namespace", ""), m["metadata"]["name"]) for m in desired
    }
    deleted = []
    for found in own_namespaces(api, spec.slug, spec.hub_id):
        namespace = found["metadata"]["name"]
        if namespace not in spec.namespaces and not found["metadata"].get("deletionTimestamp"):
            # A user who no longer has Jobs: their namespace goes, and their Jobs with it.
            k8s.delete_namespace(api, namespace)
            deleted.append(f"Namespace {namespace}")
    # One cluster-wide call per kind; only what is in the hub's own namespaces counts (hub ids
    # are unique within one portal only).
    ours = set(spec.namespaces)
    for kind in PRUNABLE_KINDS:
        if kind in HUB_NAMESPACE_ONLY_KINDS:
            found = k8s.list_objects(api, kind, spec.namespace, selector(spec.hub_id))
        else:
            found = k8s.list_objects(api, kind, None, selector(spec.hub_id), all_namespaces=True)
        for item in found:
            namespace, name = item["metadata"].get("namespace", ""), item["metadata"]["name"]
            if namespace not in ours or (kind, namespace, name) in wanted:
                continue
            if prunable(kind, namespace, name, spec) and k8s.delete(api, kind, name, namespace):
                where = "" if namespace == spec.namespace else f" (in {namespace})"
                deleted.append(f"{kind} {name}{where}")
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
    existing = {name: k8s.get(api, "Namespace", name) for name in spec.namespaces}
    for namespace, found in existing.items():
        conflict = foreign_namespace(api, namespace, spec.hub_id, found)
        if conflict:
            raise k8s.ClusterError(conflict, transient=False, status=409)
    # A hub none of whose namespaces exists yet has no secrets, nothing to move and nothing
    # to prune (saving a third of the calls when many hubs are created at once).
    new = not any(existing.values())
    if new:
        desired = render_hub(spec, settings, HubSecrets.from_secret(None, login_secret))
    else:
        desired = desired_objects(api, spec, settings, login_secret)
    # Cluster-wide and the same for every hub: in place before anything runs in the users'
    # namespace.
    admission = users_admission()
    for manifest in admission:
        _apply(api, manifest)
    moved = migrate.MoveResult() if new else migrate.move_to_users_namespace(api, spec, settings)
    for manifest in desired:
        _apply(api, manifest)
    if new:
        return SyncResult(applied=len(admission) + len(desired), pruned=())
    migrate.finish_moves(api, spec)
    return SyncResult(
        applied=len(admission) + len(desired),
        pruned=prune(api, spec, desired),
        moved=moved.claims,
    )


def _apply(api: client.ApiClient, manifest: Manifest) -> None:
    """Apply one object; a refusal names the object. After the portal's own RoleBinding in a
    namespace, wait until its rights there are in force (the API server's authorizer learns
    of a new binding within moments, not at once)."""
    try:
        k8s.apply(api, manifest)
    except k8s.ClusterError as error:
        what = f"{manifest['kind']} {manifest['metadata']['name']}"
        raise k8s.ClusterError(
            f"The cluster refused {what}: {error.message}",
            transient=error.transient,
            status=error.status,
        ) from error
    if manifest["kind"] == "RoleBinding" and manifest["metadata"]["name"] == PORTAL_BINDING:
        _wait_for_rights(api, manifest["metadata"]["namespace"])


# How long the portal waits for its rights in a namespace it just bound them in.
RIGHTS_WAIT_SECONDS = 10.0


def _wait_for_rights(api: client.ApiClient, namespace: str) -> None:
    deadline = time.monotonic() + RIGHTS_WAIT_SECONDS
    while not k8s.may(api, "patch", "configmaps", namespace):
        if time.monotonic() > deadline:
            raise k8s.ClusterError(
                f"The portal's RoleBinding in {namespace} gives it no rights there after "
                f"{RIGHTS_WAIT_SECONDS:.0f} s: check the ClusterRole HUB_PORTAL_ROLE names",
                transient=True,
            )
        time.sleep(0.1)
