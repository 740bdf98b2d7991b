"""Authentication backends: the institution's OIDC issuer, GitHub, and local passwords.

The OIDC backend takes all of its configuration from the portal's ``OIDC_*`` settings, the
same ones the hubs are rendered with (see portal/accounts/oidc.py), so that there is one
source for the issuer, the client, the scopes and the claims.

An identity of the issuer is keyed by (issuer, subject): its social-auth uid is
``<iss>#<sub>`` from the verified ID token (an issuer URL has no fragment, so "#" never occurs
in it). The subject is the one claim a provider promises never to reassign; the username claim
only proposes the portal username of a new account (portal/accounts/pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from social_core.backends.open_id_connect import OpenIdConnectAuth

from portal.accounts import oidc

UID_SEPARATOR = "#"


def oidc_uid(issuer_url: str, subject: str) -> str:
    """The social-auth uid of the issuer's subject: ``<issuer>#<subject>``."""
    return f"{issuer_url.rstrip('/')}{UID_SEPARATOR}{subject}"


def subject_of(uid: str, issuer_url: str) -> str | None:
    """The subject of an OIDC uid when it belongs to `issuer_url`, else None."""
    prefix = issuer_url.rstrip("/") + UID_SEPARATOR
    return uid[len(prefix) :] if issuer_url and uid.startswith(prefix) else None


class OidcBackend(OpenIdConnectAuth):
    """Sign-in with the institution's OpenID Connect issuer (authorization code + PKCE)."""

    name = "oidc"
    DEFAULT_USE_PKCE = True

    def get_user_id(self, details, response) -> str | None:
        """(issuer, subject) of the verified ID token, as one uid."""
        subject = super().get_user_id(details, response)
        issuer_url = (self.id_token or {}).get("iss")
        if not subject or not isinstance(issuer_url, str) or not issuer_url:
            return None
        return oidc_uid(issuer_url, str(subject))

    def oidc_endpoint(self) -> str:
        return oidc.issuer()

    def get_key_and_secret(self) -> tuple[str, str]:
        return settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET

    def setting(self, name: str, default: Any = None) -> Any:
        """Settings social-auth asks for, answered from the portal's OIDC_* settings."""
        portal = {
            "SCOPE": list(settings.OIDC_SCOPES),
            "IGNORE_DEFAULT_SCOPE": True,
            "USERNAME_KEY": settings.OIDC_USERNAME_CLAIM,
            "GROUPS_KEY": settings.OIDC_GROUPS_CLAIM,
            "GROUPS_MISSING_AS_EMPTY": True,
            # Explicit endpoints override discovery, for the portal as for the hubs.
            "AUTHORIZATION_URL": settings.OIDC_AUTHORIZE_URL,
            "ACCESS_TOKEN_URL": settings.OIDC_TOKEN_URL,
            "USERINFO_URL": settings.OIDC_USERINFO_URL,
        }
        if name in portal:
            return portal[name]
        return super().setting(name, default)


class LocalPasswordBackend(ModelBackend):
    """Username and password from the portal's own database, unless LOCAL_LOGIN_ENABLED is off.

    Switching it off closes every password form at once: the sign-in page and the Django admin's.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.LOCAL_LOGIN_ENABLED:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


@dataclass(frozen=True)
class IdentityProvider:
    """An identity provider the sign-in page offers as a button."""

    backend: str
    display_name: str


def identity_providers() -> list[IdentityProvider]:
    """The identity providers that are configured, in the order the sign-in page shows them."""
    providers = []
    if oidc.sso_enabled():
        providers.append(IdentityProvider("oidc", settings.OIDC_DISPLAY_NAME))
    if settings.SOCIAL_AUTH_GITHUB_KEY and settings.SOCIAL_AUTH_GITHUB_SECRET:
        providers.append(IdentityProvider("github", "GitHub"))
    return providers


def provider_enabled(backend: str) -> bool:
    """Whether the named social backend is configured (a disabled one answers 404)."""
    return any(provider.backend == backend for provider in identity_providers())
