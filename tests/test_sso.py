"""Sign-in with SSO against a real OpenID Connect provider.

The provider is django-oauth-toolkit in its own process on 127.0.0.1 (tests/oidc_provider/),
started once per test session (per xdist worker). The portal is driven with Django's test
client; the user's browser at the provider is `requests`; the portal's OIDC backend makes real
HTTP calls to the provider (discovery, token, JWKS, UserInfo). One test walks the same flow in
Debian's Chromium against a live server.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.urls import reverse
from social_django.models import UserSocialAuth
from traitlets.config import PyFileConfigLoader

from portal.accounts.auth import OidcBackend
from portal.accounts.models import IdentityProfile
from portal.hubs import cluster, hubspec, revisions
from provisioning import hubconfig
from provisioning.render import render_hub
from tests.factories import UserFactory
from tests.oidc_provider import harness
from tests.provisioning.examples import EXAMPLES, FIXED_SECRETS
from tests.sso_support import ADMIN_GROUP, OTHER_CLIENT, OTHER_REDIRECT, PASSWORD, SEED
from tests.support import free_port, http_server

pytestmark = pytest.mark.django_db

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def begin(client) -> str:
    """Press the identity provider's button on the sign-in page; returns the provider URL."""
    page = client.get(reverse("login"))
    assert b"Continue with" in page.content
    response = client.post(reverse("social:begin", args=["oidc"]))
    assert response.status_code == 302, response.content
    return response["Location"]


def callback_path(url: str) -> str:
    """The portal path (with query) the provider sent the browser back to."""
    parts = urlsplit(url)
    assert parts.netloc == "testserver", url
    return urlunsplit(("", "", parts.path, parts.query, ""))


def sign_in(client, provider, username="Ada.Lovelace", browser=None):
    """The whole authorization-code flow; returns the portal's answer to the callback."""
    browser = browser or harness.Browser(provider, username, PASSWORD)
    back = browser.visit(begin(client))
    return client.get(callback_path(back))


def signed_in_as(client) -> str | None:
    response = client.get(reverse("hubs:list"))
    if response.status_code != 200:
        return None
    return response.wsgi_request.user.username


def test_authorization_code_flow_signs_the_user_in(client, sso):
    response = sign_in(client, sso)

    assert response.status_code == 302 and response["Location"] == "/hubs/"
    # The username claim, lower-cased as JupyterHub does, is the name in portal and hubs.
    assert signed_in_as(client) == "ada.lovelace"
    user = get_user_model().objects.get(username="ada.lovelace")
    assert (user.email, user.first_name, user.last_name) == ("ada@uni.example", "Ada", "Lovelace")
    assert not user.has_usable_password()
    assert UserSocialAuth.objects.get(user=user, provider="oidc")
    assert user.identity.idp_groups == ["course-101", "physics"]
    assert user.identity.groups_refreshed_at is not None
    assert not user.is_staff and not user.is_superuser


def test_groups_are_refreshed_at_the_next_sign_in(client, sso):
    sign_in(client, sso)
    first = IdentityProfile.objects.get(user__username="ada.lovelace")
    sso.set_groups("Ada.Lovelace", ["chemistry"])
    client.post(reverse("logout"))

    sign_in(client, sso)

    again = IdentityProfile.objects.get(user__username="ada.lovelace")
    assert again.idp_groups == ["chemistry"]
    assert again.groups_refreshed_at > first.groups_refreshed_at
    assert get_user_model().objects.filter(username="ada.lovelace").count() == 1


def test_admin_group_makes_a_portal_admin_and_leaving_it_demotes(client, sso):
    sso.set_groups("grace", ["physics", ADMIN_GROUP])
    sign_in(client, sso, "grace")
    grace = get_user_model().objects.get(username="grace")
    assert grace.is_staff and grace.is_superuser
    assert client.get(reverse("hubs:queue")).status_code == 200
    client.post(reverse("logout"))

    sso.set_groups("grace", ["physics"])
    sign_in(client, sso, "grace")

    grace.refresh_from_db()
    assert not grace.is_staff and not grace.is_superuser
    assert client.get(reverse("hubs:queue")).status_code == 403


