"""GPU seats: a hub asks for the GPUs its users hold at once (`max_gpus`), whatever their
number; quota, capacity reservation, cost estimate, policy and approval count the seats.

The refusal of a GPU server beyond the seats happens in the hub itself: see
tests/cluster/test_gpu_seats.py (a real JupyterHub on the local control plane)."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
import yaml
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.utils import timezone

from portal.hubs import hubspec
from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, Hub, SelfServicePolicy
from portal.hubs.services import decisions
from portal.usage import capacity
from portal.usage.models import GpuInventory, GpuPrice, PriceList
from provisioning import render
from tests.factories import HubFactory
from tests.support import REPO_ROOT

pytestmark = pytest.mark.django_db

# The course of the issue: 40 students on CPUs and 2 teaching assistants on H100s.
COURSE = {"expected_users": 42, "gpu_type": "h100", "gpus_per_user": 1, "max_gpus": 2}


@pytest.fixture
def h100_counted(db) -> GpuType:
    """The H100 type as a collection pass of the local cluster sees it: one node of 8."""
    h100 = GpuType.objects.get(name="h100")
    GpuInventory.objects.create(
        product=h100.node_label_value, allocatable=8, in_use=0, observed=timezone.now()
    )
    return h100


@pytest.fixture
def gpu_policy(db) -> SelfServicePolicy:
    policy, _ = SelfServicePolicy.objects.update_or_create(
        pk=1, defaults={"max_gpus_per_user": 1, "max_gpus_per_hub": 4}
    )
    return policy


def test_the_course_with_two_seats_reserves_two_h100s_and_fits(
    api, alice, payload, h100_counted, gpu_policy, queued
):
    api.force_authenticate(alice)
    response = api.post("/api/v1/hubs/", payload(**COURSE), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    # Within the policy (4 seats per hub) and within the 8 free H100s: approved at once.
    assert (body["state"], body["max_gpus"], body["gpus_per_user"]) == ("approved", 2, 1)

    hub = Hub.objects.get(pk=body["id"])
    spec = hubspec.from_hub(hub)
    quota = {q["metadata"]["namespace"]: q["spec"]["hard"] for q in render.resource_quotas(spec)}
    assert quota[hub.users_namespace]["requests.nvidia.com/gpu"] == "2"
    assert quota[hub.users_namespace]["pods"] == "42"  # every student still gets a server
    assert capacity.reserved_on(hub.start_date) == {"h100": 2}
    free = capacity.free_over(h100_counted, hub.start_date, hub.end_date)
    assert (free.allocatable, free.max_reserved, free.free) == (8, 2, 6)


def test_the_cost_estimate_counts_two_gpus_not_one_per_user(h100_counted, client, alice):
    prices = PriceList.objects.create(
        valid_from=datetime.date(2000, 1, 1), cpu_hour=0, memory_gib_hour=0, storage_gib_month=0
    )
    GpuPrice.objects.create(price_list=prices, gpu_type=h100_counted, gpu_hour=Decimal("3"))
    start = timezone.localdate() + datetime.timedelta(days=1)
    common = dict(
        start=start,
        end=start + datetime.timedelta(days=9),
        expected_users=42,
        gpu_type=h100_counted,
        gpus_per_user=1,
    )
    seats = capacity.estimate_cost(**common, max_gpus=2)
    per_server = capacity.estimate_cost(**common)
    assert seats.total["gpu"] == Decimal("1440.00")  # 2 GPUs x 24 h x 10 days x 3
    assert per_server.total["gpu"] == Decimal("30240.00")  # 42 GPUs: what seats avoid

    # The request form's live estimate reads the seats too.
    client.force_login(alice)
    page = client.get(
        reverse("usage:estimate"),
        {
            "start_date": start.isoformat(),
            "end_date": (start + datetime.timedelta(days=9)).isoformat(),
            **{key: str(value) for key, value in COURSE.items()},
        },
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "This request needs <strong>2</strong>" in text
    assert "1,440.00" in text or "1440.00" in text


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"gpus_per_user": 2, "max_gpus": 1}, "max_gpus", "cannot hold one server with 2 GPUs"),
        ({"gpu_type": None, "gpus_per_user": 0, "max_gpus": 2}, "max_gpus", "need a GPU type"),
        ({"max_gpus": -1}, "max_gpus", "greater than or equal to 0"),
    ],
)
def test_seats_that_cannot_work_are_refused_with_the_field_and_nothing_is_created(
    api, alice, payload, fields, field, message
):
    api.force_authenticate(alice)
    response = api.post("/api/v1/hubs/", payload(**{**COURSE, **fields}), format="json")
    assert response.status_code == 400, response.json()
    assert any(message in text for text in response.json()[field]), response.json()
    assert not Hub.objects.exists()


def test_seats_left_out_are_one_set_per_server_as_before(api, alice, payload, queued):
    api.force_authenticate(alice)
    body = api.post(
        "/api/v1/hubs/", payload(expected_users=3, gpu_type="a100", gpus_per_user=2), format="json"
    ).json()
    assert body["max_gpus"] == 6


def test_seats_beyond_the_policy_wait_for_an_admin_who_sees_them(
    api, alice, charlie, client, payload, h100_counted, gpu_policy, queued
):
    api.force_authenticate(alice)
    body = api.post("/api/v1/hubs/", payload(**{**COURSE, "max_gpus": 6}), format="json").json()
    assert body["state"] == "pending"
    assert body["policy_violations"] == ["6 GPU seats exceeds the self-service limit of 4"]

    client.force_login(charlie)
    queue = client.get(reverse("hubs:queue")).content.decode()
    assert "GPU seats" in queue
    assert "<th>GPU seats</th><td>6 NVIDIA H100 80 GB GPUs held at once" in queue


def test_the_database_refuses_seats_smaller_than_one_gpu_server(alice):
    hub = HubFactory(owner=alice, gpu_type=GpuType.objects.get(name="h100"), gpus_per_user=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Hub.objects.filter(pk=hub.pk).update(max_gpus=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Hub.objects.filter(pk=hub.pk).update(gpus_per_user=0)  # seats left without GPUs


def test_a_change_form_shows_and_changes_the_seats(client, alice, queued, h100_counted):
    from portal.hubs.revisions import form_data, spec_of_hub
    from portal.hubs.services import changes

    hub = HubFactory(
        owner=alice,
        state=HubState.RUNNING,
        gpu_type=h100_counted,
        gpus_per_user=1,
        expected_users=42,
        max_gpus=2,
    )
    client.force_login(alice)
    page = client.get(reverse("hubs:change", args=[hub.pk])).content.decode()
    assert 'name="max_gpus"' in page and 'value="2"' in page
    SelfServicePolicy.objects.update_or_create(
        pk=1, defaults={"max_gpus_per_user": 1, "max_gpus_per_hub": 4}
    )
    revision = changes.request_change(hub, alice, {**form_data(spec_of_hub(hub)), "max_gpus": "3"})
    assert revision.changed_fields == ["max_gpus"]
    hub.refresh_from_db()
    assert hub.max_gpus == 3
    assert capacity.reserved_on(hub.start_date) == {"h100": 3}


def test_the_schema_describes_the_seats(client):
    schema = yaml.safe_load(client.get("/api/schema/").content)
    components = schema["components"]["schemas"]
    assert "max_gpus" in components["Hub"]["properties"]
    request = next(c for name, c in components.items() if name.startswith("HubRequest"))
    assert "GPU seats" in request["properties"]["max_gpus"]["description"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_hubs_from_before_seats_get_todays_total():
    executor = MigrationExecutor(connection)
    before, after = (
        [("hubs", "0012_invitation_anyone_with_link")],
        [("hubs", "0013_gpu_seats")],
    )
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    owner = old.get_model("auth", "User").objects.create(username="old-owner")
    gpu = old.get_model("hubs", "GpuType").objects.get(name="a100")
    today = datetime.date(2026, 1, 1)
    common = dict(owner=owner, start_date=today, end_date=today, display_name="x")
    OldHub = old.get_model("hubs", "Hub")
    OldHub.objects.create(slug="gpus", expected_users=5, notebooks_per_user=2, **common,
                          gpu_type=gpu, gpus_per_user=2)  # fmt: skip
    OldHub.objects.create(slug="cpus", expected_users=5, **common)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    new = executor.loader.project_state(after).apps.get_model("hubs", "Hub")
    assert dict(new.objects.values_list("slug", "max_gpus")) == {"gpus": 20, "cpus": 0}
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_decisions_submit_counts_seats_for_the_owners_total(alice, spec, h100_counted, queued):
    """The per-owner GPU limit adds up seats, not users x GPUs."""
    SelfServicePolicy.objects.update_or_create(
        pk=1, defaults={"max_gpus_per_user": 1, "max_gpus_per_hub": 4, "max_owner_gpus": 4}
    )
    for slug in ("course-a", "course-b"):
        hub = decisions.submit(
            alice,
            spec(slug=slug, gpu_type="h100", gpus_per_user="1", max_gpus="2", expected_users="42"),
        )
        assert hub.state == HubState.APPROVED, hub.state_reason


def test_the_catalogue_offers_the_simulated_nodes_mig_slice_as_a_type_of_its_own(client, alice):
    """The seeded MIG type names the resource and product label the local cluster's MIG node
    carries (devcluster/nodes.yaml), and the request form offers it."""
    nodes = yaml.safe_load((REPO_ROOT / "devcluster" / "nodes.yaml").read_text())["items"]
    node = next(n for n in nodes if n["metadata"]["name"] == "kwok-gpu-a100-mig")
    mig = GpuType.objects.enabled().get(name="a100-mig-1g10gb")
    assert mig.resource_name != "nvidia.com/gpu"
    assert mig.resource_name in node["status"]["allocatable"]
    assert node["metadata"]["labels"][mig.node_label_key] == mig.node_label_value
    client.force_login(alice)
    form = client.get(reverse("hubs:create")).content.decode()
    assert 'value="a100-mig-1g10gb"' in form
