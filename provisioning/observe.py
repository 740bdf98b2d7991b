"""Observe what every hub holds in the cluster, for usage and GPU capacity.

One pass makes four list calls, whatever the number of hubs: the hub namespaces (by the
portal's label), the running pods and the persistent volume claims of the whole cluster, and
the nodes that carry a GPU product label (one more per other label key the GPU catalogue
uses); lists come in pages of PAGE_SIZE objects, so a cluster with more running pods takes one
more call per page. Pods are sorted out in memory:

- user servers: KubeSpawner's `singleuser-server` component, user from its
  `hub.jupyter.org/username` annotation (the label, escaped, as a fallback);
- the hub itself: the `hub` and `proxy` components the portal renders;
- jobs: any other pod in a hub namespace (the user's, in a user's jobs namespace, or when it
  carries the username label).

A pod holds its CPU, memory and GPU requests (summed over its containers) while it runs; a
claim holds its capacity while it is bound. GPUs are typed by the product label of the pod's
node (`nvidia.com/gpu.product`, or the catalogue's `node_label_key`).
`portal/usage/recording.py` turns an observation into usage rows (its `collect` runs a pass).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Generic, TypeVar

import msgspec
from kubernetes import client
from kubernetes.utils.quantity import parse_quantity

from provisioning import k8s
from provisioning.render import (
    ANNOTATION_MEMBER,
    COMPONENT_PLACEHOLDER,
    LABEL_HUB_ID,
    MANAGED_BY,
)

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
COMPONENT_LABEL = "app.kubernetes.io/component"
USERNAME_KEY = "hub.jupyter.org/username"
HUB_NAMESPACES = f"app.kubernetes.io/managed-by={MANAGED_BY}"
MIB = Decimal(1024 * 1024)


@dataclass(frozen=True)
class Holding:
    """A running pod or a bound claim in a hub namespace and what it holds."""

    namespace: str
    hub_id: int
    name: str
    kind: str  # "pod" or "volume"
    component: str  # "server", "jobs" or "hub" (portal.usage.models.Component)
    username: str
    since: datetime | None  # when it started holding (pod start, claim creation)
    cpu_millicores: int = 0
    memory_mib: Decimal = Decimal(0)
    gpus: int = 0
    gpu_product: str = ""
    storage_mib: Decimal = Decimal(0)


@dataclass
class GpuCount:
    """GPUs of one product: what the nodes offer and what running pods requested."""

    allocatable: int = 0
    in_use: int = 0


@dataclass
class Observation:
    """What one pass saw, with the API calls it took."""

    holdings: list[Holding] = field(default_factory=list)
    gpus: dict[str, GpuCount] = field(default_factory=dict)
    namespaces: int = 0
    pods_seen: int = 0
    volumes_seen: int = 0
    api_calls: int = 0
    seconds: float = 0.0


# The fields a pass reads, and only those: the lists are decoded straight into these types, so
# the rest of each object (managed fields, volumes, conditions: most of a pod's bytes) is
# skipped by the decoder instead of being built into dicts. Quantities stay strings (parsed
# below); a value of the wrong type makes the list unreadable (ClusterError), not half-read.
Quantities = dict[str, str | int | float]


class _Struct(msgspec.Struct, rename="camel"):
    pass


class ObjectMeta(_Struct):
    name: str = ""
    namespace: str = ""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    creation_timestamp: datetime | None = None


class Resources(_Struct):
    requests: Quantities = {}


class Container(_Struct):
    resources: Resources = msgspec.field(default_factory=Resources)


class PodSpec(_Struct):
    node_name: str = ""
    containers: list[Container] = []


class PodStatus(_Struct):
    start_time: datetime | None = None


class Pod(_Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class ClaimSpec(_Struct):
    resources: Resources = msgspec.field(default_factory=Resources)


class ClaimStatus(_Struct):
    phase: str = ""
    capacity: Quantities = {}


class Claim(_Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: ClaimSpec = msgspec.field(default_factory=ClaimSpec)
    status: ClaimStatus = msgspec.field(default_factory=ClaimStatus)


class NodeStatus(_Struct):
    allocatable: Quantities = {}


class Node(_Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)


class Namespace(_Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)


class ListMeta(msgspec.Struct):
    continue_: str = msgspec.field(default="", name="continue")


T = TypeVar("T")


class ObjectList(msgspec.Struct, Generic[T]):
    items: list[T] | None = None
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)


_decoders: dict[type, msgspec.json.Decoder] = {}


def _decode(kind: type[T], path: str, body: bytes) -> ObjectList[T]:
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(ObjectList[kind])
    try:
        return decoder.decode(body or b"{}")
    except msgspec.MsgspecError as error:
        raise k8s.ClusterError(
            f"The API server's answer to {path} could not be read: {error}", transient=False
        ) from error


# Objects per list call: a big cluster's pods come in pages, and the next page is fetched while
# this one is decoded (the API server and Python work at the same time).
PAGE_SIZE = 5000


def _paged(
    api: client.ApiClient, kind: type[T], path: str, report: Observation, **query: str
) -> Iterator[T]:
    def fetch(token: str) -> bytes:
        params = [*query.items(), ("limit", str(PAGE_SIZE))]
        if token:
            params.append(("continue", token))
        return k8s.raw_call(
            api, "GET", path, query_params=params, header_params={"Accept": "application/json"}
        )

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, "")
        while pending is not None:
            page = _decode(kind, path, pending.result())
            report.api_calls += 1
            token = page.metadata.continue_
            pending = pool.submit(fetch, token) if token else None
            yield from page.items or []


def _quantity(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    return _parsed(str(value))


@lru_cache(maxsize=4096)
def _parsed(value: str) -> Decimal:
    # Requests repeat across thousands of pods ("500m", "4Gi"); parse_quantity is slow.
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, InvalidOperation, TypeError):
        return Decimal(0)


def _username(meta: ObjectMeta) -> str:
    return meta.annotations.get(USERNAME_KEY) or meta.labels.get(USERNAME_KEY) or ""


def _pod_component(meta: ObjectMeta) -> str:
    labels = meta.labels
    component = labels.get("app.kubernetes.io/component") or labels.get("component") or ""
    if component == "singleuser-server":
        return "server"
    if component in ("hub", "proxy") and labels.get(LABEL_HUB_ID):
        return "hub"
    return "jobs"


def _requests(pod: Pod, gpu_resources: tuple[str, ...]) -> tuple[int, Decimal, int]:
    cpu, memory, gpus = Decimal(0), Decimal(0), 0
    for container in pod.spec.containers:
        requests = container.resources.requests
        cpu += _quantity(requests.get("cpu"))
        memory += _quantity(requests.get("memory"))
        gpus += sum(int(_quantity(requests.get(name))) for name in gpu_resources)
    return int((cpu * 1000).to_integral_value()), memory / MIB, gpus


def _gpu_requests(pod: Pod, gpu_resources: tuple[str, ...]) -> dict[str, int]:
    """The pod's requests of each GPU resource it asks for."""
    found: dict[str, int] = {}
    for container in pod.spec.containers:
        for name in gpu_resources:
            amount = int(_quantity(container.resources.requests.get(name)))
            if amount:
                found[name] = found.get(name, 0) + amount
    return found


