"""Keep every live hub as approved: compare the desired objects of all hubs with the cluster
and repair what drifted or vanished.

One pass reads the cluster with one label-selected, cluster-wide list call per kind (a
fixed number of API calls, whatever the number of hubs), compares in memory, and writes only
what differs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import InvalidOperation
from typing import Any

from kubernetes import client
from kubernetes.utils.quantity import parse_quantity

from provisioning import k8s, migrate
from provisioning.admission import users_admission
from provisioning.render import (
    MANAGED_BY,
    SECRET_NAME,
    HubSecrets,
    Manifest,
    RenderSettings,
    render_hub,
    selector,
)
from provisioning.spec import HubSpec
from provisioning.sync import HUB_NAMESPACE_ONLY_KINDS, PRUNABLE_KINDS, is_hub_namespace, prunable

# Every kind a hub has, in the order they are applied.
KINDS = ("Namespace", "ResourceQuota", "LimitRange", *PRUNABLE_KINDS)
# Cluster-wide objects the same for every hub (the users' namespaces' admission).
SHARED_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
# The reads of a pass whose credentials reach every namespace: one access review per kind of
# HUB_NAMESPACE_ONLY_KINDS, one list call per kind across the cluster, and one of volumes that
# are being moved. With least privilege (the chart's), a kind the portal may not list across
# the cluster is read in each hub's namespace instead: READS_PER_HUB more per hub.
READS_PER_PASS = len(HUB_NAMESPACE_ONLY_KINDS) + len(KINDS) + len(SHARED_KINDS) + 1
READS_PER_HUB = len(HUB_NAMESPACE_ONLY_KINDS)
ALL_HUBS = f"app.kubernetes.io/managed-by={MANAGED_BY}"
LABEL_HUB_ID = "hub-on-demand.io/hub-id"

Key = tuple[str, str, str]  # kind, namespace, name


@dataclass
class HubReport:
    """What a pass found and did for one hub."""

    hub_id: int
    repaired: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    namespace_missing: bool = False
    # Claims moved from the hub's namespace to the users' (see provisioning.migrate).
    moved: list[str] = field(default_factory=list)


@dataclass
class PassReport:
    """What one reconcile pass did, with the API calls it made."""

    hubs: int = 0
    api_calls: int = 0
    repaired: dict[int, HubReport] = field(default_factory=dict)
    # Cluster-wide objects re-applied (the admission policies and their bindings).
    shared_repaired: list[str] = field(default_factory=list)


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return False
    if isinstance(want, str | int | float) and isinstance(have, str | int | float):
        # Quantities are stored in canonical form: "1024Mi" reads back as "1Gi".
        try:
            return parse_quantity(want) == parse_quantity(have)
        except (ValueError, InvalidOperation, TypeError):
            return False
    return False


def contains(have: Any, want: Any) -> bool:
    """Whether the live value `have` holds everything the desired value `want` says; fields
    the API server added (defaults, status, its own labels) do not count as drift."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return not want and have is None
        return all(contains(have.get(key), value) for key, value in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return not want and have is None
        return all(contains(h, w) for h, w in zip(have, want, strict=True))
    if want is None:
        return True
    return _same_scalar(want, have)


def _key(manifest: dict[str, Any]) -> Key:
    meta = manifest["metadata"]
    return manifest["kind"], meta.get("namespace", ""), meta["name"]


def drifted(desired: Manifest, live: dict[str, Any]) -> bool:
    """Whether a live object lost or changed anything of its desired state."""
    comparable = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    if k8s.foreign_fields(desired, live):
        # Added by hand counts too where the object must hold exactly what the portal says.
        return True
    return not contains(live, comparable)


def per_hub_kinds(api: client.ApiClient, report: PassReport) -> tuple[str, ...]:
    """The kinds of HUB_NAMESPACE_ONLY_KINDS these credentials may not list across the cluster,
    which are read in each hub's namespace."""
    report.api_calls += len(HUB_NAMESPACE_ONLY_KINDS)
    return tuple(
        kind
        for kind in HUB_NAMESPACE_ONLY_KINDS
        if not k8s.may(api, "list", k8s.KINDS[kind].plural, "")
    )


def read_cluster(
    api: client.ApiClient, report: PassReport, per_hub: tuple[str, ...]
) -> dict[Key, dict[str, Any]]:
    """Every object of every hub, by key, but those of the `per_hub` kinds: one list call per
    kind."""
    live: dict[Key, dict[str, Any]] = {}
    for kind in (*(k for k in KINDS if k not in per_hub), *SHARED_KINDS):
        items = k8s.list_objects(api, kind, None, ALL_HUBS, all_namespaces=True)
        report.api_calls += 1
        for item in items:
            item["kind"] = kind
            live[_key(item)] = item
    return live


def reconcile(
    api: client.ApiClient,
    specs: list[HubSpec],
    settings: RenderSettings,
    login_secrets: Mapping[int, str] | None = None,
) -> PassReport:
    """One pass over all live hubs: repair drift, re-create what vanished, prune leftovers.

    Hubs whose namespace is gone are reported (`namespace_missing`) and not re-created: the
    portal decides what happens to them. `login_secrets` are the secrets of hubs' clients at
    the identity provider, by hub id; other hubs keep the one they have.
    """
    login_secrets = login_secrets or {}
    report = PassReport(hubs=len(specs))
    per_hub = per_hub_kinds(api, report)
    live = read_cluster(api, report, per_hub)
    if specs:
        for manifest in users_admission():
            current = live.get(_key(manifest))
            if current is None or drifted(manifest, current):
                k8s.apply(api, manifest)
                report.api_calls += 1
                report.shared_repaired.append(f"{manifest['kind']} {manifest['metadata']['name']}")
    moving = {
        (volume["metadata"].get("labels") or {}).get(migrate.LABEL_MOVING)
        for volume in k8s.list_objects(api, "PersistentVolume", None, migrate.LABEL_MOVING)
    }
    report.api_calls += 1
    # A hub's objects are those in its namespace that carry its id: hub ids are only unique
    # within one portal, and nothing outside a hub's namespace is ever its to prune.
    by_hub: dict[tuple[str, str], set[Key]] = defaultdict(set)
    for key, item in live.items():
        hub_id = (item["metadata"].get("labels") or {}).get(LABEL_HUB_ID)
        if hub_id and key[1]:
            by_hub[(key[1], hub_id)].add(key)

    # Namespaces by the hub id they carry (not those already going).
    namespaces_of: dict[str, list[str]] = defaultdict(list)
    for (kind, _, name), item in live.items():
        hub_id = (item["metadata"].get("labels") or {}).get(LABEL_HUB_ID)
        if kind == "Namespace" and hub_id and not item["metadata"].get("deletionTimestamp"):
            namespaces_of[hub_id].append(name)

    for spec in specs:
        hub = HubReport(spec.hub_id)
        namespace_hub, *others = (
            ((live.get(("Namespace", "", name)) or {}).get("metadata", {}).get("labels") or {}).get(
                LABEL_HUB_ID
            )
            for name in spec.namespaces
        )
        taken = any(other is not None and other != str(spec.hub_id) for other in others)
        if namespace_hub != str(spec.hub_id) or taken:
            # Gone, or a namespace of that name now belongs to another hub (another portal's):
            # never applied into (provisioning refuses it too, see sync.foreign_namespace).
            hub.namespace_missing = True
            report.repaired[spec.hub_id] = hub
            continue
        for kind in per_hub:
            for item in k8s.list_objects(api, kind, spec.namespace, selector(spec.hub_id)):
                item["kind"] = kind
                live[_key(item)] = item
                by_hub[(spec.namespace, str(spec.hub_id))].add(_key(item))
            report.api_calls += 1
        if ("NetworkPolicy", spec.namespace, migrate.OLD_LAYOUT_POLICY) in live or any(
            kind == "PersistentVolumeClaim" and migrate.is_users_claim(name)
            for kind, _, name in by_hub[(spec.namespace, str(spec.hub_id))]
        ):
            moved = migrate.move_to_users_namespace(api, spec, settings)
            hub.moved.extend(moved.claims)
            report.api_calls += 1
        secret = live.get(("Secret", spec.namespace, SECRET_NAME))
        desired = render_hub(
            spec, settings, HubSecrets.from_secret(secret, login_secrets.get(spec.hub_id, ""))
        )
        wanted = set()
        for manifest in desired:
            key = _key(manifest)
            wanted.add(key)
            current = live.get(key)
            if current is None or drifted(manifest, current):
                k8s.apply(api, manifest)
                report.api_calls += 1
                state = "missing" if current is None else "changed"
                hub.repaired.append(f"{manifest['kind']} {manifest['metadata']['name']} ({state})")
        ours = set().union(*(by_hub[(name, str(spec.hub_id))] for name in spec.namespaces))
        # Jobs namespaces of users who no longer have Jobs go, with their Jobs.
        ours |= {
            ("Namespace", "", name)
            for name in namespaces_of.get(str(spec.hub_id), ())
            if is_hub_namespace(name, spec.slug)
        }
        for kind, namespace, name in sorted(ours - wanted):
            if (kind == "Namespace" or prunable(kind, namespace, name, spec)) and k8s.delete(
                api, kind, name, namespace
            ):
                report.api_calls += 1
                hub.pruned.append(f"{kind} {name}")
        if str(spec.hub_id) in moving:
            migrate.finish_moves(api, spec)
            report.api_calls += 1
        if hub.repaired or hub.pruned or hub.moved:
            report.repaired[spec.hub_id] = hub
    return report
