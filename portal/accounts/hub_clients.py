"""The OAuth clients hubs log their users in with, at the portal's identity provider.

Each hub's GenericOAuthenticator is a client of the portal's OIDC issuer. The client is either
- the hub's own, which the portal registers when it first provisions the hub (OpenID Connect
  Dynamic Client Registration, RFC 7591), changes when the hub's address changes and deletes
  with the hub (RFC 7592); the credentials are kept in `LoginClient`, never shown; or
- one client every hub shares (OIDC_HUB_CLIENT_ID / OIDC_HUB_CLIENT_SECRET), for identity
  providers without registration; its redirect URIs must allow every hub's callback.
Without an issuer (local sign-in only) hubs have no working login client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
import structlog
from django.conf import settings
from django.db import IntegrityError, transaction

from portal.accounts import oidc
from portal.audit.log import record
from portal.hubs.models import Hub, LoginClient
from provisioning.errors import ServiceError

log = structlog.get_logger(__name__)

TIMEOUT_SECONDS = 10
REGISTERED, SHARED, NONE = "registered", "shared", "none"


class RegistrationError(ServiceError):
    """The identity provider did not register, change or delete a hub's client."""


@dataclass(frozen=True)
class Credentials:
    """What a hub's authenticator logs in with."""

    client_id: str
    client_secret: str


def mode() -> str:
    """Which client hubs log in with: their own (registered), a shared one, or none."""
    if settings.OIDC_HUB_CLIENT_ID:
        return SHARED
    return REGISTERED if oidc.issuer() else NONE


def ensure(hub: Hub, redirect_uri: str, contact: bool = True) -> Credentials | None:
    """The hub's login client, registered first if it has none, its redirect URI changed if
    the hub moved; None when there is no identity provider. Raises RegistrationError.

    Without `contact` the identity provider is not called: the client the hub has, or None.
    """
    current = mode()
    if current == SHARED:
        return Credentials(settings.OIDC_HUB_CLIENT_ID, settings.OIDC_HUB_CLIENT_SECRET)
    if current == NONE:
        return None
    try:
        client = hub.login_client  # no query when the hub was fetched with it
    except LoginClient.DoesNotExist:
        if not contact:
            return None
        client = _register(hub, redirect_uri)
    if contact and client.redirect_uri != redirect_uri:
        _update(client, hub, redirect_uri)
    return Credentials(client.client_id, client.client_secret)


def remove(hub: Hub, last_try: bool = False) -> str:
    """Delete the hub's own client at the identity provider and forget it.

    Returns "" when it is gone, else why it was left at the provider (its management token
    refused, no way to delete it given): the hub's deletion goes on, and the audit log says
    which client an IdP admin should remove. Raises RegistrationError (transient) when the
    provider does not answer, so that the deletion is tried again; on the `last_try` the
    client is left instead, so that an identity provider that is down never keeps a hub.
    """
    client = LoginClient.objects.filter(hub=hub).first()
    if client is None:
        return ""
    try:
        left = _delete_at_provider(
            client.client_id, client.registration_client_uri, client.registration_access_token
        )
    except RegistrationError as error:
        if not (last_try and error.transient):
            raise
        left = error.message
    client.delete()
    if left:
        log.warning("hub.login_client_left", hub_id=hub.pk, client_id=client.client_id, why=left)
        record("hub.login_client_left", hub, actor=None, client_id=client.client_id, why=left)
    else:
        log.info("hub.login_client_deleted", hub_id=hub.pk, client_id=client.client_id)
        record("hub.login_client_deleted", hub, actor=None, client_id=client.client_id)
    return left


def _delete_at_provider(client_id: str, uri: str, token: str) -> str:
    """Delete a client at the identity provider (RFC 7592 §2.3); "" when it is gone, else why
    it is left. RegistrationError (transient) when the provider does not answer."""
    if not (uri and token):
        return "the identity provider gave no way to delete it"
    response = _call("DELETE", uri, token)
    if _transient(response):
        raise _refused(response, f"to delete the hub's login client {client_id}")
    if response.status_code not in (200, 204, 404):
        return f"the identity provider refused to delete it ({_detail(response)})"
    return ""


def registration_endpoint() -> str:
    """Where the issuer registers clients: OIDC_REGISTRATION_URL, else its discovery document."""
    if settings.OIDC_REGISTRATION_URL:
        return settings.OIDC_REGISTRATION_URL
    try:
        document = oidc.discovery_document(oidc.issuer())
    except oidc.DiscoveryError as error:
        raise RegistrationError(str(error), transient=True) from error
    endpoint = document.get("registration_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise RegistrationError(
            f"The identity provider at {oidc.issuer()} offers no client registration (its "
            "discovery document has no registration_endpoint). Set OIDC_REGISTRATION_URL, or "
            "OIDC_HUB_CLIENT_ID and OIDC_HUB_CLIENT_SECRET for one client all hubs share.",
            transient=False,
        )
    return endpoint


