"""Personal API tokens: hashed storage, the header, expiry and revocation, scopes, the page, the
API and createapitoken."""

import datetime
import hashlib
import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal.accounts import tokens
from portal.accounts.models import ApiToken
from portal.audit.models import AuditEvent
from portal.hubs.lifecycle import HubState
from tests.factories import HubFactory, api_token

pytestmark = pytest.mark.django_db
TOKEN_RE = r"hod_[0-9a-f]{8}[A-Za-z0-9_-]{43}"


def client_with(token: str, keyword: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {token}")
    return client


# --- Storage and authentication -----------------------------------------------------------------


def test_token_is_stored_only_as_a_digest(alice):
    token, clear = tokens.issue(alice, name="ci", scope="read")
    assert re.fullmatch(TOKEN_RE, clear)
    row = ApiToken.objects.get(pk=token.pk)
    assert row.digest == hashlib.sha256(clear.encode()).hexdigest()
    assert row.prefix == clear[:12] and clear not in str(vars(row))


@pytest.mark.parametrize("keyword", ["Token", "Bearer", "token", "bearer"])
def test_token_and_bearer_headers_work(alice, keyword):
    assert client_with(api_token(alice), keyword).get("/api/v1/hubs/").status_code == 200


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Token hod_0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefg", "Invalid token."),
        ("Token not-a-token", "Invalid token."),
        ("Token", "exactly one token"),
        ("Token a b", "exactly one token"),
        ("Bearer ", "exactly one token"),
    ],
)
def test_bad_tokens_are_401_with_a_reason(alice, header, message):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/hubs/")
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert response["WWW-Authenticate"] == "Token"


def test_a_wrong_secret_with_a_real_prefix_is_refused(alice):
    clear = api_token(alice)
    forged = clear[:12] + ("A" if clear[12] != "A" else "B") + clear[13:]
    assert client_with(forged).get("/api/v1/hubs/").status_code == 401


def test_expired_token_is_401(alice):
    token, clear = tokens.issue(alice, name="short", scope="read")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    response = client_with(clear).get("/api/v1/hubs/")
    assert response.status_code == 401
    assert response.json()["detail"] == "This token has expired."


def test_revoked_token_is_401(alice):
    token, clear = tokens.issue(alice, name="gone", scope="read")
    assert tokens.revoke(token) is True
    assert tokens.revoke(token) is False  # once
    response = client_with(clear).get("/api/v1/hubs/")
    assert response.status_code == 401
    assert response.json()["detail"] == "This token was revoked."


def test_inactive_user_token_is_401(alice):
    clear = api_token(alice)
    alice.is_active = False
    alice.save()
    assert client_with(clear).get("/api/v1/hubs/").status_code == 401


def test_last_used_is_written_at_most_once_a_minute(alice):
    token, clear = tokens.issue(alice, name="ci", scope="read")
    client = client_with(clear)
    client.get("/api/v1/hubs/")
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    client.get("/api/v1/hubs/")
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    earlier = timezone.now() - datetime.timedelta(minutes=2)
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=earlier)
    client.get("/api/v1/hubs/")
    assert ApiToken.objects.get(pk=token.pk).last_used_at > earlier