def link_by_admin(claimed: str) -> None:
    """A portal admin links the waiting identity in the Django admin (the only way)."""
    from portal.accounts import links
    from portal.accounts.models import LinkRequest

    links.link(
        LinkRequest.objects.get(claimed_username=claimed),
        UserFactory(is_staff=True, is_superuser=True),
    )


def test_a_local_admin_keeps_admin_without_the_admin_group(client, sso):
    """Admin rights the IdP did not grant are not the IdP's to withdraw (break-glass admins)."""
    get_user_model().objects.create_user("grace", is_staff=True, is_superuser=True)
    assert sign_in(client, sso, "grace").status_code == 409  # not linked yet
    link_by_admin("grace")

    sign_in(client, sso, "grace")

    grace = get_user_model().objects.get(username="grace")
    assert grace.is_staff and grace.is_superuser
    assert UserSocialAuth.objects.get(user=grace, provider="oidc")


def test_an_account_made_ahead_is_linked_only_by_an_admin(client, sso):
    """Accounts made ahead of sign-in (createapitoken) are never taken by the name claim."""
    existing = get_user_model().objects.create_user("ada.lovelace")

    refused = sign_in(client, sso)

    assert refused.status_code == 409
    assert "was not made by signing in" in refused.content.decode()
    assert signed_in_as(client) is None and not UserSocialAuth.objects.exists()
    link_by_admin("ada.lovelace")
    sign_in(client, sso)
    assert signed_in_as(client) == "ada.lovelace"
    assert UserSocialAuth.objects.get(provider="oidc").user == existing


def test_a_password_account_of_that_name_is_not_taken_over(client, sso):
    UserFactory(username="ada.lovelace", is_staff=True, is_superuser=True)

    response = sign_in(client, sso)

    assert response.status_code == 409
    assert "was not made by signing in" in response.content.decode()
    assert not UserSocialAuth.objects.exists()


def test_sign_in_returns_to_the_page_asked_for(client, sso):
    browser = harness.Browser(sso, "Ada.Lovelace", PASSWORD)
    client.get(reverse("login"))
    begun = client.post(reverse("social:begin", args=["oidc"]), {"next": "/hubs/new/"})

    response = client.get(callback_path(browser.visit(begun["Location"])))

    assert response["Location"] == "/hubs/new/"


def test_an_identity_is_never_linked_to_another_signed_in_user(client, sso, alice):
    client.force_login(alice)

    response = sign_in(client, sso)

    assert response.status_code == 409
    assert b"signed in to the portal as another user" in response.content
    assert not UserSocialAuth.objects.filter(user=alice).exists()


def test_github_is_offered_when_configured(client, settings):
    settings.SOCIAL_AUTH_GITHUB_KEY = "gh-client"
    settings.SOCIAL_AUTH_GITHUB_SECRET = "gh-secret"

    page = client.get(reverse("login"))
    response = client.post(reverse("social:begin", args=["github"]))

    assert b"Continue with GitHub" in page.content
    assert response.status_code == 302
    assert response["Location"].startswith("https://github.com/login/oauth/authorize?")
    assert "client_id=gh-client" in response["Location"]
    assert "gh-secret" not in response["Location"]


def test_an_unusable_username_claim_is_refused_clearly(client, sso):
    response = sign_in(client, sso, "bad name!")

    assert response.status_code == 403
    assert b"username the portal cannot use" in response.content
    assert signed_in_as(client) is None


def test_tampered_state_is_rejected_with_a_clear_page(client, sso):
    browser = harness.Browser(sso, "Ada.Lovelace", PASSWORD)
    back = urlsplit(browser.visit(begin(client)))
    query = parse_qs(back.query)
    state = query["state"][0]
    query["state"] = [("y" if state[0] == "x" else "x") + state[1:]]
    tampered = urlunsplit(("", "", back.path, urlencode(query, doseq=True), ""))

    response = client.get(tampered)

    assert response.status_code == 400
    assert b"does not belong to a sign-in this browser started" in response.content
    assert signed_in_as(client) is None
    assert not get_user_model().objects.filter(username="ada.lovelace").exists()