def client_metadata(hub: Hub, redirect_uri: str) -> dict[str, Any]:
    """What the portal asks the identity provider to register for a hub (RFC 7591 §2)."""
    return {
        "client_name": f"{settings.OIDC_HUB_CLIENT_ID_PREFIX}{hub.slug}",
        "client_uri": hub.url,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        # GenericOAuthenticator sends the client's credentials in the token request's body.
        "token_endpoint_auth_method": "client_secret_post",
        "scope": " ".join(settings.OIDC_SCOPES),
    }


def _register(hub: Hub, redirect_uri: str) -> LoginClient:
    response = _call(
        "POST",
        registration_endpoint(),
        settings.OIDC_HUB_REGISTRATION_TOKEN,
        client_metadata(hub, redirect_uri),
    )
    if response.status_code not in (200, 201):
        raise _refused(response, "to register the hub's login client")
    answer = _answer(response)
    client_id, secret = answer.get("client_id"), answer.get("client_secret")
    if not (isinstance(client_id, str) and client_id and isinstance(secret, str) and secret):
        raise RegistrationError(
            "The identity provider registered the hub's login client without giving its "
            "client_id and client_secret.",
            transient=False,
        )
    uri = str(answer.get("registration_client_uri") or "")
    token = str(answer.get("registration_access_token") or "")
    try:
        with transaction.atomic():
            client = LoginClient.objects.create(
                hub=hub,
                client_id=client_id,
                client_secret=secret,
                redirect_uri=redirect_uri,
                registration_client_uri=uri,
                registration_access_token=token,
            )
    except IntegrityError:
        # Another worker registered the hub's client at the same moment: keep that one.
        _delete_at_provider(client_id, uri, token)
        return LoginClient.objects.get(hub=hub)
    log.info("hub.login_client_registered", hub_id=hub.pk, client_id=client_id)
    record(
        "hub.login_client_registered",
        hub,
        actor=None,
        client_id=client_id,
        redirect_uri=redirect_uri,
    )
    return client


def _update(client: LoginClient, hub: Hub, redirect_uri: str) -> None:
    """Point the client at the hub's new address (RFC 7592 §2.2)."""
    if not (client.registration_client_uri and client.registration_access_token):
        raise RegistrationError(
            f"The hub's login client {client.client_id} is registered for {client.redirect_uri} "
            f"and the hub is now at {redirect_uri}; the identity provider gave no way to change "
            "the client. Change its redirect URI at the identity provider, then retry.",
            transient=False,
        )
    response = _call(
        "PUT",
        client.registration_client_uri,
        client.registration_access_token,
        {**client_metadata(hub, redirect_uri), "client_id": client.client_id},
    )
    if response.status_code != 200:
        raise _refused(response, f"to change the hub's login client {client.client_id}")
    answer = _answer(response)
    # The provider may issue a new secret or management token with the change.
    client.client_secret = str(answer.get("client_secret") or client.client_secret)
    client.registration_access_token = str(
        answer.get("registration_access_token") or client.registration_access_token
    )
    client.redirect_uri = redirect_uri
    client.save()
    log.info("hub.login_client_changed", hub_id=hub.pk, client_id=client.client_id)
    record(
        "hub.login_client_changed",
        hub,
        actor=None,
        client_id=client.client_id,
        redirect_uri=redirect_uri,
    )


def _call(method: str, url: str, token: str, body: dict | None = None) -> requests.Response:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        return requests.request(method, url, json=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as error:
        raise RegistrationError(
            f"The identity provider did not answer at {url} ({type(error).__name__}).",
            transient=True,
        ) from error


def _answer(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise RegistrationError(
            f"The identity provider's answer at {response.url} is not a JSON object.",
            transient=False,
        )
    return answer


def _transient(response: requests.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def _detail(response: requests.Response) -> str:
    """The status and the provider's error (RFC 7591 §3.2.2), short and without secrets."""
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    detail = ""
    if isinstance(answer, dict):
        parts = [answer.get("error"), answer.get("error_description")]
        detail = ": ".join(str(part) for part in parts if part)[:300]
    return f"HTTP {response.status_code}" + (f", {detail}" if detail else "")


def _refused(response: requests.Response, what: str) -> RegistrationError:
    return RegistrationError(
        f"The identity provider refused {what} ({_detail(response)}).",
        transient=_transient(response),
    )
