"""The test OpenID Connect provider for tests (tests/oidc_provider/, django-oauth-toolkit in its
own process), seeded with users and the portal's client: the `oidc_provider` fixture (one per
session and xdist worker) and `sso`, the portal configured for it. Registered for every test
by the root conftest."""

from __future__ import annotations

import pytest

from tests.oidc_provider import harness

PORTAL_CLIENT = {"client_id": "portal", "client_secret": "portal-secret-" + "s" * 20}
OTHER_CLIENT = {"client_id": "other-app", "client_secret": "other-secret-" + "o" * 20}
OTHER_REDIRECT = "http://other-app.example/callback"
PASSWORD = "correct horse battery staple"
ADMIN_GROUP = "portal-admins"
SEED = {
    "users": [
        {
            "username": "Ada.Lovelace",
            "password": PASSWORD,
            "email": "ada@uni.example",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "groups": ["physics", "course-101"],
        },
        {"username": "grace", "password": PASSWORD, "email": "grace@uni.example", "groups": []},
        {"username": "bad name!", "password": PASSWORD, "groups": []},
    ],
    "clients": [
        {
            **PORTAL_CLIENT,
            "redirect_uris": ["http://testserver/auth/complete/oidc/"],
            "post_logout_redirect_uris": ["http://testserver/accounts/login/"],
            "skip_authorization": False,  # the user consents on the provider's page
        },
        {**OTHER_CLIENT, "redirect_uris": [OTHER_REDIRECT], "skip_authorization": True},
    ],
}


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory):
    provider = harness.start(SEED, tmp_path_factory.mktemp("oidc-provider"))
    yield provider
    provider.stop()


@pytest.fixture
def sso(settings, oidc_provider):
    """The portal configured for the test provider, as OIDC_* environment variables would."""
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID = PORTAL_CLIENT["client_id"]
    settings.OIDC_CLIENT_SECRET = PORTAL_CLIENT["client_secret"]
    settings.OIDC_AUTHORIZE_URL = settings.OIDC_TOKEN_URL = settings.OIDC_USERINFO_URL = ""
    settings.OIDC_SCOPES = ["openid", "profile", "email"]
    settings.OIDC_USERNAME_CLAIM = "preferred_username"
    settings.OIDC_GROUPS_CLAIM = "groups"
    settings.OIDC_ADMIN_GROUPS = [ADMIN_GROUP]
    settings.OIDC_LOGOUT_AT_IDP = True
    settings.LOCAL_LOGIN_ENABLED = True
    # Users' groups at the provider are what the seed says at the start of each test.
    if oidc_provider.changed:
        oidc_provider.seed({"users": SEED["users"]})
        oidc_provider.changed = False
    return oidc_provider


INITIAL_TOKEN = "initial-access-token-" + "i" * 20


@pytest.fixture
def registering(sso, settings):
    """Hubs register their own login clients at the test provider (RFC 7591), which asks for
    an initial access token."""
    settings.OIDC_HUB_CLIENT_ID = settings.OIDC_HUB_CLIENT_SECRET = ""
    settings.OIDC_REGISTRATION_URL = ""
    settings.OIDC_HUB_REGISTRATION_TOKEN = INITIAL_TOKEN
    sso.require_registration_token(INITIAL_TOKEN)
    yield sso
    sso.require_registration_token(None)