def foreign_id_token(provider) -> str:
    """A genuine ID token of the same provider, issued to another of its clients."""
    browser = harness.Browser(provider, "Ada.Lovelace", PASSWORD)
    params = {
        "client_id": OTHER_CLIENT["client_id"],
        "response_type": "code",
        "redirect_uri": OTHER_REDIRECT,
        "scope": "openid profile",
        "state": "s",
        "nonce": "n",
    }
    authorize = provider.discovery()["authorization_endpoint"]
    back = browser.visit(f"{authorize}?{urlencode(params)}")
    code = parse_qs(urlsplit(back).query)["code"][0]
    tokens = requests.post(
        provider.discovery()["token_endpoint"],
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": OTHER_REDIRECT},
        auth=(OTHER_CLIENT["client_id"], OTHER_CLIENT["client_secret"]),
        timeout=10,
    )
    tokens.raise_for_status()
    return tokens.json()["id_token"]


def resign(id_token: str) -> str:
    """The same claims and key id, signed with a key the provider never had."""
    claims = jwt.decode(id_token, options={"verify_signature": False})
    header = jwt.get_unverified_header(id_token)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": header["kid"]})


@pytest.fixture
def swap_id_token(monkeypatch, sso):
    """Replace the ID token in the provider's token response as it reaches the portal.

    This stands for an attacker who gets a token of their choosing to the portal; what is
    under test, the portal's validation of the ID token, runs unchanged on the real answer.
    """
    token_endpoint = sso.discovery()["token_endpoint"]
    original = OidcBackend.get_json

    def install(replace):
        def get_json(self, url, *args, **kwargs):
            answer = original(self, url, *args, **kwargs)
            if url == token_endpoint:
                answer = {**answer, "id_token": replace(answer["id_token"])}
            return answer

        monkeypatch.setattr(OidcBackend, "get_json", get_json)

    return install


def test_an_id_token_issued_to_another_client_is_rejected(client, sso, swap_id_token):
    other = foreign_id_token(sso)
    assert jwt.decode(other, options={"verify_signature": False})["aud"] == "other-app"
    swap_id_token(lambda genuine: other)

    response = sign_in(client, sso)

    assert response.status_code == 403
    assert b"could not be verified" in response.content
    assert b"invalid_claim" in response.content  # the audience is another client
    assert signed_in_as(client) is None
    assert not UserSocialAuth.objects.exists()


def test_an_id_token_signed_by_another_key_is_rejected(client, sso, swap_id_token):
    swap_id_token(resign)

    response = sign_in(client, sso)

    assert response.status_code == 403
    assert b"invalid_signature" in response.content
    assert signed_in_as(client) is None
    assert not UserSocialAuth.objects.exists()


def test_the_untampered_flow_passes_through_the_swap_hook(client, sso, swap_id_token):
    """The hook itself does not break sign-in: the refusals above come from the token."""
    swap_id_token(lambda genuine: genuine)
    assert sign_in(client, sso).status_code == 302
    assert signed_in_as(client) == "ada.lovelace"


def test_logout_ends_the_portal_and_the_provider_session(client, sso):
    browser = harness.Browser(sso, "Ada.Lovelace", PASSWORD)
    sign_in(client, sso, browser=browser)

    response = client.post(reverse("logout"))

    assert signed_in_as(client) is None
    end_session = urlsplit(response["Location"])
    assert response["Location"].startswith(sso.discovery()["end_session_endpoint"])
    query = parse_qs(end_session.query)
    assert query["client_id"] == ["portal"] and query["id_token_hint"]
    assert query["post_logout_redirect_uri"] == ["http://testserver/accounts/login/"]
    # The provider ends its session and sends the browser back to the portal's sign-in page.
    assert browser.visit(response["Location"]) == "http://testserver/accounts/login/"
    authorize = browser.session.get(begin(client), allow_redirects=False, timeout=10)
    assert "/accounts/login/" in authorize.headers["Location"]  # must sign in again


def test_logout_stays_local_when_switched_off(client, sso, settings):
    settings.OIDC_LOGOUT_AT_IDP = False
    sign_in(client, sso)

    response = client.post(reverse("logout"))

    assert response["Location"] == reverse("login")
    assert signed_in_as(client) is None


def test_logout_of_a_local_user_stays_local(client, sso, alice):
    client.force_login(alice)
    response = client.post(reverse("logout"))
    assert response["Location"] == reverse("login")
    assert client.get(reverse("logout")).status_code == 405  # signing out is a POST


def _bind() -> int:
    """A port nothing listens on: an identity provider that is down."""
    return free_port()


