"""The REST API's main flow: create, read, filter, approve, reject, delete; errors as JSON."""

import pytest

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from tests.factories import GpuTypeFactory, HubFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_create_inside_policy_is_approved(
    api, alice, payload, queued, django_capture_on_commit_callbacks
):
    api.force_authenticate(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            "/api/v1/hubs/",
            payload(
                collaborators=[
                    {"username": UserFactory(username="ta").username, "role": "co-owner"}
                ]
            ),
            format="json",
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["state"] == "approved"
    assert body["owner"] == "alice"
    assert body["namespace"] == "hub-stats-101"
    assert body["url"] == "https://stats-101.hubs.localhost"
    assert body["hardware_options"] == ["small"]
    assert body["images"] == ["scipy"]
    # Defaults of the model fill what the JSON left out (no idle timeout of the owner's:
    # each server option's own applies).
    assert (body["home_size_gib"], body["idle_timeout_minutes"], body["notebooks_per_user"]) == (
        10,
        None,
        1,
    )
    assert body["collaborators"] == [{"username": "ta", "role": "co-owner"}]
    assert [e["to_state"] for e in body["events"]] == ["pending", "approved"]
    assert queued == [("provision", (body["id"],), {"queue": "provisioning"})]


def test_create_beyond_policy_then_admin_approves(
    api, alice, charlie, payload, queued, django_capture_on_commit_callbacks
):
    api.force_authenticate(alice)
    response = api.post("/api/v1/hubs/", payload(gpu_type="h100", gpus_per_user=4), format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "pending"
    assert body["policy_violations"] == [
        "4 GPUs per user exceeds the self-service limit of 0",
        "160 GPU seats exceeds the self-service limit of 8",
    ]

    api.force_authenticate(charlie)
    with django_capture_on_commit_callbacks(execute=True):
        approved = api.post(f"/api/v1/hubs/{body['id']}/approve/", {}, format="json")
        again = api.post(f"/api/v1/hubs/{body['id']}/approve/", {}, format="json")
    assert approved.status_code == 200
    assert approved.json()["state"] == "approved"
    assert again.status_code == 409
    assert "approved now" in again.json()["detail"]
    assert queued == [("provision", (body["id"],), {"queue": "provisioning"})]


def test_reject_needs_a_reason(api, hub, charlie):
    api.force_authenticate(charlie)
    missing = api.post(f"/api/v1/hubs/{hub.pk}/reject/", {}, format="json")
    blank = api.post(f"/api/v1/hubs/{hub.pk}/reject/", {"reason": "   "}, format="json")
    assert missing.status_code == blank.status_code == 400
    assert "reason" in missing.json() and "reason" in blank.json()
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING

    done = api.post(f"/api/v1/hubs/{hub.pk}/reject/", {"reason": "No GPUs"}, format="json")
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["state_reason"]) == ("rejected", "No GPUs")


def test_delete_running_answers_202_and_deprovisions(
    api, alice, queued, django_capture_on_commit_callbacks
):
    hub = HubFactory(owner=alice, state=HubState.RUNNING)
    api.force_authenticate(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/api/v1/hubs/{hub.pk}/")
    assert response.status_code == 202
    assert response.json()["state"] == "deprovisioning"
    assert queued == [("deprovision", (hub.pk,), {"queue": "provisioning"})]
    again = api.delete(f"/api/v1/hubs/{hub.pk}/")
    assert again.status_code == 409
    assert Hub.objects.filter(pk=hub.pk).exists()  # the record stays


def test_filter_by_state_and_owner(api, charlie, alice, bob):
    HubFactory(owner=alice, slug="a-running", state=HubState.RUNNING)
    HubFactory(owner=alice, slug="a-pending")
    HubFactory(owner=bob, slug="b-running", state=HubState.RUNNING)
    api.force_authenticate(charlie)

    def slugs(query):
        response = api.get(f"/api/v1/hubs/?{query}")
        assert response.status_code == 200
        return {h["slug"] for h in response.json()["results"]}

    assert slugs("state=running") == {"a-running", "b-running"}
    assert slugs("owner=alice") == {"a-running", "a-pending"}
    assert slugs("owner=alice&state=running") == {"a-running"}
    assert slugs("state=running&state=pending") == {"a-running", "a-pending", "b-running"}
    bad = api.get("/api/v1/hubs/?state=sleeping")
    assert bad.status_code == 400 and "state" in bad.json()


def test_pagination(api, alice):
    for i in range(3):
        HubFactory(owner=alice, slug=f"page-{i}")
    api.force_authenticate(alice)
    assert len(api.get("/api/v1/hubs/").json()["results"]) == 3
    first = api.get("/api/v1/hubs/?page_size=2").json()
    assert first["count"] == 3 and len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert len(second["results"]) == 1


def test_catalogues_list_enabled_entries_only(api, alice):
    GpuTypeFactory(name="k80", enabled=False)
    api.force_authenticate(alice)
    gpus = api.get("/api/v1/gpu-types/").json()["results"]
    assert {g["name"] for g in gpus} == {"a100", "h100", "a100-mig-1g10gb"}
    a100 = api.get("/api/v1/gpu-types/a100/").json()
    assert a100["node_label_value"] == "NVIDIA-A100-SXM4-80GB"
    assert a100["resource_name"] == "nvidia.com/gpu"
    assert api.get("/api/v1/gpu-types/k80/").status_code == 404
    hardware = api.get("/api/v1/hardware-options/").json()["results"]
    assert [h["name"] for h in hardware] == ["small", "medium", "large"]
    images = {i["name"]: i["interface"] for i in api.get("/api/v1/images/").json()["results"]}
    assert images == {
        "scipy": "jupyterlab",
        "datascience": "jupyterlab",
        "rstudio": "rstudio",
        "code-server": "vscode",
    }
    assert api.post("/api/v1/images/", {"name": "x"}, format="json").status_code == 405


def test_unknown_hub_is_json_404(api, alice):
    api.force_authenticate(alice)
    response = api.get("/api/v1/hubs/424242/")
    assert response.status_code == 404
    assert response.json() == {"detail": "No Hub matches the given query."}


def test_list_queries_do_not_grow_with_hubs(api, alice, django_assert_max_num_queries):
    for i in range(5):
        HubFactory(owner=alice, slug=f"many-{i}", state=HubState.RUNNING)
    api.force_authenticate(alice)
    with django_assert_max_num_queries(12):
        response = api.get("/api/v1/hubs/")
    assert len(response.json()["results"]) == 5


@pytest.mark.parametrize(
    "live_state",
    ["approved", "provisioning", "running", "updating", "expiring", "suspended", "failed"],
)
def test_delete_works_in_every_live_state(
    api, alice, live_state, queued, django_capture_on_commit_callbacks
):
    """Never a 409 to retry: work under way is left to finish (the deprovisioning task waits
    for the hub's lock), then the hub goes."""
    hub = HubFactory(owner=alice, state=live_state)
    api.force_authenticate(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/api/v1/hubs/{hub.pk}/")
    assert response.status_code == 202, response.json()
    assert response.json()["state"] == HubState.DEPROVISIONING
    assert queued == [("deprovision", (hub.pk,), {"queue": "provisioning"})]
