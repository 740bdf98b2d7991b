"""Clients register themselves at the provider: RFC 7591 (register) and RFC 7592 (read, update,
delete), so the portal can give each hub its own OAuth client and remove it with the hub.

Registration is open unless the data directory holds a file `registration-token`; then
POST /o/register/ needs that token as Bearer (an initial access token). Each client gets its own
registration access token for /o/register/<client_id>/; the provider keeps only its SHA-256.

django-oauth-toolkit 3.4 has registration views of its own (DCR_ENABLED), routed after these;
they register clients without a signing algorithm (no ID tokens), with a consent page, and
only for signed-in users, unlike the institution IdPs (Keycloak) hubs register at.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.hashers import check_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.generators import generate_client_secret
from oauth2_provider.models import Application
from oauth2_provider.utils import parse_bearer_token
from oauth2_provider.views import ConnectDiscoveryInfoView

from tests.oidc_provider.models import Registration

GRANT_TYPES = {"authorization_code", "refresh_token"}
AUTH_METHODS = {"client_secret_basic", "client_secret_post"}


class MetadataError(Exception):
    """Client metadata the provider refuses, with its RFC 7591 error code."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description

    def response(self) -> JsonResponse:
        return JsonResponse(
            {"error": self.error, "error_description": self.description}, status=400
        )


def invalid_metadata(description: str) -> MetadataError:
    return MetadataError("invalid_client_metadata", description)


def invalid_token(description: str) -> JsonResponse:
    """401 for a missing or wrong Bearer token."""
    response = JsonResponse(
        {"error": "invalid_token", "error_description": description}, status=401
    )
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def registration_uri(client_id: str | None = None) -> str:
    """The registration endpoint, or with CLIENT_ID that client's configuration endpoint."""
    endpoint = f"{settings.ISSUER}/register/"
    return f"{endpoint}{client_id}/" if client_id else endpoint


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def initial_access_token() -> str | None:
    """The token registering needs, or None while registration is open."""
    try:
        return (settings.DATA_DIR / "registration-token").read_text().strip()
    except FileNotFoundError:
        return None


class DiscoveryView(ConnectDiscoveryInfoView):
    """DOT's discovery document, which also tells clients where to register themselves."""

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        document = json.loads(response.content)
        document["registration_endpoint"] = registration_uri()
        response.content = json.dumps(document)
        return response


def is_redirect_uri(uri: object) -> bool:
    """An absolute http(s) URL without fragment (and without spaces: DOT joins them with one)."""
    if not isinstance(uri, str) or "#" in uri or any(char.isspace() for char in uri):
        return False
    try:
        parts = urlsplit(uri)
        hostname, _ = parts.hostname, parts.port  # the port raises ValueError unless a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(hostname)


def is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def json_body(request) -> dict:
    """The request's JSON object."""
    try:
        data = json.loads(request.body)
    except ValueError:
        raise invalid_metadata("the body must be JSON") from None
    if not isinstance(data, dict):
        raise invalid_metadata("the body must be a JSON object")
    return data


def validated(data: dict) -> dict:
    """The client metadata a client sent, with RFC 7591's defaults filled in."""
    redirect_uris = data.get("redirect_uris")
    if not is_string_list(redirect_uris) or not redirect_uris:
        raise MetadataError("invalid_redirect_uri", "redirect_uris must be a non-empty list")
    for uri in redirect_uris:
        if not is_redirect_uri(uri):
            raise MetadataError(
                "invalid_redirect_uri", f"{uri!r} is not an absolute http(s) URL without fragment"
            )
    metadata = {
        "redirect_uris": redirect_uris,
        "grant_types": data.get("grant_types", ["authorization_code"]),
        "response_types": data.get("response_types", ["code"]),
        "token_endpoint_auth_method": data.get("token_endpoint_auth_method", "client_secret_basic"),
    }
    grant_types = metadata["grant_types"]
    if not is_string_list(grant_types) or not set(grant_types) <= GRANT_TYPES:
        raise invalid_metadata("grant_types may only hold authorization_code and refresh_token")
    if "authorization_code" not in grant_types:
        raise invalid_metadata("grant_types must include authorization_code")
    if metadata["response_types"] != ["code"]:
        raise invalid_metadata('response_types must be ["code"]')
    if metadata["token_endpoint_auth_method"] not in AUTH_METHODS:
        raise invalid_metadata(
            "token_endpoint_auth_method must be client_secret_basic or client_secret_post"
        )
    if "client_name" in data:
        if not isinstance(data["client_name"], str) or len(data["client_name"]) > 255:
            raise invalid_metadata("client_name must be a string of at most 255 characters")
        metadata["client_name"] = data["client_name"]
    if "scope" in data:
        if not isinstance(data["scope"], str):
            raise invalid_metadata("scope must be a string")
        metadata["scope"] = data["scope"]
    return metadata


