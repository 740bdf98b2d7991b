"""Move a hub from the one-namespace layout to its two namespaces, keeping users' data.

Hubs made before the users' namespace existed ran user servers and jobs next to the hub, and
kept homes, the shared volume and external claims there. A claim cannot change namespace, but
the volume behind it can change claims: each claim's PersistentVolume is kept (reclaim policy
Retain), the old claim deleted, the volume's claim reference pointed at a claim of the same
name in the users' namespace, and that claim created bound to it; once it is bound, the volume
gets its reclaim policy back. A claim that was never bound moves as an empty claim.

User servers and members' jobs in the hub's namespace are stopped first (a claim in use cannot
go); users start their servers again in the users' namespace. The hub's own database claim
stays where it is. Everything here is idempotent: a move that stopped half-way (a claim still
in use, a refused request) goes on at the next sync or reconcile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kubernetes import client

from provisioning import hubconfig, k8s
from provisioning.render import (
    LABEL_HUB_ID,
    Manifest,
    RenderSettings,
    admission_params,
    users_namespace,
)
from provisioning.spec import HubSpec

# Field manager of the claims a move creates: their volumeName and storage class are not the
# portal's to apply (the regular apply leaves them out, and they cannot change).
MOVE_FIELD_MANAGER = "hub-on-demand-move"
# On a volume being moved: its reclaim policy before the move, and which hub moves it.
ANNOTATION_RECLAIM_POLICY = "hub-on-demand.io/reclaim-policy"
LABEL_MOVING = "hub-on-demand.io/moving-to"
# The old layout's mark: a NetworkPolicy for user servers in the hub's own namespace.
OLD_LAYOUT_POLICY = "singleuser"
USER_SERVER_SELECTOR = "component=singleuser-server"
CLAIM_GONE_SECONDS = 20.0


@dataclass(frozen=True)
class MoveResult:
    """What one move did: claims moved (bound ones kept their volume), servers and jobs
    stopped."""

    claims: tuple[str, ...] = ()
    stopped: int = 0


def is_users_claim(name: str) -> bool:
    """Whether a claim in a hub's namespace belongs in its users' namespace."""
    return (
        name.startswith("home-")
        or name == hubconfig.SHARED_PVC
        or name.startswith(hubconfig.EXTERNAL_PVC_PREFIX)
    )


def needs_move(api: client.ApiClient, spec: HubSpec) -> bool:
    """Whether the hub's namespace still holds what belongs in its users' namespace."""
    if k8s.get(api, "NetworkPolicy", OLD_LAYOUT_POLICY, spec.namespace) is not None:
        return True
    claims = k8s.list_objects(api, "PersistentVolumeClaim", spec.namespace, "")
    return any(is_users_claim(c["metadata"]["name"]) for c in claims)


def _stop_workloads(api: client.ApiClient, namespace: str) -> int:
    """Stop user servers and members' jobs in the hub's namespace."""
    stopped = 0
    for job in k8s.list_objects(api, "Job", namespace, ""):
        stopped += k8s.delete(api, "Job", job["metadata"]["name"], namespace)
    for pod in k8s.list_objects(api, "Pod", namespace, ""):
        labels = pod["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/component") in ("hub", "proxy"):
            continue
        stopped += k8s.delete(api, "Pod", pod["metadata"]["name"], namespace)
    return stopped


def _wait_gone(api: client.ApiClient, name: str, namespace: str) -> None:
    deadline = time.monotonic() + CLAIM_GONE_SECONDS
    while k8s.get(api, "PersistentVolumeClaim", name, namespace) is not None:
        if time.monotonic() > deadline:
            raise k8s.ClusterError(
                f"The claim {name} in {namespace} is still in use; its move to the users' "
                "namespace goes on at the next sync.",
                transient=True,
            )
        time.sleep(0.5)


def _moved_claim(claim: dict, namespace: str) -> Manifest:
    meta, spec = claim["metadata"], claim.get("spec") or {}
    body = {
        key: spec[key]
        for key in ("accessModes", "resources", "storageClassName", "volumeMode", "volumeName")
        if key in spec
    }
    moved: Manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            "labels": meta.get("labels") or {},
        },
        "spec": body,
    }
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("hub.jupyter.org/")
    }
    if annotations:
        moved["metadata"]["annotations"] = annotations
    return moved


def _move_claim(api: client.ApiClient, spec: HubSpec, claim: dict) -> None:
    name = claim["metadata"]["name"]
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if volume_name:
        volume = k8s.get(api, "PersistentVolume", volume_name)
        if volume is not None:
            policy = volume["spec"].get("persistentVolumeReclaimPolicy", "Delete")
            annotations = volume["metadata"].get("annotations") or {}
            k8s.merge_patch(
                api,
                "PersistentVolume",
                volume_name,
                None,
                {
                    "metadata": {
                        "labels": {LABEL_MOVING: str(spec.hub_id)},
                        "annotations": {
                            ANNOTATION_RECLAIM_POLICY: annotations.get(
                                ANNOTATION_RECLAIM_POLICY, policy
                            )
                        },
                    },
                    "spec": {"persistentVolumeReclaimPolicy": "Retain"},
                },
            )
        else:
            volume_name = None
    k8s.delete(api, "PersistentVolumeClaim", name, spec.namespace)
    _wait_gone(api, name, spec.namespace)
    moved = _moved_claim(claim, spec.users_namespace)
    if volume_name:
        # The volume is Released, still naming the old claim: point it at the new one.
        k8s.merge_patch(
            api,
            "PersistentVolume",
            volume_name,
            None,
            {
                "spec": {
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": spec.users_namespace,
                        "name": name,
                        "uid": None,
                        "resourceVersion": None,
                    }
                }
            },
        )
    else:
        moved["spec"].pop("volumeName", None)
    k8s.apply(api, moved, field_manager=MOVE_FIELD_MANAGER)


def finish_moves(api: client.ApiClient, spec: HubSpec) -> int:
    """Give moved volumes that are bound again their reclaim policy back; how many."""
    done = 0
    selector = f"{LABEL_MOVING}={spec.hub_id}"
    for volume in k8s.list_objects(api, "PersistentVolume", None, selector):
        ref = volume["spec"].get("claimRef") or {}
        if ref.get("namespace") != spec.users_namespace or volume["status"].get("phase") != "Bound":
            continue
        annotations = volume["metadata"].get("annotations") or {}
        k8s.merge_patch(
            api,
            "PersistentVolume",
            volume["metadata"]["name"],
            None,
            {
                "metadata": {
                    "labels": {LABEL_MOVING: None},
                    "annotations": {ANNOTATION_RECLAIM_POLICY: None},
                },
                "spec": {
                    "persistentVolumeReclaimPolicy": annotations.get(
                        ANNOTATION_RECLAIM_POLICY, "Delete"
                    )
                },
            },
        )
        done += 1
    return done


def move_to_users_namespace(
    api: client.ApiClient, spec: HubSpec, settings: RenderSettings
) -> MoveResult:
    """Move what users run and keep from the hub's namespace to the users' one (see the module
    docstring); nothing to do for a hub already in two namespaces."""
    if not needs_move(api, spec):
        return MoveResult()
    for manifest in (users_namespace(spec), admission_params(spec, settings)):
        k8s.apply(api, manifest)
    stopped = _stop_workloads(api, spec.namespace)
    moved = []
    for claim in k8s.list_objects(api, "PersistentVolumeClaim", spec.namespace, ""):
        name = claim["metadata"]["name"]
        if not is_users_claim(name):
            continue
        labels = claim["metadata"].get("labels") or {}
        if labels.get(LABEL_HUB_ID, str(spec.hub_id)) != str(spec.hub_id):
            continue
        # A claim of that name in the users' namespace was not made by a move (a move deletes
        # the old claim first): both are left for an admin, and the old one is never pruned.
        if k8s.get(api, "PersistentVolumeClaim", name, spec.users_namespace) is None:
            _move_claim(api, spec, claim)
            moved.append(name)
    return MoveResult(claims=tuple(moved), stopped=stopped)
