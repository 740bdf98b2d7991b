"""Classes that start warm, on the local control plane: ahead of a session the portal's task
makes placeholder pods, the scheduler places them like the hub's GPU servers, a user server
that does not fit otherwise preempts one (the scheduler does it, at the placeholders' low
PriorityClass), and after the session the task removes them.

The hub runs on the simulated MIG node (seven A100 1g.10gb slices), which no other test uses,
so that seven placeholders fill it and the user server fits nowhere but in a placeholder's
place. What is not real: the simulated kubelet runs no containers (placeholders only sleep).
"""

from __future__ import annotations

import datetime
import secrets
import zoneinfo

import pytest
from django.utils import timezone
from kubernetes import client

from portal.hubs import tasks
from portal.hubs.hubspec import from_hub
from portal.hubs.lifecycle import HubState
from portal.hubs.models import ClassSession
from provisioning.render import GPU_PLACEHOLDERS, PLACEHOLDER_PRIORITY_CLASS
from tests.cluster.test_gpu_seats import MIG_PRODUCT, mig_gpu_type, mig_node_holds_only
from tests.cluster.test_jupyterhub import prepare_namespace
from tests.factories import HubFactory
from tests.support import delete_namespaces, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.django_db]

MIG = "nvidia.com/mig-1g.10gb"
MIG_NODE = "kwok-gpu-a100-mig"
ZONE = zoneinfo.ZoneInfo("America/Chicago")


@pytest.fixture
def mig_hub(alice, kube_api, kubeconfig_path, settings, request):
    """A running hub on MIG slices: seven users, one slice per GPU server, seven seats; its
    namespaces as provisioning makes them, between classes."""
    settings.KUBECONFIG = str(kubeconfig_path)
    mig = mig_gpu_type()
    hub = HubFactory(
        owner=alice,
        slug=f"warm-{secrets.token_hex(3)}",
        state=HubState.RUNNING,
        gpu_type=mig,
        gpus_per_user=1,
        expected_users=7,
        max_gpus=7,
        start_date=timezone.localdate() - datetime.timedelta(days=1),
        end_date=timezone.localdate() + datetime.timedelta(days=30),
    )
    spec = from_hub(hub)
    mig_node_holds_only(kube_api, [])
    prepare_namespace(kube_api, spec)
    request.addfinalizer(lambda: delete_namespaces(kube_api, spec))
    return hub


def _pods(kube_api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(namespace, label_selector=selector)
    return [pod for pod in pods.items if not pod.metadata.deletion_timestamp]


def _user_server(user: str) -> dict:
    """A GPU server as the hub's config makes it: one slice, on the MIG nodes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"jupyter-{user}",
            "labels": {"component": "singleuser-server", "hub.jupyter.org/username": user},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "nodeSelector": {f"{MIG}.product": MIG_PRODUCT},
            "tolerations": [{"key": MIG, "operator": "Exists", "effect": "NoSchedule"}],
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "notebook",
                    "image": "quay.io/jupyter/scipy-notebook:2025-01-06",
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "1Gi", MIG: "1"},
                        "limits": {"cpu": "1", "memory": "2Gi", MIG: "1"},
                    },
                    "securityContext": {
                        "runAsUser": 1000,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def test_placeholders_hold_room_ahead_of_a_class_yield_to_a_server_and_go_after_it(
    kube_api, mig_hub, alice
):
    namespace = mig_hub.users_namespace
    core = client.CoreV1Api(kube_api)
    # A lab in Chicago, starting in ten minutes, for seven students on GPU servers.
    starts = (timezone.now() + datetime.timedelta(minutes=10)).astimezone(ZONE)
    ClassSession.objects.create(
        hub=mig_hub,
        title="Lab 1",
        first_day=starts.date(),
        start_time=starts.time().replace(microsecond=0),
        duration_minutes=60,
        time_zone="America/Chicago",
        attendees=7,
        gpu_attendees=7,
        created_by=alice,
    )
    far = tasks.keep_classes_warm((starts - datetime.timedelta(hours=3)).isoformat())
    assert far == {"warm": [], "cold": [], "failed": []}  # nothing held near then: not looked at
    before = tasks.keep_classes_warm((starts - datetime.timedelta(minutes=30)).isoformat())
    assert before["cold"] == [mig_hub.pk]  # before the lead time: no placeholders
    assert _pods(kube_api, namespace, "app.kubernetes.io/component=placeholder") == []

    ahead = tasks.keep_classes_warm((starts - datetime.timedelta(minutes=5)).isoformat())
    assert ahead["warm"] == [mig_hub.pk]
    quota = core.read_namespaced_resource_quota("hub-quota", namespace)
    assert quota.spec.hard[f"requests.{MIG}"] == "14"  # seven seats and seven placeholders

    def all_placed():
        pods = _pods(kube_api, namespace, "app.kubernetes.io/component=placeholder")
        running = [p for p in pods if p.status.phase == "Running"]
        return pods if len(running) == 7 and len(pods) == 7 else None

    placeholders = eventually(all_placed, timeout=120)
    assert {p.spec.node_name for p in placeholders} == {MIG_NODE}
    assert {p.spec.priority_class_name for p in placeholders} == {PLACEHOLDER_PRIORITY_CLASS}
    assert all(p.spec.priority < 0 for p in placeholders)
    first = {p.metadata.name for p in placeholders}

    # The MIG node is full: a student's server fits only where a placeholder was.
    core.create_namespaced_pod(namespace, _user_server("stu"))

    def server_running():
        pod = core.read_namespaced_pod("jupyter-stu", namespace)
        return pod if pod.status.phase == "Running" else None

    assert eventually(server_running, timeout=120).spec.node_name == MIG_NODE

    def preempted():
        events = core.list_namespaced_event(namespace).items
        return [e for e in events if e.reason == "Preempted" and e.involved_object.name in first]

    (event, *_) = eventually(preempted, timeout=60)
    assert event.source.component == "default-scheduler" or "scheduler" in (
        event.reporting_component or ""
    )
    # The placeholder's Deployment keeps seven: the one preempted waits, pending, for room.
    remaining = _pods(kube_api, namespace, "app.kubernetes.io/component=placeholder")
    assert sum(p.status.phase == "Running" for p in remaining) == 6

    after = tasks.keep_classes_warm((starts + datetime.timedelta(minutes=61)).isoformat())
    assert after["cold"] == [mig_hub.pk]
    eventually(
        lambda: _pods(kube_api, namespace, "app.kubernetes.io/component=placeholder") == [],
        timeout=120,
    )
    apps = client.AppsV1Api(kube_api)
    assert GPU_PLACEHOLDERS not in {
        d.metadata.name for d in apps.list_namespaced_deployment(namespace).items
    }
    assert (
        core.read_namespaced_resource_quota("hub-quota", namespace).spec.hard[f"requests.{MIG}"]
        == "7"
    )
    assert core.read_namespaced_pod("jupyter-stu", namespace).status.phase == "Running"