def test_a_provider_that_is_down_gives_a_clear_page(client, sso, settings):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{_bind()}/o"

    response = client.post(reverse("social:begin", args=["oidc"]))

    assert response.status_code == 502
    assert b"The identity provider is not available" in response.content
    assert b"Traceback" not in response.content


def test_a_token_endpoint_that_is_down_gives_a_clear_page(client, sso, settings):
    browser = harness.Browser(sso, "Ada.Lovelace", PASSWORD)
    back = browser.visit(begin(client))
    settings.OIDC_TOKEN_URL = f"http://127.0.0.1:{_bind()}/o/token/"

    response = client.get(callback_path(back))

    assert response.status_code == 502
    assert b"The identity provider is not available" in response.content
    assert signed_in_as(client) is None


def test_a_token_endpoint_answering_5xx_gives_a_clear_page(client, sso, settings):
    unavailable = http_server(lambda method, path: (503, {"error": "temporarily_unavailable"}))
    with unavailable as (url, _):
        browser = harness.Browser(sso, "Ada.Lovelace", PASSWORD)
        back = browser.visit(begin(client))
        settings.OIDC_TOKEN_URL = f"{url}/token"

        response = client.get(callback_path(back))

    assert response.status_code == 502
    assert b"The identity provider is not available" in response.content
    assert signed_in_as(client) is None


def test_a_disabled_provider_is_not_offered(client, settings):
    settings.OIDC_ISSUER = ""
    page = client.get(reverse("login"))
    assert b"Continue with" not in page.content and b'name="password"' in page.content
    assert client.post(reverse("social:begin", args=["oidc"])).status_code == 404
    assert client.post(reverse("social:begin", args=["github"])).status_code == 404


def test_local_login_switched_off_hides_the_form_and_refuses_the_post(client, sso, settings):
    UserFactory(username="breakglass", password=PASSWORD, is_staff=True, is_superuser=True)
    settings.LOCAL_LOGIN_ENABLED = False

    page = client.get(reverse("login"))
    refused = client.post(reverse("login"), {"username": "breakglass", "password": PASSWORD})
    admin = client.post(
        reverse("admin:login"), {"username": "breakglass", "password": PASSWORD}, follow=True
    )

    assert page.status_code == 200
    assert b'name="password"' not in page.content and b"Continue with" in page.content
    assert refused.status_code == 403 and b"Password sign-in is switched off" in refused.content
    assert admin.wsgi_request.user.is_anonymous
    assert signed_in_as(client) is None
    # SSO still works.
    assert sign_in(client, sso).status_code == 302


def test_local_login_still_works_next_to_sso(client, sso):
    UserFactory(username="breakglass", password=PASSWORD)
    page = client.get(reverse("login"))
    assert b'name="password"' in page.content and b"Continue with" in page.content
    response = client.post(reverse("login"), {"username": "breakglass", "password": PASSWORD})
    assert response.status_code == 302
    assert signed_in_as(client) == "breakglass"


def load_hub_config(tmp_path, monkeypatch, files: dict[str, str]):
    """Load the hubs' jupyterhub_config.py with the files of a hub's ConfigMaps, as JupyterHub
    does in the hub's pod."""
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    monkeypatch.setenv(hubconfig.VALUES_FILE_ENV, str(tmp_path / hubconfig.VALUES_FILE_KEY))
    monkeypatch.setenv("HUB_MEMBERS_FILE", str(tmp_path / "members.json"))
    for name in hubconfig.SECRET_ENV_VARS:
        monkeypatch.setenv(name, "ab" * 32)
    return PyFileConfigLoader(
        hubconfig.CONFIG_FILE.name, str(hubconfig.CONFIG_FILE.parent)
    ).load_config()


