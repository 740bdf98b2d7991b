"""The portal's OpenID Connect issuer: its endpoints, for the portal's sign-in and for the hubs.

One configuration (``OIDC_*`` settings) serves both: the portal signs users in against the
issuer, and every hub's GenericOAuthenticator is rendered with the same issuer's endpoints and
the same username claim, so a user has the same name in the portal and in each hub.
Endpoints come from the issuer's discovery document unless they are set explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
import structlog
from django.conf import settings
from django.core.cache import cache

from provisioning.render import IdentityProvider

log = structlog.get_logger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
# A discovery document is cached this long; the last good one is kept for when the IdP is down.
DISCOVERY_CACHE_SECONDS = 3600
DISCOVERY_TIMEOUT_SECONDS = 5


class DiscoveryError(Exception):
    """The issuer's discovery document could not be read or is not usable."""


@dataclass(frozen=True)
class Endpoints:
    """Where the issuer authorizes, hands out tokens, describes users and ends sessions."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    end_session_endpoint: str = ""
    jwks_uri: str = ""


def issuer() -> str:
    """The configured issuer URL, without a trailing slash ("" when none is configured)."""
    return settings.OIDC_ISSUER.rstrip("/")


def sso_enabled() -> bool:
    """Whether the portal signs users in with the OIDC issuer."""
    return bool(issuer() and settings.OIDC_CLIENT_ID and settings.OIDC_CLIENT_SECRET)


def _cache_keys(url: str) -> tuple[str, str]:
    return f"oidc-discovery:{url}", f"oidc-discovery-last-good:{url}"


def discovery_document(issuer_url: str) -> dict:
    """The issuer's discovery document: cached, fetched when stale, the last good one if the
    issuer does not answer; DiscoveryError when there is none at all."""
    fresh_key, last_good_key = _cache_keys(issuer_url)
    document = cache.get(fresh_key)
    if document is not None:
        return document
    try:
        response = requests.get(issuer_url + DISCOVERY_PATH, timeout=DISCOVERY_TIMEOUT_SECONDS)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict) or not document.get("authorization_endpoint"):
            raise ValueError("not an OpenID Connect discovery document")
    except (requests.RequestException, ValueError) as error:
        document = cache.get(last_good_key)
        log.warning(
            "oidc.discovery_failed",
            issuer=issuer_url,
            error=type(error).__name__,
            using_last_good=document is not None,
        )
        if document is None:
            raise DiscoveryError(
                f"The identity provider at {issuer_url} did not answer its discovery request "
                f"({type(error).__name__})."
            ) from error
        return document
    cache.set(fresh_key, document, DISCOVERY_CACHE_SECONDS)
    cache.set(last_good_key, document, None)
    return document


def endpoints() -> Endpoints:
    """The issuer's endpoints: explicit OIDC_*_URL settings win over discovery."""
    explicit = {
        "authorization_endpoint": settings.OIDC_AUTHORIZE_URL,
        "token_endpoint": settings.OIDC_TOKEN_URL,
        "userinfo_endpoint": settings.OIDC_USERINFO_URL,
    }
    url = issuer()
    if not url or all(explicit.values()):
        return Endpoints(issuer=url, **explicit)
    document = discovery_document(url)
    found = {key: value or str(document.get(key) or "") for key, value in explicit.items()}
    return Endpoints(
        issuer=str(document.get("issuer") or url),
        end_session_endpoint=str(document.get("end_session_endpoint") or ""),
        jwks_uri=str(document.get("jwks_uri") or ""),
        **found,
    )


def hub_login_settings(unreachable: str = "") -> IdentityProvider:
    """The OIDC settings every hub is rendered with: this issuer's endpoints and claims.

    With `unreachable`, the issuer is not asked and that text stands for every endpoint (a
    preview while the identity provider is away)."""
    if unreachable:
        urls = (unreachable,) * 3
    else:
        found = endpoints()
        urls = (found.authorization_endpoint, found.token_endpoint, found.userinfo_endpoint)
    return IdentityProvider(
        authorize_url=urls[0],
        token_url=urls[1],
        userdata_url=urls[2],
        client_id_prefix=settings.OIDC_HUB_CLIENT_ID_PREFIX,
        shared_client_id=settings.OIDC_HUB_CLIENT_ID,
        scopes=tuple(settings.OIDC_SCOPES),
        username_claim=settings.OIDC_USERNAME_CLAIM,
        groups_claim=settings.OIDC_GROUPS_CLAIM,
    )
