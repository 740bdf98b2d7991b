"""The usage collector on the local control plane: pods with known requests on the simulated
CPU and GPU nodes, passes driven across injected times, usage and cost asserted to the cent."""

from __future__ import annotations

import csv as csvlib
import io
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from kubernetes import client
from kubernetes import client as client_module
from prometheus_client import REGISTRY

from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType
from portal.usage import queries
from portal.usage.models import CollectionGap, CollectionPass, GpuInventory, UsageDay
from portal.usage.recording import collect
from provisioning import k8s
from provisioning.observe import observe as observe_cluster
from provisioning.render import ANNOTATION_MEMBER, LABEL_HUB_ID, MANAGED_BY
from provisioning.spec import JOBS_NAMESPACE_INFIX, member_key
from tests.factories import GpuTypeFactory, HubFactory
from tests.support import eventually
from tests.usage_support import price_list

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _tasks_use_the_test_cluster(settings, kubeconfig_path):
    """Tasks build their API client from settings.KUBECONFIG: point it at the test cluster
    (it may have been started after settings were read)."""
    settings.KUBECONFIG = str(kubeconfig_path)


A100 = "NVIDIA-A100-SXM4-80GB"


def _pod(name: str, cpu: str, memory: str, labels=None, annotations=None, gpus: int = 0):
    resources = {"requests": {"cpu": cpu, "memory": memory}}
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
    spec = {"containers": [{"name": "main", "image": "busybox", "resources": resources}]}
    if gpus:
        spec["nodeSelector"] = {"nvidia.com/gpu.product": A100}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "spec": spec,
    }


def _server(user: str, **kwargs):
    return _pod(
        f"jupyter-{user}",
        labels={
            "app.kubernetes.io/component": "singleuser-server",
            "component": "singleuser-server",
            "hub.jupyter.org/username": user,
        },
        annotations={"hub.jupyter.org/username": user},
        **kwargs,
    )


@pytest.fixture
def gpu_hub(kube_api, alice, bob, request):
    """A running hub with a namespace holding alice's GPU server, bob's CPU server, the hub's
    own pod, a jobs pod, and alice's 10 GiB home volume; all Running or Bound."""
    hub = HubFactory(owner=alice, slug=f"use-{secrets.token_hex(3)}", state=HubState.RUNNING)
    core = client.CoreV1Api(kube_api)
    core.create_namespace(
        {
            "metadata": {
                "name": hub.namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_HUB_ID: str(hub.pk)},
            }
        }
    )
    request.addfinalizer(lambda: k8s.delete_namespace(kube_api, hub.namespace))
    pods = [
        _server("alice", cpu="500m", memory="1Gi", gpus=1),
        _server("bob", cpu="2", memory="4Gi"),
        _pod(
            "hub-0",
            "250m",
            "512Mi",
            labels={"app.kubernetes.io/component": "hub", LABEL_HUB_ID: str(hub.pk)},
        ),
        _pod("job-0", "1", "2Gi"),
    ]
    for pod in pods:
        core.create_namespaced_pod(hub.namespace, pod)
    core.create_namespaced_persistent_volume_claim(
        hub.namespace,
        {
            "metadata": {"name": "claim-alice", "labels": {"hub.jupyter.org/username": "alice"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "10Gi"}},
            },
        },
    )

    def ready():
        phases = [p.status.phase for p in core.list_namespaced_pod(hub.namespace).items]
        claims = core.list_namespaced_persistent_volume_claim(hub.namespace).items
        return phases.count("Running") == 4 and all(c.status.phase == "Bound" for c in claims)

    eventually(ready, timeout=120)
    return hub


def _hour_after(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)


def _api_calls_per_pass() -> int:
    """One list of each kind (hub namespaces, running pods, claims), and of nodes one per GPU
    product label the catalogue names (whole GPUs and the seeded MIG slice: two)."""
    labels = set(GpuType.objects.values_list("node_label_key", flat=True))
    assert len(labels) >= 1
    return 3 + len(labels)