def test_hubs_log_in_with_the_same_issuer_and_username_claim(sso, tmp_path, monkeypatch):
    discovery = sso.discovery()
    spec = EXAMPLES["cpu-course"]

    oauth = cluster.render_settings().identity_provider.for_hub(spec)
    files = {
        name: content
        for obj in render_hub(spec, cluster.render_settings(), FIXED_SECRETS)
        if obj["kind"] == "ConfigMap"
        for name, content in obj["data"].items()
    }
    c = load_hub_config(tmp_path, monkeypatch, files)

    authenticator = c.GenericOAuthenticator
    assert authenticator.authorize_url == discovery["authorization_endpoint"]
    assert authenticator.token_url == discovery["token_endpoint"]
    assert authenticator.userdata_url == discovery["userinfo_endpoint"]
    assert oauth.authorize_url.startswith(sso.issuer + "/")
    # The hub names users by their subject's portal account (members file), not a name claim.
    assert authenticator.username_claim == "sub"
    assert authenticator.client_id == f"hub-{spec.slug}"
    assert authenticator.scope == ["openid", "profile", "email"]


def test_explicit_endpoints_win_over_discovery(sso, settings):
    settings.OIDC_TOKEN_URL = "https://sso.uni.example/token"
    oauth = cluster.render_settings().identity_provider
    assert oauth.token_url == "https://sso.uni.example/token"
    assert oauth.authorize_url == sso.discovery()["authorization_endpoint"]


def test_jupyterhub_normalizes_the_claim_to_the_portal_username(client, sso):
    """GenericOAuthenticator lower-cases usernames; the portal does the same."""
    from oauthenticator.generic import GenericOAuthenticator

    sign_in(client, sso)
    hub_name = GenericOAuthenticator().normalize_username("Ada.Lovelace")
    assert hub_name == signed_in_as(client) == "ada.lovelace"


def test_an_issuer_that_cannot_be_discovered_is_a_transient_provisioning_error(settings):
    from provisioning import k8s

    settings.OIDC_ISSUER = f"http://127.0.0.1:{_bind()}/o"
    settings.OIDC_AUTHORIZE_URL = settings.OIDC_TOKEN_URL = settings.OIDC_USERINFO_URL = ""
    with pytest.raises(k8s.ClusterError) as raised:
        cluster.render_settings()
    assert raised.value.transient


def test_a_change_preview_renders_while_the_issuer_cannot_be_discovered(settings, hub):
    """The change diff page shows the hub's objects; the login endpoints are marked unknown."""
    settings.OIDC_ISSUER = f"http://127.0.0.1:{_bind()}/o"
    settings.OIDC_AUTHORIZE_URL = settings.OIDC_TOKEN_URL = settings.OIDC_USERINFO_URL = ""

    objects = revisions.rendered_objects(hubspec.from_hub(hub))

    config = next(yaml for (kind, _, _), yaml in objects.items() if kind == "ConfigMap")
    assert cluster.UNKNOWN_ENDPOINT in "".join(objects.values())
    assert config


def test_hubs_read_groups_from_the_portals_groups_claim(sso, settings):
    settings.OIDC_GROUPS_CLAIM = "eduperson_entitlement"
    spec = EXAMPLES["cpu-course"]
    oauth = cluster.render_settings().identity_provider.for_hub(spec)
    assert oauth.groups_claim == "eduperson_entitlement"
    values = hubconfig.hub_values(spec, oauth)
    assert values["oauth"]["groups_claim"] == "eduperson_entitlement"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sign_in_and_out_in_a_real_browser(chromium, live_server, sso):
    portal = live_server.url
    sso.seed(
        {
            "clients": [
                {
                    **SEED["clients"][0],
                    # The test client's URLs stay registered for the other tests.
                    "redirect_uris": [
                        *SEED["clients"][0]["redirect_uris"],
                        f"{portal}/auth/complete/oidc/",
                    ],
                    "post_logout_redirect_uris": [
                        *SEED["clients"][0]["post_logout_redirect_uris"],
                        f"{portal}/accounts/login/",
                    ],
                }
            ]
        }
    )
    page = chromium.new_context().new_page()
    try:
        page.goto(f"{portal}/accounts/login/")
        page.get_by_role("button", name="Continue with Institutional sign-in").click()
        # The provider's own sign-in and consent pages.
        page.get_by_label("Username").fill("Ada.Lovelace")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Authorize").click()

        page.wait_for_url(f"{portal}/hubs/")
        sign_out = page.get_by_role("button", name="Sign out ada.lovelace")
        assert sign_out.is_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "sso-signed-in.png"))

        sign_out.click()
        page.wait_for_url(f"{portal}/accounts/login/")
        assert page.get_by_role("button", name="Continue with Institutional sign-in").is_visible()
    finally:
        page.context.close()