def observe(
    api: client.ApiClient,
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu",),
    gpu_labels: tuple[str, ...] = (GPU_PRODUCT_LABEL,),
    gpu_kinds: tuple[tuple[str, str], ...] | None = None,
) -> Observation:
    """One look at the cluster: hub namespaces, running pods, bound claims, GPU nodes.

    `gpu_kinds` pairs a node label key with the extended resource it names the product of:
    the catalogue's GPU types, e.g. ("nvidia.com/gpu.product", "nvidia.com/gpu") and, for a
    MIG profile, ("nvidia.com/mig-1g.10gb.product", "nvidia.com/mig-1g.10gb"), so that a node
    offering whole GPUs and MIG slices counts each under its own product. Without it, every
    key in `gpu_labels` pairs with every resource in `gpu_resources`. One node list per key;
    a node's resource labelled under two keys counts once, by the first."""
    kinds = gpu_kinds or tuple((key, name) for key in gpu_labels for name in gpu_resources)
    resources = tuple(dict.fromkeys(name for _, name in kinds))
    started = time.monotonic()
    report = Observation()
    hubs: dict[str, int] = {}
    # Jobs namespaces are one user's: their job pods are that user's.
    owners: dict[str, str] = {}
    namespaces = _paged(api, Namespace, "/api/v1/namespaces", report, labelSelector=HUB_NAMESPACES)
    for namespace in namespaces:
        hub_id = namespace.metadata.labels.get(LABEL_HUB_ID, "")
        if hub_id.isdigit():
            hubs[namespace.metadata.name] = int(hub_id)
            member = (namespace.metadata.annotations or {}).get(ANNOTATION_MEMBER)
            if member:
                owners[namespace.metadata.name] = member
    report.namespaces = len(hubs)

    products: dict[tuple[str, str], str] = {}  # (node name, resource) -> GPU product
    for key in dict.fromkeys(key for key, _ in kinds):
        named = [name for kind_key, name in kinds if kind_key == key]
        for node in _paged(api, Node, "/api/v1/nodes", report, labelSelector=key):
            product = node.metadata.labels[key]
            for name in named:
                if (node.metadata.name, name) in products:
                    continue  # labelled under two keys: counted once, by the first
                products[node.metadata.name, name] = product
                count = report.gpus.setdefault(product, GpuCount())
                count.allocatable += int(_quantity(node.status.allocatable.get(name)))

    running = _paged(api, Pod, "/api/v1/pods", report, fieldSelector="status.phase=Running")
    for pod in running:
        meta = pod.metadata
        cpu, memory, gpus = _requests(pod, resources)
        product = ""
        for name, count in _gpu_requests(pod, resources).items():
            named = products.get((pod.spec.node_name, name), "")
            if named:
                report.gpus[named].in_use += count
                product = product or named
        hub_id = hubs.get(meta.namespace)
        if hub_id is None or (meta.labels or {}).get(COMPONENT_LABEL) == COMPONENT_PLACEHOLDER:
            continue  # placeholders hold room for a class: nobody's usage (GPUs counted above)
        report.pods_seen += 1
        report.holdings.append(
            Holding(
                namespace=meta.namespace,
                hub_id=hub_id,
                name=meta.name,
                kind="pod",
                component=_pod_component(meta),
                username=_username(meta) or owners.get(meta.namespace, ""),
                since=pod.status.start_time or meta.creation_timestamp,
                cpu_millicores=cpu,
                memory_mib=memory,
                gpus=gpus,
                gpu_product=product if gpus else "",
            )
        )

    for claim in _paged(api, Claim, "/api/v1/persistentvolumeclaims", report):
        meta = claim.metadata
        hub_id = hubs.get(meta.namespace)
        if hub_id is None or claim.status.phase != "Bound":
            continue
        report.volumes_seen += 1
        size = claim.status.capacity.get("storage") or claim.spec.resources.requests.get("storage")
        username = _username(meta)
        report.holdings.append(
            Holding(
                namespace=meta.namespace,
                hub_id=hub_id,
                name=meta.name,
                kind="volume",
                component="server" if username else "hub",
                username=username,
                since=meta.creation_timestamp,
                storage_mib=_quantity(size) / MIB,
            )
        )
    report.seconds = time.monotonic() - started
    return report
