"""Who may resume a suspended hub or delete it at once (portal admins only), on the web and in
the API, and who sees until when its data is kept: alice (owner), bob (another researcher),
charlie (admin) and an anonymous caller."""

import datetime

import pytest
import yaml
from django.urls import reverse

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from tests.factories import HubFactory, api_token

pytestmark = pytest.mark.django_db

CALLERS = ["alice", "bob", "charlie", "anonymous"]
DAY = datetime.timedelta(days=1)


@pytest.fixture
def suspended(alice, today):
    """Alice's suspended hub, whose end date an admin already moved into the future."""
    return HubFactory(
        owner=alice, slug="alice-course", state=HubState.SUSPENDED, start_date=today,
        end_date=today + 10 * DAY,
    )  # fmt: skip


def login(client, request, who):
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    return client


ACTIONS = [
    ("hubs:resume", HubState.PROVISIONING, "provision"),
    ("hubs:delete-now", HubState.DEPROVISIONING, "deprovision"),
]


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(("name", "effect", "task"), ACTIONS)
def test_web_admin_actions(
    client, request, suspended, queued, django_capture_on_commit_callbacks, who, name, effect, task
):
    client = login(client, request, who)
    url = reverse(name, args=[suspended.pk])
    assert client.get(url).status_code in (302, 403, 405)  # never changes anything
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    state = Hub.objects.get(pk=suspended.pk).state
    if who == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    elif who == "charlie":
        assert response.status_code == 302
        assert response["Location"] == reverse("hubs:detail", args=[suspended.pk])
        assert state == effect and [name for name, *_ in queued] == [task]
        return
    else:
        assert response.status_code == 403
    assert state == HubState.SUSPENDED and queued == []


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(("action", "effect", "task"), [
    ("resume", HubState.PROVISIONING, "provision"),
    ("delete-now", HubState.DEPROVISIONING, "deprovision"),
])  # fmt: skip
def test_api_admin_actions(
    api, request, suspended, queued, django_capture_on_commit_callbacks, who, action, effect, task
):
    if who != "anonymous":
        token = api_token(request.getfixturevalue(who))
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/hubs/{suspended.pk}/{action}/", {}, format="json")
    expected = {"alice": 403, "bob": 404, "charlie": 202, "anonymous": 401}[who]
    assert response.status_code == expected, response.content
    state = Hub.objects.get(pk=suspended.pk).state
    if who == "charlie":
        assert response.json()["state"] == effect == state
        assert [name for name, *_ in queued] == [task]
    else:
        assert state == HubState.SUSPENDED and queued == []


def test_api_resume_answers_409_when_the_end_date_has_passed(api, charlie, alice, today):
    hub = HubFactory(
        owner=alice, state=HubState.SUSPENDED, start_date=today - 9 * DAY, end_date=today - DAY
    )
    api.force_authenticate(charlie)
    response = api.post(f"/api/v1/hubs/{hub.pk}/resume/", {}, format="json")
    assert response.status_code == 409 and "extend it first" in response.json()["detail"]


def test_api_resume_answers_409_when_not_suspended(api, charlie, hub):
    api.force_authenticate(charlie)
    assert api.post(f"/api/v1/hubs/{hub.pk}/resume/", {}, format="json").status_code == 409
    assert api.post(f"/api/v1/hubs/{hub.pk}/delete-now/", {}, format="json").status_code == 409


@pytest.mark.parametrize("who", CALLERS)
def test_detail_page_shows_data_kept_until_and_admin_buttons(client, request, suspended, who):
    client = login(client, request, who)
    response = client.get(reverse("hubs:detail", args=[suspended.pk]))
    if who == "anonymous":
        assert response.status_code == 302
        return
    if who == "bob":
        assert response.status_code == 404
        return
    page = response.content.decode()
    kept = suspended.data_kept_until().strftime("%Y-%m-%d %H:%M")
    assert "data is kept until" in page and kept in page
    buttons = (
        reverse("hubs:resume", args=[suspended.pk]) in page,
        reverse("hubs:delete-now", args=[suspended.pk]) in page,
    )
    assert buttons == ((True, True) if who == "charlie" else (False, False))


def test_schema_lists_the_admin_actions(client):
    paths = yaml.safe_load(client.get("/api/schema/").content)["paths"]
    assert "202" in paths["/api/v1/hubs/{id}/resume/"]["post"]["responses"]
    assert "202" in paths["/api/v1/hubs/{id}/delete-now/"]["post"]["responses"]