def test_a_request_with_a_recently_used_token_writes_nothing(alice):
    """No database write on every authenticated request: within the minute, none at all."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    _, clear = tokens.issue(alice, name="ci", scope="read")
    client = client_with(clear)
    client.get("/api/v1/hubs/")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/v1/hubs/").status_code == 200
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))
    ]
    assert writes == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "too long"),
        ({"name": "x", "scope": "root"}, "Unknown scope"),
        ({"name": "x", "scope": "admin"}, "Only portal admins"),
        ({"name": "x", "expires_at": timezone.now()}, "future"),
    ],
)
def test_issue_refuses_bad_input(alice, kwargs, message):
    with pytest.raises(tokens.TokenError, match=message):
        tokens.issue(alice, **kwargs)
    assert not ApiToken.objects.exists()


# --- Scopes -------------------------------------------------------------------------------------


def test_read_scope_reads_but_does_not_write(alice, payload):
    client = client_with(api_token(alice, "read"))
    assert client.get("/api/v1/hubs/").status_code == 200
    response = client.post("/api/v1/hubs/", payload(), format="json")
    assert response.status_code == 403
    assert "read scope" in response.json()["detail"]
    assert not alice.hubs.exists()


def test_write_scope_requests_a_hub(alice, payload, queued):
    response = client_with(api_token(alice, "write")).post(
        "/api/v1/hubs/", payload(), format="json"
    )
    assert response.status_code == 201, response.content


def test_admin_actions_need_the_admin_scope(charlie, hub):
    response = client_with(api_token(charlie, "write")).post(
        f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json"
    )
    assert response.status_code == 403
    assert "admin scope" in response.json()["detail"]
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING
    response = client_with(api_token(charlie, "admin")).post(
        f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json"
    )
    assert response.status_code == 200


def test_an_admins_write_token_changes_only_their_own_hubs(charlie, hub, queued):
    own = HubFactory(owner=charlie, slug="charlies", state=HubState.RUNNING)
    client = client_with(api_token(charlie, "write"))
    response = client.delete(f"/api/v1/hubs/{hub.pk}/")
    assert response.status_code == 403
    assert "admin scope" in response.json()["detail"]
    hub.refresh_from_db()
    assert hub.state == HubState.PENDING
    assert client.get(f"/api/v1/hubs/{hub.pk}/").status_code == 200  # reading stays open
    assert client.delete(f"/api/v1/hubs/{own.pk}/").status_code == 202
    admin = client_with(api_token(charlie, "admin"))
    assert admin.delete(f"/api/v1/hubs/{hub.pk}/").status_code == 202


def test_an_admins_write_token_changes_no_one_elses_members_or_spec(charlie, alice, bob, queued):
    """The same limit on the hub's sub-resources (members, changes), which look the hub up
    from the URL rather than as the view's object."""
    others = HubFactory(owner=alice, slug="alices", state=HubState.RUNNING)
    own = HubFactory(owner=charlie, slug="charlies-own", state=HubState.RUNNING)
    write, admin = (
        client_with(api_token(charlie, "write")),
        client_with(api_token(charlie, "admin")),
    )
    member = {"username": bob.username, "role": "member"}
    change = {"description": "Changed by the admin"}

    for url, body in ((f"/api/v1/hubs/{others.pk}/members/", member),
                      (f"/api/v1/hubs/{others.pk}/revisions/", change)):  # fmt: skip
        refused = write.post(url, body, format="json")
        assert refused.status_code == 403 and "admin scope" in refused.json()["detail"], url
        assert write.get(url).status_code == 200  # reading stays open
    assert not others.members.exists() and not others.revisions.filter(number=2).exists()

    assert write.post(f"/api/v1/hubs/{own.pk}/members/", member, format="json").status_code == 201
    assert (
        admin.post(f"/api/v1/hubs/{others.pk}/members/", member, format="json").status_code == 201
    )


