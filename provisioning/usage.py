"""Observe what every hub holds in the cluster, for usage and GPU capacity.

One pass makes four list calls, whatever the number of hubs: the hub namespaces (by the
portal's label), the running pods and the persistent volume claims of the whole cluster, and
the nodes that carry a GPU product label; pods come in pages of PAGE_SIZE, so a cluster with
more running pods takes one more call per page. Pods are sorted out in memory:

- user servers: KubeSpawner's `singleuser-server` component, user from its
  `hub.jupyter.org/username` annotation (the label, escaped, as a fallback);
- the hub itself: the `hub` and `proxy` components the portal renders;
- jobs: any other pod in a hub namespace (with the user when it carries the username label).

A pod holds its CPU, memory and GPU requests (summed over its containers) while it runs; a
claim holds its capacity while it is bound. GPUs are typed by the `nvidia.com/gpu.product`
label of the pod's node. `portal/usage/recording.py` turns an observation into usage rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from kubernetes import client
from kubernetes.utils.quantity import parse_quantity

from provisioning import k8s
from provisioning.render import LABEL_HUB_ID, MANAGED_BY

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
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


def _list(api: client.ApiClient, path: str, report: Observation, **query: str) -> list[dict]:
    result = k8s._call(
        api,
        "GET",
        path,
        query_params=list(query.items()),
        header_params={"Accept": "application/json"},
    )
    report.api_calls += 1
    return (result or {}).get("items", [])


# Pods per list call: a big cluster's pods come in pages, and the next page is fetched while
# this one is parsed (the API server and Python work at the same time).
PAGE_SIZE = 5000


def _paged(api: client.ApiClient, path: str, report: Observation, **query: str) -> Iterator[dict]:
    def fetch(token: str | None) -> bytes:
        params = [*query.items(), ("limit", str(PAGE_SIZE))]
        if token:
            params.append(("continue", token))
        return k8s.raw_call(
            api, "GET", path, query_params=params, header_params={"Accept": "application/json"}
        )

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, None)
        while pending is not None:
            page = json.loads(pending.result() or b"{}")
            report.api_calls += 1
            token = (page.get("metadata") or {}).get("continue")
            pending = pool.submit(fetch, token) if token else None
            yield from page.get("items") or []


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


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _username(meta: dict[str, Any]) -> str:
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return annotations.get(USERNAME_KEY) or labels.get(USERNAME_KEY) or ""


def _pod_component(meta: dict[str, Any]) -> str:
    labels = meta.get("labels") or {}
    component = labels.get("app.kubernetes.io/component") or labels.get("component") or ""
    if component == "singleuser-server":
        return "server"
    if component in ("hub", "proxy") and labels.get(LABEL_HUB_ID):
        return "hub"
    return "jobs"


def _requests(pod: dict[str, Any], gpu_resources: tuple[str, ...]) -> tuple[int, Decimal, int]:
    cpu, memory, gpus = Decimal(0), Decimal(0), 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        cpu += _quantity(requests.get("cpu"))
        memory += _quantity(requests.get("memory"))
        gpus += sum(int(_quantity(requests.get(name))) for name in gpu_resources)
    return int((cpu * 1000).to_integral_value()), memory / MIB, gpus


def observe(
    api: client.ApiClient, gpu_resources: tuple[str, ...] = ("nvidia.com/gpu",)
) -> Observation:
    """One look at the cluster: hub namespaces, running pods, bound claims, GPU nodes."""
    started = time.monotonic()
    report = Observation()
    hubs: dict[str, int] = {}
    for namespace in _list(api, "/api/v1/namespaces", report, labelSelector=HUB_NAMESPACES):
        meta = namespace["metadata"]
        hub_id = (meta.get("labels") or {}).get(LABEL_HUB_ID, "")
        if hub_id.isdigit():
            hubs[meta["name"]] = int(hub_id)
    report.namespaces = len(hubs)

    products: dict[str, str] = {}  # node name -> GPU product
    for node in _list(api, "/api/v1/nodes", report, labelSelector=GPU_PRODUCT_LABEL):
        product = node["metadata"]["labels"][GPU_PRODUCT_LABEL]
        products[node["metadata"]["name"]] = product
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        count = report.gpus.setdefault(product, GpuCount())
        count.allocatable += sum(int(_quantity(allocatable.get(name))) for name in gpu_resources)

    for pod in _paged(api, "/api/v1/pods", report, fieldSelector="status.phase=Running"):
        meta = pod["metadata"]
        cpu, memory, gpus = _requests(pod, gpu_resources)
        product = products.get((pod.get("spec") or {}).get("nodeName") or "", "")
        if gpus and product:
            report.gpus[product].in_use += gpus
        hub_id = hubs.get(meta.get("namespace", ""))
        if hub_id is None:
            continue
        report.pods_seen += 1
        report.holdings.append(
            Holding(
                namespace=meta["namespace"],
                hub_id=hub_id,
                name=meta["name"],
                kind="pod",
                component=_pod_component(meta),
                username=_username(meta),
                since=_time((pod.get("status") or {}).get("startTime"))
                or _time(meta.get("creationTimestamp")),
                cpu_millicores=cpu,
                memory_mib=memory,
                gpus=gpus,
                gpu_product=product if gpus else "",
            )
        )

    for claim in _list(api, "/api/v1/persistentvolumeclaims", report):
        meta = claim["metadata"]
        hub_id = hubs.get(meta.get("namespace", ""))
        status = claim.get("status") or {}
        if hub_id is None or status.get("phase") != "Bound":
            continue
        report.volumes_seen += 1
        size = (status.get("capacity") or {}).get("storage") or (
            ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
        ).get("storage")
        username = _username(meta)
        report.holdings.append(
            Holding(
                namespace=meta["namespace"],
                hub_id=hub_id,
                name=meta["name"],
                kind="volume",
                component="server" if username else "hub",
                username=username,
                since=_time(meta.get("creationTimestamp")),
                storage_mib=_quantity(size) / MIB,
            )
        )
    report.seconds = time.monotonic() - started
    return report


def collect(now: datetime | None = None, api: client.ApiClient | None = None):
    """One collection pass at `now` (the clock is injectable for tests): observe the cluster,
    then record usage, gaps and GPU inventory (portal.usage.recording.record_pass)."""
    from django.utils import timezone

    from portal.hubs.models import GpuType
    from portal.usage.recording import record_pass

    now = now or timezone.now()
    resources = tuple(
        sorted(set(GpuType.objects.values_list("resource_name", flat=True)) | {"nvidia.com/gpu"})
    )
    observation = observe(api or k8s.api_client(), resources)
    return record_pass(observation, now)
