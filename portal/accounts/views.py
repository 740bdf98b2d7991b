"""Sign-in and sign-out: local passwords, the OIDC issuer and GitHub through social-auth.

social-auth's own views do the protocol; the views here only decide which providers are on
and turn every failure of an identity provider into a clear page (400, 403, 409 or 502).
"""

from __future__ import annotations

from urllib.parse import urlencode

import structlog
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth import logout as auth_logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from social_core import exceptions as social
from social_django import views as social_views

from portal.accounts import oidc
from portal.accounts.auth import OidcBackend, identity_providers, provider_enabled

log = structlog.get_logger(__name__)

OIDC_BACKEND_PATH = f"{OidcBackend.__module__}.{OidcBackend.__name__}"

# What went wrong, by kind of social-auth failure: HTTP status, page title, explanation.
_FAILURES: list[tuple[type[Exception], int, str, str]] = [
    (
        social.AuthCanceled,
        403,
        "Sign-in cancelled",
        "The sign-in was cancelled at the identity provider. You can start it again.",
    ),
    (
        social.AuthSessionError,
        400,
        "Sign-in could not be matched to this browser",
        "The answer of the identity provider does not belong to a sign-in this browser "
        "started (it is stale, was used already, or was altered). Please sign in again.",
    ),
    (
        social.AuthInputError,
        400,
        "Incomplete answer from the identity provider",
        "The identity provider's answer lacks what a sign-in needs. Please sign in again.",
    ),
    (
        social.AuthAssociationError,
        409,
        "Account conflict",
        "This identity is linked to another account. Ask a portal administrator.",
    ),
    (
        social.AuthPolicyError,
        403,
        "Sign-in not allowed",
        "The portal does not allow this account to sign in. Ask a portal administrator.",
    ),
    (
        social.AuthCredentialError,
        403,
        "Sign-in refused",
        "The identity provider refused the credentials. Please sign in again.",
    ),
    (
        social.AuthProviderError,
        502,
        "The identity provider is not available",
        "The portal could not talk to the identity provider (it is down, slow or answered "
        "with an error). Please try again in a few minutes; local sign-in may still work.",
    ),
    (
        social.AuthConfigurationError,
        502,
        "Sign-in is misconfigured",
        "The portal's connection to the identity provider is not configured correctly. "
        "Please tell the portal administrators.",
    ),
]
# An answer that fails verification (signature, audience, issuer, nonce, expiry) is refused.
_FORGED_CODES = {
    "invalid_signature",
    "invalid_claim",
    "nonce_mismatch",
    "response_expired",
    "response_not_yet_valid",
}


def _failure_page(request: HttpRequest, backend: str, error: Exception) -> HttpResponse:
    """The page for a failed sign-in; logs the kind of failure, never tokens or secrets."""
    status, title, explanation = (
        502,
        "Sign-in failed",
        (
            "The identity provider's answer could not be used. Please try again later or tell "
            "the portal administrators."
        ),
    )
    code = getattr(error, "code", type(error).__name__)
    if isinstance(error, social.AuthResponseError) and code in _FORGED_CODES:
        status, title, explanation = (
            403,
            "Sign-in refused",
            (
                "The identity provider's answer could not be verified (it was not issued to this "
                "portal, not signed by the provider, or is stale), so it was refused. "
                "Please sign in again."
            ),
        )
    else:
        for kind, kind_status, kind_title, kind_explanation in _FAILURES:
            if isinstance(error, kind):
                status, title, explanation = kind_status, kind_title, kind_explanation
                break
    explanation = getattr(error, "user_message", explanation)
    log.warning(
        "sso.failed",
        backend=backend,
        error=type(error).__name__,
        code=code,
        stage=getattr(error, "stage", None),
        status=status,
    )
    context = {"title": title, "explanation": explanation, "code": code}
    return render(request, "accounts/sso_error.html", context, status=status)


def _guarded(view):
    """Run a social-auth view for an enabled provider; failures become a clear page."""

    def guarded(request: HttpRequest, backend: str) -> HttpResponse:
        if not provider_enabled(backend):
            raise Http404("No such identity provider")
        try:
            return view(request, backend)
        except social.SocialAuthBaseException as error:
            return _failure_page(request, backend, error)

    return guarded


begin = never_cache(login_not_required(_guarded(social_views.auth)))
complete = csrf_exempt(never_cache(login_not_required(_guarded(social_views.complete))))


class LoginView(auth_views.LoginView):
    """The sign-in page: a button per identity provider, and the password form unless it is off."""

    template_name = "registration/login.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["identity_providers"] = identity_providers()
        context["local_login"] = settings.LOCAL_LOGIN_ENABLED
        return context

    def post(self, request, *args, **kwargs):
        if not settings.LOCAL_LOGIN_ENABLED:
            context = {
                "title": "Password sign-in is switched off",
                "explanation": "Sign in with your institution's identity provider instead.",
                "code": "local_login_disabled",
            }
            return render(request, "accounts/sso_error.html", context, status=403)
        return super().post(request, *args, **kwargs)


login = LoginView.as_view()


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    """Sign out of the portal, and of the issuer too when the user came from there."""
    end_session = _end_session_url(request)
    auth_logout(request)
    return redirect(end_session or resolve_url(settings.LOGOUT_REDIRECT_URL))


def _end_session_url(request: HttpRequest) -> str:
    """The issuer's RP-initiated logout URL for this session, or "" (then only the portal's)."""
    user = request.user
    if not (
        settings.OIDC_LOGOUT_AT_IDP
        and user.is_authenticated
        and request.session.get(BACKEND_SESSION_KEY) == OIDC_BACKEND_PATH
        and oidc.sso_enabled()
    ):
        return ""
    try:
        endpoint = oidc.endpoints().end_session_endpoint
    except oidc.DiscoveryError:
        return ""  # signing out of the portal must not depend on the issuer answering
    if not endpoint:
        return ""
    params = {
        "client_id": settings.OIDC_CLIENT_ID,
        "post_logout_redirect_uri": request.build_absolute_uri(reverse("login")),
    }
    association = user.social_auth.filter(provider="oidc").order_by("-modified").first()
    id_token = (association.extra_data or {}).get("id_token") if association else None
    if isinstance(id_token, str) and id_token:
        params["id_token_hint"] = id_token
    separator = "&" if "?" in endpoint else "?"
    return f"{endpoint}{separator}{urlencode(params)}"