def test_admin_token_of_a_former_admin_acts_as_write(charlie, hub):
    clear = api_token(charlie, "admin")
    charlie.is_staff = charlie.is_superuser = False
    charlie.save()
    client = client_with(clear)
    assert client.post(f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json").status_code == 404
    assert client.get("/api/v1/audit/").status_code == 403


def test_admin_only_endpoint_needs_admin_scope_even_to_read(charlie):
    assert client_with(api_token(charlie, "read")).get("/api/v1/audit/").status_code == 403
    assert client_with(api_token(charlie, "admin")).get("/api/v1/audit/").status_code == 200


def test_session_calls_are_not_limited_by_scopes(charlie, hub):
    client = APIClient()
    client.force_login(charlie)
    assert client.post(f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json").status_code == 200


# --- The API ------------------------------------------------------------------------------------


def test_api_create_shows_the_token_once_and_lists_without_it(alice):
    client = client_with(api_token(alice, "write"))
    response = client.post(
        "/api/v1/tokens/",
        {"name": "laptop", "scope": "read", "expires_in_days": 30},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert re.fullmatch(TOKEN_RE, body["token"]) and "digest" not in body
    assert body["scope"] == "read" and body["expires_at"]
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert {t["name"] for t in listed} == {"laptop", "test-write"}
    assert all("token" not in t and "digest" not in t for t in listed)
    assert body["token"] not in str(listed)
    assert client_with(body["token"]).get("/api/v1/hubs/").status_code == 200


def test_api_revoke_own_token(alice, bob):
    mine, mine_clear = tokens.issue(alice, name="old", scope="read")
    theirs, _ = tokens.issue(bob, name="bob's", scope="read")
    client = client_with(api_token(alice, "write"))
    assert client.delete(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
    assert client.get(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
    assert client.delete(f"/api/v1/tokens/{mine.pk}/").status_code == 204
    assert client_with(mine_clear).get("/api/v1/hubs/").status_code == 401
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_api_a_token_cannot_mint_a_stronger_or_longer_lived_one(charlie):
    token, clear = tokens.issue(
        charlie,
        name="short",
        scope="write",
        expires_at=timezone.now() + datetime.timedelta(days=1),
    )
    client = client_with(clear)
    response = client.post("/api/v1/tokens/", {"name": "up", "scope": "admin"}, format="json")
    assert response.status_code == 403
    assert "cannot create a token with the admin scope" in response.json()["detail"]
    response = client.post("/api/v1/tokens/", {"name": "forever"}, format="json")
    assert response.status_code == 201
    assert response.json()["expires_at"] is not None
    made = ApiToken.objects.get(name="forever")
    assert made.expires_at <= token.expires_at


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "scope": "admin"}, "scope"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_in_days": "soon"}, "expires_in_days"),
    ],
)
def test_api_create_bad_input_is_400(alice, body, field):
    response = client_with(api_token(alice, "write")).post("/api/v1/tokens/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert ApiToken.objects.filter(user=alice).count() == 1


def test_api_read_token_cannot_create_tokens(alice):
    response = client_with(api_token(alice, "read")).post(
        "/api/v1/tokens/", {"name": "x"}, format="json"
    )
    assert response.status_code == 403


# --- The page -----------------------------------------------------------------------------------


def test_page_creates_shows_once_and_revokes(client, alice):
    client.force_login(alice)
    url = reverse("tokens:list")
    response = client.post(url, {"name": "notebook", "scope": "read", "expires_in_days": "7"})
    assert response.status_code == 200
    clear = re.search(TOKEN_RE, response.content.decode()).group(0)
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]
    token = ApiToken.objects.get(user=alice, name="notebook")
    assert token.digest == tokens.digest(clear) and token.expires_at
    page = client.get(url).content.decode()
    assert token.prefix in page and clear not in page and token.digest not in page
    response = client.post(reverse("tokens:revoke", args=[token.pk]), follow=True)
    assert "was revoked" in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_page_offers_admin_scope_to_admins_only(client, alice, charlie):
    client.force_login(alice)
    response = client.post(reverse("tokens:list"), {"name": "x", "scope": "admin"})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()
    client.force_login(charlie)
    response = client.post(
        reverse("tokens:list"), {"name": "ops", "scope": "admin", "expires_in_days": ""}
    )
    assert response.status_code == 200
    # No lifetime chosen: the longest one allowed (API_TOKEN_MAX_DAYS, 90 by default).
    lifetime = ApiToken.objects.get(user=charlie).expires_at - timezone.now()
    assert datetime.timedelta(days=89) < lifetime <= datetime.timedelta(days=90)


def test_page_cannot_revoke_others_tokens(client, alice, bob):
    token, _ = tokens.issue(bob, name="bob's", scope="read")
    client.force_login(alice)
    assert client.post(reverse("tokens:revoke", args=[token.pk])).status_code == 404
    assert client.get(reverse("tokens:list")).content.decode().count(token.prefix) == 0


def test_page_needs_sign_in(client):
    response = client.get(reverse("tokens:list"))
    assert response.status_code == 302 and "login" in response["Location"]


# --- createapitoken and the audit log ------------------------------------------------------------


def run(*args) -> str:
    out = io.StringIO()
    call_command("createapitoken", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_createapitoken_options(alice):
    clear = run("alice", "--scope", "read", "--expires-days", "5", "--name", "backup")
    token = ApiToken.objects.get(user=alice, name="backup")
    assert token.scope == "read" and token.digest == tokens.digest(clear)
    assert datetime.timedelta(days=4) < token.expires_at - timezone.now() <= datetime.timedelta(5)
    assert run("alice") and ApiToken.objects.get(user=alice, name="createapitoken").scope == "write"
    token.refresh_from_db()
    assert token.revoked_at is None  # another name is left alone


def test_createapitoken_admin_scope(alice):
    assert ApiToken.objects.count() == 0
    with pytest.raises(CommandError, match="Only portal admins"):
        run("alice", "--scope", "admin")
    assert not ApiToken.objects.exists()
    run("ops", "--admin")
    assert ApiToken.objects.get(user__username="ops").scope == "admin"


@pytest.mark.parametrize("days", ["0", "-3"])
def test_createapitoken_refuses_bad_expiry(alice, days):
    with pytest.raises(CommandError, match="at least 1"):
        run("alice", "--expires-days", days)


def test_token_creation_and_revocation_are_audited_without_the_secret(alice):
    token, clear = tokens.issue(alice, name="ci", scope="read")
    tokens.revoke(token)
    events = AuditEvent.objects.filter(object_type="accounts.apitoken", object_id=str(token.pk))
    assert sorted(events.values_list("action", flat=True)) == ["token.created", "token.revoked"]
    for event in events:
        assert clear not in str(event.details) and token.digest not in str(event.details)