def describe(application: Application, metadata: dict) -> None:
    """Give the client the redirect URIs and name it registered; DOT must accept them."""
    application.redirect_uris = " ".join(metadata["redirect_uris"])
    application.name = metadata.get("client_name", "")
    try:
        application.full_clean()
    except ValidationError as error:
        code = "invalid_redirect_uri" if "redirect_uris" in error.message_dict else None
        raise MetadataError(code or "invalid_client_metadata", "; ".join(error.messages)) from None


def client_metadata(registration: Registration) -> dict:
    """What the provider answers about a registered client (without its secrets)."""
    client_id = registration.application.client_id
    return {
        "client_id": client_id,
        **registration.metadata,
        "client_id_issued_at": int(registration.application.created.timestamp()),
        "client_secret_expires_at": 0,
        "registration_client_uri": registration_uri(client_id),
    }


@method_decorator(csrf_exempt, name="dispatch")
class RegistrationView(View):
    """POST /o/register/: registers a confidential authorization-code client and answers with
    its client_id, client_secret and registration access token (RFC 7591)."""

    http_method_names = ["post"]

    def post(self, request):
        required = initial_access_token()
        presented = parse_bearer_token(request.headers.get("Authorization", "")) or ""
        if required is not None and not hmac.compare_digest(presented.encode(), required.encode()):
            return invalid_token("registering a client needs the initial access token")
        secret = generate_client_secret()
        application = Application(
            client_secret=secret,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            algorithm=Application.RS256_ALGORITHM,
            skip_authorization=True,
            registration_source=Application.RegistrationSource.DCR,
        )
        try:
            metadata = validated(json_body(request))
            describe(application, metadata)
        except MetadataError as error:
            return error.response()
        token = secrets.token_urlsafe(32)
        with transaction.atomic():
            application.save()
            registration = Registration.objects.create(
                application=application, token_hash=token_hash(token), metadata=metadata
            )
        return JsonResponse(
            {
                **client_metadata(registration),
                "client_secret": secret,
                "registration_access_token": token,
            },
            status=201,
        )


@method_decorator(csrf_exempt, name="dispatch")
class ClientConfigurationView(View):
    """GET, PUT and DELETE /o/register/<client_id>/: a registered client reads, replaces or
    deletes its registration with its registration access token (RFC 7592)."""

    http_method_names = ["get", "put", "delete"]

    def dispatch(self, request, client_id: str):
        if request.method.lower() not in self.http_method_names:
            return self.http_method_not_allowed(request)
        token = parse_bearer_token(request.headers.get("Authorization", ""))
        self.registration = (
            Registration.objects.select_related("application")
            .filter(application__client_id=client_id)
            .first()
        )
        if (
            self.registration is None
            or token is None
            or not hmac.compare_digest(self.registration.token_hash, token_hash(token))
        ):
            return invalid_token("this needs the client's registration access token")
        return super().dispatch(request, client_id)

    def get(self, request, client_id: str):
        return JsonResponse(client_metadata(self.registration))

    def put(self, request, client_id: str):
        application = self.registration.application
        try:
            data = json_body(request)
            if data.get("client_id") != client_id:
                raise invalid_metadata("client_id must be this client's client_id")
            if "client_secret" in data and not check_password(
                str(data["client_secret"]), application.client_secret
            ):
                raise invalid_metadata("client_secret is not this client's secret")
            metadata = validated(data)
            describe(application, metadata)
        except MetadataError as error:
            return error.response()
        self.registration.metadata = metadata
        with transaction.atomic():
            application.save()
            self.registration.save()
        return JsonResponse(client_metadata(self.registration))

    def delete(self, request, client_id: str):
        self.registration.application.delete()
        return HttpResponse(status=204)
