"""Changes to a running hub through the web pages and the API, with who may do what."""

import pytest
from django.urls import reverse

from portal.hubs import lifecycle, revisions
from portal.hubs.lifecycle import HubState, RevisionState
from portal.hubs.models import Hub
from portal.hubs.services import changes
from tests.factories import api_token

pytestmark = pytest.mark.django_db

CALLERS = ["alice", "bob", "charlie", "anonymous"]
LOGIN = "login"


def change(hub: Hub, **overrides) -> dict:
    data = revisions.form_data(revisions.spec_of_hub(hub))
    data.update({k: str(v) if isinstance(v, int) else v for k, v in overrides.items()})
    return data


@pytest.fixture
def history(running_hub, alice, queued):
    """Revision 1 superseded by an applied #2 (the hub running again), and a pending #3."""
    changes.request_change(running_hub, alice, change(running_hub, expected_users=20))
    lifecycle.mark_running(running_hub.pk)
    changes.request_change(running_hub, alice, change(running_hub, expected_users=80))
    running_hub.refresh_from_db()
    return running_hub


# --- Web ----------------------------------------------------------------------------------------

WEB = [
    ("hubs:change", "get", {}, {"alice": 200, "bob": 404, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:revision", "get", {"number": 3}, {"alice": 200, "bob": 404, "charlie": 200}),
    ("hubs:revision_rollback", "get", {"number": 1}, {"alice": 200, "bob": 404, "charlie": 200}),
    ("hubs:revision_approve", "post", {"number": 3}, {"alice": 403, "bob": 403, "charlie": 302}),
    ("hubs:revision_reject", "get", {"number": 3}, {"alice": 403, "bob": 403, "charlie": 200}),
    ("hubs:revision_reject", "post", {"number": 3}, {"alice": 403, "bob": 403, "charlie": 302}),
    ("hubs:change_preview", "post", {}, {"alice": 200, "bob": 404, "charlie": 200}),
]


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(
    ("name", "method", "kwargs", "expected"), WEB, ids=[f"{w[1]}-{w[0]}" for w in WEB]
)
def test_web_ownership(client, request, history, name, method, kwargs, expected, who):
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    url = reverse(name, kwargs={"pk": history.pk, **kwargs})
    body = {"reason": "No."} if "reject" in name else change(history, idle_timeout_minutes=30)
    response = getattr(client, method)(url, body if method == "post" else {})
    want = expected.get(who, LOGIN)
    if want == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    else:
        assert response.status_code == want
    third = history.revisions.get(number=3)
    if want == 302 and "approve" in name:
        assert third.state == RevisionState.APPLIED
    elif want == 302 and "reject" in name:
        assert third.state == RevisionState.REJECTED
    else:
        assert third.state == RevisionState.PENDING


def test_member_cannot_change(client, running_hub, bob):
    running_hub.members.create(user=bob, role="member")
    client.force_login(bob)
    assert client.get(reverse("hubs:detail", args=[running_hub.pk])).status_code == 200
    assert client.get(reverse("hubs:change", args=[running_hub.pk])).status_code == 403
    response = client.post(reverse("hubs:change", args=[running_hub.pk]), change(running_hub))
    assert response.status_code == 403


def test_change_form_is_prefilled_and_takes_query_overrides(client, running_hub, alice):
    client.force_login(alice)
    url = reverse("hubs:change", args=[running_hub.pk])
    form = client.get(url).context["form"]
    assert form.initial["expected_users"] == "10"
    assert form.initial["images"] == ["scipy"]
    form = client.get(url, {"end_date": "2027-07-31", "images": ["scipy", "rstudio"]}).context[
        "form"
    ]
    assert form.initial["end_date"] == "2027-07-31"
    assert form.initial["images"] == ["scipy", "rstudio"]
    assert 'value="2027-07-31"' in client.get(url, {"end_date": "2027-07-31"}).content.decode()


def test_preview_then_submit(
    client, running_hub, alice, queued, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    data = change(running_hub, expected_users=20)
    page = client.post(reverse("hubs:change_preview", args=[running_hub.pk]), data)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-field="expected_users"' in html
    assert "ResourceQuota" in html and "+    pods: &#x27;20&#x27;" in html
    assert 'name="expected_users" value="20"' in html  # carried to the confirm button
    assert not running_hub.revisions.filter(number__gt=1).exists()  # nothing saved yet

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("hubs:change", args=[running_hub.pk]), data)
    assert response.status_code == 302
    running_hub.refresh_from_db()
    assert (running_hub.state, running_hub.expected_users) == (HubState.UPDATING, 20)
    assert len(queued) == 1


def test_preview_shows_field_errors(client, running_hub, alice):
    client.force_login(alice)
    data = change(running_hub, expected_users=0, slug="other")
    page = client.post(reverse("hubs:change_preview", args=[running_hub.pk]), data)
    assert page.status_code == 200
    assert set(page.context["form"].errors) == {"expected_users", "slug"}


def test_edit_again_keeps_the_values(client, running_hub, alice):
    client.force_login(alice)
    data = {**change(running_hub, expected_users=33), "edit": "1"}
    page = client.post(reverse("hubs:change", args=[running_hub.pk]), data)
    assert page.status_code == 200 and page.context["form"]["expected_users"].value() == "33"
    assert not running_hub.revisions.filter(number__gt=1).exists()


def test_change_of_a_pending_hub_is_refused_with_a_message(client, hub, alice):
    client.force_login(alice)
    response = client.get(reverse("hubs:change", args=[hub.pk]), follow=True)
    assert "only a running hub" in response.content.decode().lower()


def test_detail_lists_revisions_and_rollback(client, history, alice):
    changes.reject_change(history.revisions.get(number=3), alice, "Withdrawn")  # any decider
    client.force_login(alice)
    html = client.get(reverse("hubs:detail", args=[history.pk])).content.decode()
    assert 'id="revision-1"' in html and 'id="revision-3"' in html
    assert "expected_users" in html
    assert reverse("hubs:revision_rollback", args=[history.pk, 1]) in html
    assert reverse("hubs:revision_rollback", args=[history.pk, 2]) not in html  # current
    assert reverse("hubs:change", args=[history.pk]) in html


def test_rollback_page_then_post(client, history, alice, charlie, queued):
    changes.reject_change(history.revisions.get(number=3), charlie, "No")
    client.force_login(alice)
    url = reverse("hubs:revision_rollback", args=[history.pk, 1])
    page = client.get(url)
    assert "-    pods: &#x27;20&#x27;" in page.content.decode()
    assert client.post(url).status_code == 302
    fourth = history.revisions.get(number=4)
    assert fourth.rollback_of.number == 1 and fourth.state == RevisionState.APPLIED


def test_queue_shows_pending_change_with_diff(client, history, charlie):
    client.force_login(charlie)
    html = client.get(reverse("hubs:queue")).content.decode()
    assert f'id="change-{history.pk}-3"' in html
    assert 'data-field="expected_users" class="exceeds"' in html
    assert "80 expected users" in html
    assert "ResourceQuota" in html


# --- API ----------------------------------------------------------------------------------------

API = [
    ("get", "", {"alice": 200, "bob": 404, "charlie": 200}),
    ("get", "3/", {"alice": 200, "bob": 404, "charlie": 200}),
    ("post", "", {"alice": 201, "bob": 404, "charlie": 201}),
    ("post", "preview/", {"alice": 200, "bob": 404, "charlie": 200}),
    ("post", "3/approve/", {"alice": 403, "bob": 404, "charlie": 200}),
    ("post", "3/reject/", {"alice": 403, "bob": 404, "charlie": 200}),
    ("post", "1/rollback/", {"alice": 201, "bob": 404, "charlie": 201}),
]


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(("method", "path", "expected"), API, ids=[f"{a[0]}-{a[1]}" for a in API])
def test_api_ownership(api, request, history, method, path, expected, who):
    if who != "anonymous":
        token = api_token(request.getfixturevalue(who))
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    if path in ("", "1/rollback/") and method == "post":
        # Free the hub for a new change: decide #3 first.
        changes.reject_change(history.revisions.get(number=3), history.owner, "Withdrawn")
    body = {"reason": "No."} if "reject" in path else {"idle_timeout_minutes": 30}
    url = f"/api/v1/hubs/{history.pk}/revisions/{path}"
    response = getattr(api, method)(url, body, format="json")
    assert response.status_code == expected.get(who, 401), response.content
    if response.status_code >= 400:
        assert "detail" in response.json()


def test_api_change_inside_policy(
    api, running_hub, alice, queued, django_capture_on_commit_callbacks
):
    api.force_authenticate(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/v1/hubs/{running_hub.pk}/revisions/", {"expected_users": 20}, format="json"
        )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["number"], body["state"], body["author"]) == (2, "applied", "alice")
    assert body["changed_fields"] == ["expected_users"]
    assert body["spec"]["expected_users"] == 20 and body["spec"]["images"] == ["scipy"]
    running_hub.refresh_from_db()
    assert running_hub.state == HubState.UPDATING
    assert len(queued) == 1
    listed = api.get(f"/api/v1/hubs/{running_hub.pk}/revisions/").json()
    assert [r["number"] for r in listed["results"]] == [2, 1]


def test_api_beyond_policy_then_approve(
    api, running_hub, alice, charlie, queued, django_capture_on_commit_callbacks
):
    api.force_authenticate(alice)
    url = f"/api/v1/hubs/{running_hub.pk}/revisions/"
    body = api.post(url, {"expected_users": 80}, format="json").json()
    assert body["state"] == "pending" and body["violations"][0]["field"] == "expected_users"
    assert api.post(url, {"expected_users": 20}, format="json").status_code == 409
    api.force_authenticate(charlie)
    assert api.post(f"{url}2/reject/", {}, format="json").json() == {
        "reason": ["This field is required."]
    }
    with django_capture_on_commit_callbacks(execute=True):
        approved = api.post(f"{url}2/approve/", {}, format="json")
    assert approved.status_code == 200 and approved.json()["approver"] == "charlie"
    again = api.post(f"{url}2/approve/", {}, format="json")
    assert again.status_code == 409 and "applied" in again.json()["detail"]
    assert len(queued) == 1


def test_api_preview(api, running_hub, alice):
    api.force_authenticate(alice)
    response = api.post(
        f"/api/v1/hubs/{running_hub.pk}/revisions/preview/",
        {"expected_users": 20, "jobs_access": True},
        format="json",
    )
    assert response.status_code == 200
    body = response.json()
    assert sorted(body["changed_fields"]) == ["expected_users", "jobs_access"]
    assert {"field": "expected_users", "label": "Expected users", "old": "10", "new": "20"} in (
        body["spec_diff"]
    )
    kinds = {(o["kind"], o["change"]) for o in body["object_diff"]}
    assert ("ResourceQuota", "changed") in kinds
    assert any(change == "added" for _, change in kinds)
    assert "Secret" not in {o["kind"] for o in body["object_diff"]}  # secrets do not change
    assert running_hub.revisions.filter(number__gt=1).count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"expected_users": "many"}, "expected_users"),
        ({"expected_users": 0}, "expected_users"),
        ({"slug": "renamed"}, "slug"),
        ({"images": ["no-such-image"]}, "images"),
        ({"end_date": "2000-01-01"}, "end_date"),
        ({"collaborators": [{"username": "nobody"}]}, "collaborators"),
        ({}, "non_field_errors"),
    ],
)
def test_api_bad_input_is_400_with_field_messages(api, running_hub, alice, body, field):
    api.force_authenticate(alice)
    for path in ("", "preview/"):
        response = api.post(f"/api/v1/hubs/{running_hub.pk}/revisions/{path}", body, format="json")
        assert response.status_code == 400, response.content
        assert field in response.json()