def test_a_simulated_hour_is_recorded_per_user_and_costs_to_the_cent(
    kube_api, gpu_hub, alice, settings
):
    a100 = GpuTypeFactory(name="a100", display_name="A100", node_label_value=A100)
    price_list(gpu={a100: "100"})
    base = _hour_after(datetime.now(UTC))

    first = collect(base, kube_api)
    assert first.charged_from is None  # the baseline: nothing is charged yet
    assert first.api_calls == _api_calls_per_pass()  # however many hubs the cluster holds
    # The pass sees whatever else runs (other workers' hubs): this test's hub holds four pods
    # and one volume, counted in its own namespace.
    mine = [h.kind for h in observe_cluster(kube_api).holdings if h.namespace == gpu_hub.namespace]
    assert sorted(mine) == ["pod"] * 4 + ["volume"]
    assert first.pods_seen >= 4 and first.volumes_seen >= 1
    for step in range(1, 13):  # twelve passes, five minutes apart
        collect(base + timedelta(minutes=5 * step), kube_api)

    period = queries.Period(base.date(), base.date(), "day")
    report = queries.hub_usage(gpu_hub, alice, period)
    by_user = {line.key: line for line in report.by_user}
    assert set(by_user) == {"alice", "bob", ""}
    alice_line = by_user["alice"]
    # 0.5 core x 1 h x 10, 1 GiB x 1 h x 2, 1 A100 x 1 h x 100, 10 GiB x 1 h x 72 / 720
    assert alice_line.cost.rounded() == {
        "cpu": Decimal("5.00"),
        "memory": Decimal("2.00"),
        "gpu": Decimal("100.00"),
        "storage": Decimal("1.00"),
        "total": Decimal("108.00"),
    }
    assert alice_line.usage.gpu_hours == {"a100": Decimal(1)}
    assert by_user["bob"].cost.rounded()["total"] == Decimal("28.00")  # 2 x 10 + 4 x 2
    # The hub's own pod (0.25 core, 0.5 GiB) and the unattributed job (1 core, 2 GiB).
    assert by_user[""].cost.rounded()["total"] == Decimal("17.50")
    assert report.total.cost.rounded()["total"] == Decimal("153.50")
    assert report.gaps == []
    rows = UsageDay.objects.filter(hub=gpu_hub, username="alice", gpu_product=A100).get()
    assert rows.user == alice and rows.gpu_seconds == 3600

    inventory = {row.product: row for row in GpuInventory.objects.all()}
    assert inventory[A100].allocatable == 4 and inventory[A100].in_use >= 1
    assert inventory["NVIDIA-H100-80GB-HBM3"].allocatable == 8


def test_a_job_in_a_users_jobs_namespace_is_charged_to_that_user(kube_api, alice, bob):
    """Job pods carry no username; the jobs namespace they run in is one user's."""
    hub = HubFactory(owner=alice, slug=f"use-{secrets.token_hex(3)}", state=HubState.RUNNING)
    bobs = f"hub-{hub.slug}{JOBS_NAMESPACE_INFIX}{member_key('bob')}"
    core = client.CoreV1Api(kube_api)
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_HUB_ID: str(hub.pk)}
    core.create_namespace(
        {"metadata": {"name": bobs, "labels": labels, "annotations": {ANNOTATION_MEMBER: "bob"}}}
    )
    try:
        core.create_namespaced_pod(bobs, _pod("job-0", "1", "2Gi"))
        eventually(
            lambda: core.read_namespaced_pod("job-0", bobs).status.phase == "Running", timeout=120
        )
        price_list()
        base = _hour_after(datetime.now(UTC))
        for step in range(13):
            collect(base + timedelta(minutes=5 * step), kube_api)
        report = queries.hub_usage(hub, alice, queries.Period(base.date(), base.date(), "day"))
        by_user = {line.key: line for line in report.by_user}
        assert set(by_user) == {"bob"}
        assert by_user["bob"].cost.rounded()["total"] == Decimal("14.00")  # 1 x 10 + 2 x 2
    finally:
        k8s.delete_namespace(kube_api, bobs)


def test_a_gap_in_collection_is_reported_not_filled(kube_api, gpu_hub, alice, settings):
    price_list()
    base = _hour_after(datetime.now(UTC))
    collect(base, kube_api)
    collect(base + timedelta(minutes=5), kube_api)
    # The worker was down for three hours.
    late = base + timedelta(hours=3, minutes=5)
    record = collect(late, kube_api)

    assert record.charged_from == late - timedelta(seconds=settings.USAGE_COLLECT_INTERVAL_SECONDS)
    gap = CollectionGap.objects.get()
    assert (gap.start, gap.end) == (base + timedelta(minutes=5), record.charged_from)
    # Bob's server: 5 minutes before the gap and the 5 minutes after it, nothing inside.
    bob_rows = UsageDay.objects.filter(hub=gpu_hub, username="bob")
    assert sum(row.cpu_millicore_seconds for row in bob_rows) == 2000 * 600
    report = queries.hub_usage(gpu_hub, alice, queries.Period(base.date(), late.date()))
    assert [(g.start, g.end) for g in report.gaps] == [(gap.start, gap.end)]

    # A late duplicate of an earlier pass charges nothing.
    assert collect(base + timedelta(hours=1), kube_api) is None
    assert CollectionPass.objects.count() == 3


def test_the_beat_task_runs_a_pass_at_the_current_time(kube_api, gpu_hub):
    from portal.usage.tasks import collect_usage

    timed = REGISTRY.get_sample_value("hubondemand_usage_pass_duration_seconds_count") or 0
    first = collect_usage()
    assert first["pods"] >= 4 and first["api_calls"] == _api_calls_per_pass()
    assert CollectionPass.objects.count() == 1
    assert REGISTRY.get_sample_value("hubondemand_usage_pass_duration_seconds_count") == timed + 1


