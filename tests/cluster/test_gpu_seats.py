"""GPU seats and MIG types on the local control plane.

- A real JupyterHub (started as in test_jupyterhub.py: the shipped config, KubeSpawner on the
  local control plane, the DummyAuthenticator for login) refuses a third concurrent GPU server
  with the seat message while two are held, on its spawn page and in its API, and starts no pod
  for it; a server without a GPU still starts.
- The 40 + 2 course with two seats fits the local cluster's H100s, as a collection pass of the
  cluster counts them.
- The simulated MIG node's slices are a GPU type of their own: counted apart from whole A100s,
  shown on the capacity page, and charged at their own price.

What is not real: the simulated nodes run no containers, so a server never becomes reachable;
the tests stop at the pod (see test_jupyterhub.py).
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urljoin

import pytest
from django.urls import reverse
from kubernetes import client as kubernetes

from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, SelfServicePolicy
from portal.hubs.services import decisions
from portal.usage import capacity, queries
from portal.usage.models import GpuInventory
from portal.usage.recording import collect
from provisioning import k8s
from provisioning.render import LABEL_HUB_ID, MANAGED_BY
from provisioning.spec import GpuRequest, HubSpec, ServerOption
from tests.cluster.test_jupyterhub import (
    LAB,
    OWNER,
    RunningHub,
    log_in,
    prepare_namespace,
    scheduled_pod,
    server_path,
    server_pod,
    start_hub,
    start_server,
    stop_hub,
    stop_server,
)
from tests.factories import HubFactory
from tests.support import delete_namespaces, eventually
from tests.usage_support import price_list

pytestmark = pytest.mark.cluster

TA1, TA2, STUDENT = "ta1@uni.example", "ta2@uni.example", "stu@uni.example"
H100 = "NVIDIA-H100-80GB-HBM3"
MIG_RESOURCE = "nvidia.com/mig-1g.10gb"
MIG_PRODUCT = "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"


@pytest.fixture(scope="module")
def seats_hub(kube_api, kubeconfig_path, tmp_path_factory) -> Iterator[RunningHub]:
    """A course of four on one size, with one H100 per GPU server and two GPU seats."""
    spec = HubSpec(
        hub_id=secrets.randbelow(10**6),
        slug=f"jh{secrets.token_hex(3)}",
        owner=OWNER,
        hubs_domain="hubs.localhost",
        expected_users=4,
        server_options=(ServerOption("h100", "H100 server", 0.5, 1, 1, 2),),
        gpu=GpuRequest("nvidia.com/gpu", H100, 1, display_name="H100", max_gpus=2),
        images=(LAB,),
        home_size_gib=1,
        members=(TA1, TA2, STUDENT),
    )
    prepare_namespace(kube_api, spec)
    hub = start_hub(spec, tmp_path_factory.mktemp("seats-hub"), kubeconfig_path)
    yield hub
    stop_hub(hub)
    delete_namespaces(kube_api, spec)


SEAT_MESSAGE = "All 2 GPU seats of this hub are taken"


def test_a_third_gpu_server_is_refused_with_the_seat_message_while_two_are_held(
    kube_api, seats_hub
):
    quota = kubernetes.CoreV1Api(kube_api).read_namespaced_resource_quota(
        "hub-quota", seats_hub.spec.users_namespace
    )
    assert quota.spec.hard["requests.nvidia.com/gpu"] == "2"

    start_server(seats_hub, TA1, {"profile": "h100"})
    start_server(seats_hub, TA2, {"profile": "h100"})
    try:
        scheduled_pod(kube_api, seats_hub, TA1)
        scheduled_pod(kube_api, seats_hub, TA2)

        # The spawn page, as a student's browser posts it.
        session, answer = log_in(seats_hub, STUDENT)
        assert answer.ok, answer.text
        form = session.get(seats_hub.public_url + "hub/spawn", timeout=30)
        # The form posts to its own address, which carries the XSRF token.
        action = re.search(r'<form[^>]*id="spawn_form"[^>]*action="([^"]+)"', form.text)
        action = action or re.search(r'<form[^>]*action="([^"]+)"[^>]*id="spawn_form"', form.text)
        page = session.post(
            urljoin(seats_hub.public_url, html.unescape(action.group(1))),
            data={"profile": "h100", "profile-option-h100--image": "scipy"},
            timeout=30,
        )
        assert page.status_code == 409, page.text[-2000:]
        assert SEAT_MESSAGE in page.text
        assert "Start a server without a GPU" in page.text
        assert server_pod(kube_api, seats_hub, STUDENT) is None

        # The same through the hub's API: refused at once, no pod.
        refused = seats_hub.api("POST", server_path(OWNER), json={"profile": "h100"})
        assert refused.status_code == 409, refused.text
        assert SEAT_MESSAGE in refused.text
        assert server_pod(kube_api, seats_hub, OWNER) is None

        # A server without a GPU needs no seat.
        start_server(seats_hub, STUDENT, {"profile": "h100-no-gpu"})
        pod = scheduled_pod(kube_api, seats_hub, STUDENT)
        notebook = next(c for c in pod.spec.containers if c.name == "notebook")
        assert "nvidia.com/gpu" not in (notebook.resources.requests or {})
        stop_server(kube_api, seats_hub, STUDENT)
    finally:
        stop_server(kube_api, seats_hub, TA2)
        stop_server(kube_api, seats_hub, TA1)

    # A seat is free again once a GPU server stopped.
    start_server(seats_hub, STUDENT, {"profile": "h100"})
    try:
        assert scheduled_pod(kube_api, seats_hub, STUDENT).spec.node_name == "kwok-gpu-h100"
    finally:
        stop_server(kube_api, seats_hub, STUDENT)


@pytest.fixture
def _tasks_use_the_test_cluster(settings, kubeconfig_path):
    settings.KUBECONFIG = str(kubeconfig_path)


@pytest.mark.django_db
def test_the_course_with_two_seats_fits_the_local_clusters_h100s(
    kube_api, alice, spec, queued, _tasks_use_the_test_cluster
):
    collect(datetime.now(UTC), kube_api)  # counts the simulated nodes' GPUs
    h100 = GpuType.objects.get(name="h100")
    assert GpuInventory.objects.get(product=H100).allocatable == 8
    SelfServicePolicy.objects.update_or_create(
        pk=1, defaults={"max_gpus_per_user": 1, "max_gpus_per_hub": 4}
    )
    course = spec(gpu_type="h100", gpus_per_user="1", max_gpus="2", expected_users="42")
    hub = decisions.submit(alice, course)
    assert hub.state == HubState.APPROVED, hub.state_reason
    assert capacity.free_over(h100, hub.start_date, hub.end_date).max_reserved == 2
    # Without seats, the same course is 42 H100s: it cannot fit the cluster's 8.
    per_user = decisions.submit(alice, {**course, "slug": "stats-102", "max_gpus": ""})
    assert per_user.state == HubState.PENDING
    assert "Not enough" in per_user.state_reason or "do not fit" in per_user.state_reason


def mig_gpu_type() -> GpuType:
    """The catalogue's seeded type of the simulated MIG node's slices (devcluster/nodes.yaml)."""
    mig = GpuType.objects.get(name="a100-mig-1g10gb")
    assert (mig.resource_name, mig.node_label_key, mig.node_label_value) == (
        MIG_RESOURCE,
        f"{MIG_RESOURCE}.product",
        MIG_PRODUCT,
    )
    return mig


def mig_node_holds_only(kube_api, names: list[str]) -> None:
    """Wait until the MIG node runs just these pods: the two tests that use it (this module's
    and test_warm_classes.py) leave theirs with their namespaces, which go in the background."""
    core = kubernetes.CoreV1Api(kube_api)

    def alone():
        pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=kwok-gpu-a100-mig")
        return sorted(p.metadata.name for p in pods.items) == sorted(names)

    eventually(alone, timeout=180)


@pytest.fixture
def mig_type(db) -> GpuType:
    return mig_gpu_type()


def _mig_server(user: str) -> dict:
    """A user server asking for one MIG slice, placed as the hub config places it."""
    request = {"cpu": "500m", "memory": "1Gi", MIG_RESOURCE: "1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"jupyter-{user}",
            "labels": {"component": "singleuser-server", "hub.jupyter.org/username": user},
            "annotations": {"hub.jupyter.org/username": user},
        },
        "spec": {
            "nodeSelector": {f"{MIG_RESOURCE}.product": MIG_PRODUCT},
            "containers": [
                {
                    "name": "notebook",
                    "image": "busybox",
                    "resources": {"requests": request, "limits": {MIG_RESOURCE: "1"}},
                }
            ],
        },
    }


@pytest.mark.django_db
def test_a_mig_type_is_counted_shown_and_charged_at_its_own_price(
    kube_api, alice, charlie, client, mig_type, request, _tasks_use_the_test_cluster
):
    a100 = GpuType.objects.get(name="a100")
    price_list(cpu="0", memory="0", storage="0", gpu={mig_type: "0.50", a100: "4"})
    hub = HubFactory(
        owner=alice,
        slug=f"mig-{secrets.token_hex(3)}",
        state=HubState.RUNNING,
        gpu_type=mig_type,
        gpus_per_user=1,
        max_gpus=3,
    )
    core = kubernetes.CoreV1Api(kube_api)
    core.create_namespace(
        {
            "metadata": {
                "name": hub.namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_HUB_ID: str(hub.pk)},
            }
        }
    )
    request.addfinalizer(lambda: k8s.delete_namespace(kube_api, hub.namespace))
    core.create_namespaced_pod(hub.namespace, _mig_server("alice"))

    def running():
        pod = core.read_namespaced_pod("jupyter-alice", hub.namespace)
        return pod if pod.status.phase == "Running" else None

    assert eventually(running, timeout=120).spec.node_name == "kwok-gpu-a100-mig"

    mig_node_holds_only(kube_api, ["jupyter-alice"])

    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    for step in range(13):  # an hour of passes, five minutes apart
        collect(base + timedelta(minutes=5 * step), kube_api)

    inventory = {row.product: row for row in GpuInventory.objects.all()}
    assert (inventory[MIG_PRODUCT].allocatable, inventory[MIG_PRODUCT].in_use) == (7, 1)
    assert inventory["NVIDIA-A100-SXM4-80GB"].allocatable == 4  # whole GPUs, counted apart

    report = queries.hub_usage(hub, alice, queries.Period(base.date(), base.date(), "day"))
    assert report.total.usage.gpu_hours == {"a100-mig-1g10gb": Decimal(1)}
    assert report.total.cost.gpu_by_type == {"a100-mig-1g10gb": Decimal("0.50")}

    client.force_login(charlie)
    page = client.get(reverse("usage:admin")).content.decode()
    section = page[page.index('id="capacity-a100-mig-1g10gb"') :][:3000]
    assert "A100 MIG 1g.10gb" in section
    assert "7 allocatable, 1 in use now." in section
    assert capacity.free_over(mig_type, base.date(), base.date()).allocatable == 7
    assert capacity.reserved_on(hub.start_date).get("a100-mig-1g10gb") == 3
