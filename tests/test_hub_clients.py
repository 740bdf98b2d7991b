"""Each hub's login client at the identity provider: registered when the hub is first
provisioned (RFC 7591), moved with the hub, deleted with it (RFC 7592), or one shared client.

Against the real test provider (tests/oidc_provider/, django-oauth-toolkit with the
registration endpoints), which checks the initial access token and the management tokens.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from portal.accounts import hub_clients
from portal.audit.models import AuditEvent
from portal.hubs import cluster
from portal.hubs.hubspec import from_hub, hub_queryset
from portal.hubs.models import Hub, LoginClient
from tests.factories import HubFactory
from tests.oidc_provider import harness
from tests.sso_support import INITIAL_TOKEN, PASSWORD
from tests.support import free_port, http_server, needs_postgresql, race

pytestmark = pytest.mark.django_db

CALLBACK = "https://stats-course.hubs.example.org/hub/oauth_callback"


@pytest.fixture
def hub():
    return HubFactory(slug="stats-course")


def log_in_as_the_hub(provider, login: hub_clients.Credentials, redirect_uri: str) -> dict:
    """What the hub's authenticator does: authorization code, then the token request with
    the client's credentials in the body; returns the user's claims from UserInfo."""
    browser = harness.Browser(provider, "Ada.Lovelace", PASSWORD)
    discovery = provider.discovery()
    query = urlencode(
        {
            "response_type": "code",
            "client_id": login.client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile email",
            "state": "s-1",
        }
    )
    back = urlsplit(browser.visit(f"{discovery['authorization_endpoint']}?{query}"))
    assert f"https://{back.netloc}{back.path}" == redirect_uri
    code = parse_qs(back.query)["code"][0]
    token = requests.post(
        discovery["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": login.client_id,
            "client_secret": login.client_secret,
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    userinfo = requests.get(
        discovery["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        timeout=10,
    )
    assert userinfo.status_code == 200, userinfo.text
    return userinfo.json()


def test_a_hub_gets_its_own_client_that_logs_users_in(registering, hub):
    login = hub_clients.ensure(hub, CALLBACK)

    at_provider = registering.client(login.client_id)
    assert at_provider["name"] == "hub-stats-course"
    assert at_provider["redirect_uris"] == [CALLBACK]
    assert at_provider["client_type"] == "confidential"
    assert log_in_as_the_hub(registering, login, CALLBACK)["preferred_username"] == "Ada.Lovelace"
    # Provisioning again finds the client it registered.
    assert hub_clients.ensure(hub, CALLBACK) == login
    assert LoginClient.objects.filter(hub=hub).count() == 1
    event = AuditEvent.objects.get(action="hub.login_client_registered")
    assert event.object_id == str(hub.pk)
    assert event.details == {"client_id": login.client_id, "redirect_uri": CALLBACK}


def test_the_hub_is_rendered_with_the_client_registered_for_it(registering, hub):
    login = hub_clients.ensure(hub, CALLBACK)

    spec = from_hub(hub_queryset().get(pk=hub.pk), "hubs.example.org")

    assert spec.login_client_id == login.client_id
    assert spec.login_callback_url == CALLBACK
    assert cluster.render_settings().identity_provider.for_hub(spec).client_id == login.client_id


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_workers_registering_the_same_hub_keep_one_client(registering, hub):
    got = []
    before = {c["client_id"] for c in registering.clients(name="hub-stats-course")}

    def provision():
        got.append(hub_clients.ensure(Hub.objects.get(pk=hub.pk), CALLBACK))

    race(provision, provision, losing=())

    assert len(got) == 2 and got[0] == got[1]
    after = {c["client_id"] for c in registering.clients(name="hub-stats-course")}
    assert after - before == {got[0].client_id}  # the other registration was deleted
    assert list(LoginClient.objects.values_list("client_id", flat=True)) == [got[0].client_id]
    hub_clients.remove(hub)


def test_a_refused_registration_says_why_and_keeps_nothing(registering, hub, settings):
    settings.OIDC_HUB_REGISTRATION_TOKEN = "not-the-initial-access-token"

    with pytest.raises(hub_clients.RegistrationError) as raised:
        hub_clients.ensure(hub, CALLBACK)

    assert not raised.value.transient
    assert raised.value.message.startswith(
        "The identity provider refused to register the hub's login client (HTTP 401, invalid_token"
    )
    assert "not-the-initial-access-token" not in raised.value.message
    assert not LoginClient.objects.exists()


def test_a_hub_at_a_new_address_keeps_its_client_with_the_new_redirect_uri(registering, hub):
    login = hub_clients.ensure(hub, CALLBACK)
    moved = CALLBACK.replace("hubs.example.org", "jupyter.uni.example")

    again = hub_clients.ensure(hub, moved)

    assert again.client_id == login.client_id
    assert registering.client(login.client_id)["redirect_uris"] == [moved]
    assert LoginClient.objects.get(hub=hub).redirect_uri == moved
    assert log_in_as_the_hub(registering, again, moved)["preferred_username"] == "Ada.Lovelace"


def test_without_contact_the_provider_is_not_called(registering, hub, settings):
    settings.OIDC_REGISTRATION_URL = f"http://127.0.0.1:{free_port()}/o/register/"

    assert hub_clients.ensure(hub, CALLBACK, contact=False) is None

    settings.OIDC_REGISTRATION_URL = ""
    login = hub_clients.ensure(hub, CALLBACK)
    moved = CALLBACK.replace("hubs.example.org", "jupyter.uni.example")
    assert hub_clients.ensure(hub, moved, contact=False) == login
    assert registering.client(login.client_id)["redirect_uris"] == [CALLBACK]


def test_removing_a_hubs_client_deletes_it_at_the_provider(registering, hub):
    login = hub_clients.ensure(hub, CALLBACK)

    assert hub_clients.remove(hub) == ""

    assert registering.client(login.client_id) is None
    assert not LoginClient.objects.exists()
    assert AuditEvent.objects.filter(action="hub.login_client_deleted").count() == 1
    assert hub_clients.remove(hub) == ""  # a second delivery of the task: nothing left


def test_a_client_the_provider_will_not_delete_is_reported_and_forgotten(registering, hub):
    login = hub_clients.ensure(hub, CALLBACK)
    LoginClient.objects.filter(hub=hub).update(registration_access_token="revoked-at-the-idp")

    why = hub_clients.remove(hub)

    assert why.startswith("the identity provider refused to delete it (HTTP 401")
    assert registering.client(login.client_id) is not None  # an IdP admin removes it
    assert not LoginClient.objects.exists()
    event = AuditEvent.objects.get(action="hub.login_client_left")
    assert event.details == {"client_id": login.client_id, "why": why}


def test_a_provider_that_does_not_answer_is_tried_again_later(registering, hub, settings):
    login = hub_clients.ensure(hub, CALLBACK)
    LoginClient.objects.filter(hub=hub).update(
        registration_client_uri=f"http://127.0.0.1:{free_port()}/o/register/x/"
    )
    with pytest.raises(hub_clients.RegistrationError) as raised:
        hub_clients.remove(hub)
    assert raised.value.transient
    assert LoginClient.objects.filter(hub=hub, client_id=login.client_id).exists()
    # The deletion's last try leaves the client for an IdP admin rather than keep the hub.
    why = hub_clients.remove(hub, last_try=True)
    assert why.startswith("The identity provider did not answer at http://127.0.0.1:")
    assert not LoginClient.objects.filter(hub=hub).exists()
    assert AuditEvent.objects.get(action="hub.login_client_left").details["why"] == why

    settings.OIDC_REGISTRATION_URL = f"http://127.0.0.1:{free_port()}/o/register/"
    with pytest.raises(hub_clients.RegistrationError) as raised:
        hub_clients.ensure(HubFactory(slug="other-course"), CALLBACK)
    assert raised.value.transient
    assert "did not answer" in raised.value.message


@pytest.fixture
def issuer_without_registration(settings):
    """An issuer whose discovery document has no registration_endpoint."""
    found = {}

    def discovery(method, path):
        issuer = found["url"]
        return 200, {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "userinfo_endpoint": f"{issuer}/userinfo",
        }

    with http_server(discovery) as (url, _):
        found["url"] = url
        settings.OIDC_ISSUER = url
        settings.OIDC_AUTHORIZE_URL = settings.OIDC_TOKEN_URL = settings.OIDC_USERINFO_URL = ""
        settings.OIDC_REGISTRATION_URL = settings.OIDC_HUB_CLIENT_ID = ""
        yield url


def test_an_issuer_without_registration_says_what_to_configure(issuer_without_registration, hub):
    with pytest.raises(hub_clients.RegistrationError) as raised:
        hub_clients.ensure(hub, CALLBACK)

    assert not raised.value.transient
    assert "offers no client registration" in raised.value.message
    assert "OIDC_HUB_CLIENT_ID" in raised.value.message
    assert not LoginClient.objects.exists()


def test_hubs_share_one_client_when_one_is_configured(sso, settings, hub):
    settings.OIDC_HUB_CLIENT_ID = "all-hubs"
    settings.OIDC_HUB_CLIENT_SECRET = "shared-secret-" + "s" * 20

    login = hub_clients.ensure(hub, CALLBACK)

    assert login == hub_clients.Credentials("all-hubs", settings.OIDC_HUB_CLIENT_SECRET)
    assert not LoginClient.objects.exists()
    spec = from_hub(hub_queryset().get(pk=hub.pk), "hubs.example.org")
    assert cluster.render_settings().identity_provider.for_hub(spec).client_id == "all-hubs"


def test_without_an_identity_provider_no_client_is_registered(settings, hub):
    settings.OIDC_ISSUER = settings.OIDC_HUB_CLIENT_ID = ""

    assert hub_clients.ensure(hub, CALLBACK) is None
    assert not LoginClient.objects.exists()


def test_the_client_credentials_stay_out_of_pages_answers_and_logs(
    registering, hub, client, caplog
):
    from django.contrib.auth import get_user_model

    caplog.set_level(logging.DEBUG)
    login = hub_clients.ensure(hub, CALLBACK)
    token = LoginClient.objects.get(hub=hub).registration_access_token
    hub_clients.ensure(hub, CALLBACK.replace("hubs.example.org", "jupyter.uni.example"))
    moved = LoginClient.objects.get(hub=hub)
    admin = get_user_model().objects.create_superuser("root", "root@uni.example", "pw-root-1")
    client.force_login(admin)

    pages = [
        client.get(f"/hubs/{hub.pk}/"),
        client.get(f"/api/v1/hubs/{hub.pk}/"),
        client.get(f"/admin/hubs/hub/{hub.pk}/change/"),
        client.get("/audit/"),
        client.get("/api/v1/audit/"),
    ]
    hub_clients.remove(hub)

    # The client id is what an IdP admin looks for: the hub's admin page names it.
    assert moved.client_id.encode() in pages[2].content
    logs = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "hub.login_client_registered" in logs and "hub.login_client_deleted" in logs
    audit = str(list(AuditEvent.objects.values()))
    for secret in {login.client_secret, token, moved.client_secret, INITIAL_TOKEN}:
        assert secret not in logs
        assert secret not in audit
        for page in pages:
            assert page.status_code == 200, page.request
            assert secret.encode() not in page.content