def test_a_week_of_a_gpu_hub_is_plotted_and_exported_for_its_owner(
    kube_api, gpu_hub, alice, bob, settings, client
):
    """The hub ran for a week: passes every hour over the past seven days (the pods' start time
    moved back accordingly); the owner's usage page plots it and the CSV carries the same sums."""
    a100 = GpuTypeFactory(name="a100", display_name="A100", node_label_value=A100)
    price_list(gpu={a100: "100"})
    settings.USAGE_MAX_INTERVAL_SECONDS = 3600
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=7)
    core = client_module.CoreV1Api(kube_api)
    for pod in core.list_namespaced_pod(gpu_hub.namespace).items:
        core.patch_namespaced_pod_status(
            pod.metadata.name,
            gpu_hub.namespace,
            {"status": {"startTime": (start - timedelta(hours=1)).isoformat()}},
        )
    for hour in range(7 * 24 + 1):
        collect(start + timedelta(hours=hour), kube_api)

    period = queries.Period(start.date(), now.date(), "day")
    report = queries.hub_usage(gpu_hub, alice, period)
    alice_line = {line.key: line for line in report.by_user}["alice"]
    assert alice_line.usage.gpu_hours == {"a100": Decimal(168)}
    assert alice_line.cost.rounded()["gpu"] == Decimal("16800.00")  # 168 h x 100
    assert report.gaps == []

    client.force_login(alice)
    page = client.get(f"/hubs/{gpu_hub.pk}/usage/?days=7")
    assert page.status_code == 200
    html = page.content.decode()
    # The page's last 7 days are whole calendar days up to today: the GPU cost it plots is
    # what the query gives for those days.
    shown = queries.hub_usage(gpu_hub, alice, queries.last_days(7)).total.cost.rounded()
    assert shown["gpu"] > Decimal("14000")  # at least six whole days of one A100 at 100/h
    assert "<svg" in html and "NVIDIA A100" in html
    assert f"{shown['gpu']:,.2f}" in html and f"{shown['total']:,.2f} CZK" in html
    csv = client.get(
        f"/api/v1/hubs/{gpu_hub.pk}/usage/csv/",
        {"start": start.date().isoformat(), "end": now.date().isoformat(), "granularity": "day"},
    )
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    assert "attachment" in csv["Content-Disposition"]
    rows = list(csvlib.DictReader(io.StringIO(csv.content.decode())))
    days = [row for row in rows if row["key"][:4].isdigit()]
    assert len(days) == 8  # the first pass's day and seven more
    assert sum(Decimal(row["cost_gpu"]) for row in days) == Decimal("16800.00")
    assert sum(Decimal(row["cost_total"]) for row in days) == report.total.cost.rounded()["total"]
    # A member sees only their own usage, and may not export the hub's.
    from portal.hubs.models import Member

    Member.objects.create(hub=gpu_hub, user=bob, role=Member.Role.MEMBER)
    client.force_login(bob)
    mine = client.get(f"/hubs/{gpu_hub.pk}/usage/?days=7").content.decode()
    assert f"{shown['total']:,.2f} CZK" not in mine  # bob's own usage only
    assert client.get(f"/api/v1/hubs/{gpu_hub.pk}/usage/csv/").status_code == 403


def test_pods_are_read_in_pages_without_losing_any(kube_api, gpu_hub, monkeypatch):
    from provisioning import observe

    whole = observe.observe(kube_api)
    monkeypatch.setattr(observe, "PAGE_SIZE", 2)
    paged = observe.observe(kube_api)

    def pods(observation):
        return sorted(
            h.name
            for h in observation.holdings
            if h.kind == "pod" and h.namespace == gpu_hub.namespace
        )

    assert pods(paged) == pods(whole) == ["hub-0", "job-0", "jupyter-alice", "jupyter-bob"]
    assert paged.api_calls >= whole.api_calls + 1  # at least two pages of pods


def test_gpu_nodes_are_found_by_every_label_key_the_catalogue_uses(kube_api):
    """A GPU type may name its nodes by another label key: one more node list per key, and a
    node carrying both keys counts once, as the product the default key names."""
    from provisioning import observe

    default = observe.observe(kube_api)
    both = observe.observe(
        kube_api, gpu_labels=(observe.GPU_PRODUCT_LABEL, "node.kubernetes.io/instance-type")
    )

    assert both.api_calls == default.api_calls + 1
    assert both.gpus[A100].allocatable == default.gpus[A100].allocatable == 4
    assert "gpu-a100x4" not in both.gpus  # the A100 node's instance type: already counted
    assert both.gpus["cpu-16x64"].allocatable == 0  # the CPU nodes offer no GPUs