def test_api_change_of_a_pending_hub_is_409(api, hub, alice):
    api.force_authenticate(alice)
    response = api.post(f"/api/v1/hubs/{hub.pk}/revisions/", {"expected_users": 20}, format="json")
    assert response.status_code == 409
    assert "only a running hub" in response.json()["detail"]


def test_api_unknown_revision_is_404(api, running_hub, alice):
    api.force_authenticate(alice)
    assert api.get(f"/api/v1/hubs/{running_hub.pk}/revisions/9/").status_code == 404
    assert api.get("/api/v1/hubs/999999/revisions/").status_code == 404


def test_api_rollback(api, history, alice, charlie, queued):
    changes.reject_change(history.revisions.get(number=3), charlie, "No")
    api.force_authenticate(alice)
    response = api.post(f"/api/v1/hubs/{history.pk}/revisions/1/rollback/", format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["rollback_of"] == 1 and response.json()["number"] == 4
    current = api.post(f"/api/v1/hubs/{history.pk}/revisions/4/rollback/", format="json")
    assert current.status_code == 409


def test_schema_lists_revision_endpoints(client):
    import yaml

    paths = yaml.safe_load(client.get("/api/schema/").content)["paths"]
    base = "/api/v1/hubs/{hub_pk}/revisions/"
    assert {"get", "post"} <= set(paths[base])
    for suffix in ("{number}/", "{number}/approve/", "{number}/reject/", "{number}/rollback/"):
        assert base + suffix in paths
    assert "post" in paths[base + "preview/"]
