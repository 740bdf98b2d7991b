"""Room for a hub's classes: its placeholder servers as the spec says now, and nothing between
classes (the portal's periodic task calls this; provisioning and reconcile render the same
objects from the same spec).

Placeholders run at a PriorityClass below every server and never preempt anything: any real
server that does not fit otherwise makes the scheduler preempt one, whichever hub it is of.
Their Deployment keeps its replicas, so a preempted placeholder waits, pending, for room again.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from provisioning import k8s
from provisioning.render import (
    GPU_PLACEHOLDERS,
    PLACEHOLDERS,
    QUOTA_NAME,
    RenderSettings,
    placeholder_priority_class,
    placeholders,
    resource_quotas,
)
from provisioning.spec import HubSpec


@dataclass(frozen=True)
class Room:
    """What one call left in place: placeholder replicas without and with GPUs."""

    servers: int
    gpu_servers: int
    removed: tuple[str, ...] = ()


def keep_room(api: client.ApiClient, spec: HubSpec, settings: RenderSettings) -> Room:
    """Make the hub's placeholders what the spec says: the quota first when they grow (so that
    they fit it), the Deployments, then the quota when they shrink."""
    wanted = placeholders(spec, settings)
    (quota,) = [
        q
        for q in resource_quotas(spec, settings)
        if q["metadata"]["name"] == QUOTA_NAME
        and q["metadata"]["namespace"] == spec.users_namespace
    ]
    if wanted:
        k8s.apply(api, placeholder_priority_class())
        k8s.apply(api, quota)
        for manifest in wanted:
            k8s.apply(api, manifest)
    names = {manifest["metadata"]["name"] for manifest in wanted}
    removed = tuple(
        name
        for name in (PLACEHOLDERS, GPU_PLACEHOLDERS)
        if name not in names and k8s.delete(api, "Deployment", name, spec.users_namespace)
    )
    if not wanted:
        k8s.apply(api, quota)
    return Room(spec.warm_servers, spec.warm_gpu_servers if spec.gpu else 0, removed)
