"""Who may do what, for every page and endpoint: alice (owner), bob (another researcher),
charlie (portal admin) and an anonymous caller. Others' hubs are 404, never 403."""

import pytest
from django.urls import reverse

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, Member
from tests.factories import HubFactory, UserFactory, api_token

pytestmark = pytest.mark.django_db

CALLERS = ["alice", "bob", "charlie", "anonymous"]
LOGIN = "login"  # anonymous web callers are sent to sign in


def web_client(client, request, who):
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    return client


def api_client(api, request, who):
    if who != "anonymous":
        # Through the real token header, as scripts call the API.
        token = api_token(request.getfixturevalue(who))
        api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return api


# --- Web pages ----------------------------------------------------------------------------------

# page, method, expected status per caller (LOGIN = redirect to sign-in)
WEB = [
    ("hubs:list", "get", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:create", "get", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:detail", "get", {"alice": 200, "bob": 404, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:status", "get", {"alice": 200, "bob": 404, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:delete", "get", {"alice": 200, "bob": 404, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:cancel", "post", {"alice": 302, "bob": 404, "charlie": 302, "anonymous": LOGIN}),
    ("hubs:delete", "post", {"alice": 302, "bob": 404, "charlie": 302, "anonymous": LOGIN}),
    ("hubs:queue", "get", {"alice": 403, "bob": 403, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:approve", "post", {"alice": 403, "bob": 403, "charlie": 302, "anonymous": LOGIN}),
    ("hubs:reject", "get", {"alice": 403, "bob": 403, "charlie": 200, "anonymous": LOGIN}),
    ("hubs:reject", "post", {"alice": 403, "bob": 403, "charlie": 302, "anonymous": LOGIN}),
]
# What a successful call does to alice's pending hub.
WEB_EFFECT = {
    ("hubs:cancel", "post"): HubState.CANCELLED,
    ("hubs:delete", "post"): HubState.CANCELLED,  # deleting a pending request cancels it
    ("hubs:approve", "post"): HubState.APPROVED,
    ("hubs:reject", "post"): HubState.REJECTED,
}


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(("name", "method", "expected"), WEB, ids=[f"{w[1]}-{w[0]}" for w in WEB])
def test_web_page(client, request, hub, queued, name, method, expected, who):
    client = web_client(client, request, who)
    kwargs = {} if name in ("hubs:list", "hubs:create", "hubs:queue") else {"pk": hub.pk}
    url = reverse(name, kwargs=kwargs)

    response = getattr(client, method)(
        url, {"reason": "Not this term."} if method == "post" else {}
    )

    want = expected[who]
    if want == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    else:
        assert response.status_code == want
    hub.refresh_from_db()
    effect = WEB_EFFECT.get((name, method))
    if effect and want == 302:
        assert hub.state == effect
    else:
        assert hub.state == HubState.PENDING


@pytest.mark.parametrize("who", CALLERS)
def test_hub_list_shows_own_and_collaborating(client, request, hub, who):
    other = HubFactory(owner=UserFactory(username="dora"), slug="dora-lab")
    Member.objects.create(hub=other, user=request.getfixturevalue("bob"))
    response = web_client(client, request, who).get(reverse("hubs:list"))
    if who == "anonymous":
        assert response.status_code == 302
        return
    shown = {h.slug for h in response.context["hubs"]}
    assert (
        shown
        == {
            "alice": {"alice-course"},
            "bob": {"dora-lab"},
            "charlie": {"alice-course", "dora-lab"},
        }[who]
    )


def test_member_sees_but_cannot_manage(client, hub, bob):
    Member.objects.create(hub=hub, user=bob, role=Member.Role.MEMBER)
    client.force_login(bob)
    assert client.get(reverse("hubs:detail", args=[hub.pk])).status_code == 200
    assert client.post(reverse("hubs:cancel", args=[hub.pk])).status_code == 403
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING


def test_co_owner_may_cancel(client, hub, bob):
    Member.objects.create(hub=hub, user=bob, role=Member.Role.CO_OWNER)
    client.force_login(bob)
    assert client.post(reverse("hubs:cancel", args=[hub.pk])).status_code == 302
    hub.refresh_from_db()
    assert hub.state == HubState.CANCELLED


# --- API ----------------------------------------------------------------------------------------

API = [
    ("get", "/api/v1/hubs/{pk}/", {"alice": 200, "bob": 404, "charlie": 200, "anonymous": 401}),
    ("delete", "/api/v1/hubs/{pk}/", {"alice": 202, "bob": 404, "charlie": 202, "anonymous": 401}),
    (
        "post",
        "/api/v1/hubs/{pk}/approve/",
        {"alice": 403, "bob": 404, "charlie": 200, "anonymous": 401},
    ),
    (
        "post",
        "/api/v1/hubs/{pk}/reject/",
        {"alice": 403, "bob": 404, "charlie": 200, "anonymous": 401},
    ),
    ("get", "/api/v1/hubs/", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 401}),
    ("post", "/api/v1/hubs/", {"alice": 201, "bob": 201, "charlie": 201, "anonymous": 401}),
    (
        "get",
        "/api/v1/hardware-options/",
        {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 401},
    ),
    ("get", "/api/v1/gpu-types/", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 401}),
    ("get", "/api/v1/images/", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 401}),
    (
        "get",
        "/api/v1/storage-options/",
        {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 401},
    ),
    ("get", "/api/v1/images/scipy/", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 401}),
    ("get", "/api/schema/", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 200}),
    ("get", "/api/docs/", {"alice": 200, "bob": 200, "charlie": 200, "anonymous": 200}),
]
API_EFFECT = {
    ("delete", "/api/v1/hubs/{pk}/"): HubState.CANCELLED,
    ("post", "/api/v1/hubs/{pk}/approve/"): HubState.APPROVED,
    ("post", "/api/v1/hubs/{pk}/reject/"): HubState.REJECTED,
}


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize(("method", "path", "expected"), API, ids=[f"{a[0]}-{a[1]}" for a in API])
def test_api_endpoint(api, request, hub, payload, queued, method, path, expected, who):
    api = api_client(api, request, who)
    body = payload() if path == "/api/v1/hubs/" else {"reason": "Not this term."}

    response = getattr(api, method)(path.format(pk=hub.pk), body, format="json")

    assert response.status_code == expected[who], response.content
    if response.status_code >= 400:
        assert "detail" in response.json()
    hub.refresh_from_db()
    effect = API_EFFECT.get((method, path))
    if effect and response.status_code < 300:
        assert hub.state == effect
        assert response.json()["state"] == effect
    else:
        assert hub.state == HubState.PENDING
    if (method, path, response.status_code) == ("post", "/api/v1/hubs/", 201):
        assert Hub.objects.get(slug="stats-101").owner.username == who


@pytest.mark.parametrize("who", ["alice", "bob", "charlie"])
def test_api_list_is_narrowed(api, request, hub, who):
    other = HubFactory(owner=UserFactory(username="dora"), slug="dora-lab")
    Member.objects.create(hub=other, user=request.getfixturevalue("bob"))
    response = api_client(api, request, who).get("/api/v1/hubs/")
    assert response.status_code == 200
    assert {h["slug"] for h in response.json()["results"]} == {
        "alice": {"alice-course"},
        "bob": {"dora-lab"},
        "charlie": {"alice-course", "dora-lab"},
    }[who]


def test_api_member_cannot_delete(api, hub, bob):
    Member.objects.create(hub=hub, user=bob, role=Member.Role.MEMBER)
    api.force_authenticate(bob)
    assert api.get(f"/api/v1/hubs/{hub.pk}/").status_code == 200
    assert api.delete(f"/api/v1/hubs/{hub.pk}/").status_code == 403
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING
