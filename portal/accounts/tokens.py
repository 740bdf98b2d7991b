"""Personal API tokens: issuing, revoking, the DRF authentication class and the scope check.

A token reads ``hod_<8 hex><43 url-safe characters>``; its first 12 characters are kept in clear
(``ApiToken.prefix``) to find the row and to show in lists, the whole token only as a SHA-256
digest. Scripts send ``Authorization: Token <token>`` (or ``Bearer <token>``).

Scopes: ``read`` = safe methods only; ``write`` = also changes the user may make; ``admin`` =
also admin actions (approve, reject, admin-only endpoints), for staff users only. A portal
admin's token without the admin scope acts as its user would without admin rights wherever
others' data would show (`admin_powers`): usage of other users, hubs' invitations and grants.

Every token expires: at most API_TOKEN_MAX_DAYS (default 90) after it is issued, and that
lifetime when none is asked for (0 lifts the maximum).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission

from portal.accounts.models import ApiToken
from portal.audit.log import record
from portal.monitoring.logcontext import bind_user

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from rest_framework.request import Request

log = structlog.get_logger(__name__)

TOKEN_MARKER = "hod_"
PREFIX_LENGTH = len(TOKEN_MARKER) + 8
KEYWORDS = ("token", "bearer")
# last_used_at is written at most this often per token, to keep reads cheap.
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)
# View actions that are admin actions wherever they appear (the hub and revision viewsets').
ADMIN_ACTIONS = frozenset({"approve", "reject", "resume", "delete_now"})

Scope = ApiToken.Scope
_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


class TokenError(ValueError):
    """A token cannot be issued or revoked as asked; the message says why."""


def digest(token: str) -> str:
    """The SHA-256 hex digest stored for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def issue(
    user: AbstractBaseUser,
    *,
    name: str,
    scope: str = Scope.WRITE,
    expires_at: datetime.datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for the user and return it with its clear text (shown once, never kept)."""
    name = (name or "").strip()
    if not name:
        raise TokenError("Give the token a name.")
    if len(name) > ApiToken._meta.get_field("name").max_length:
        raise TokenError("The name is too long (at most 100 characters).")
    if scope not in Scope.values:
        raise TokenError(f"Unknown scope {scope!r}; use read, write or admin.")
    if scope == Scope.ADMIN and not user.is_staff:
        raise TokenError("Only portal admins may have tokens with the admin scope.")
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise TokenError("The expiry must be in the future.")
    longest = max_lifetime()
    if longest is not None:
        if expires_at is None:
            expires_at = now + longest
        elif expires_at > now + longest + datetime.timedelta(minutes=1):
            raise TokenError(
                f"Tokens live at most {longest.days} days here (API_TOKEN_MAX_DAYS); choose an "
                "earlier expiry."
            )
    while True:
        clear = TOKEN_MARKER + secrets.token_hex(4) + secrets.token_urlsafe(32)
        if not ApiToken.objects.filter(prefix=clear[:PREFIX_LENGTH]).exists():
            break
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=clear[:PREFIX_LENGTH],
        digest=digest(clear),
        scope=scope,
        expires_at=expires_at,
    )
    _audit("token.created", token, scope=scope, name=name, user=user.username)
    log.info("api_token_created", user_id=user.pk, prefix=token.prefix, scope=scope)
    return token, clear


def max_lifetime() -> datetime.timedelta | None:
    """The longest a token may live (API_TOKEN_MAX_DAYS), None when there is no maximum."""
    days = settings.API_TOKEN_MAX_DAYS
    return datetime.timedelta(days=days) if days else None


def admin_powers(request: Request) -> bool:
    """Whether the caller acts as a portal admin: a staff user signed in, or with a token of
    the admin scope (a staff user's read or write token sees what a user would see)."""
    if not getattr(request.user, "is_staff", False):
        return False
    token = getattr(request, "auth", None)
    return not isinstance(token, ApiToken) or effective_scope(token) == Scope.ADMIN


def revoke(token: ApiToken, actor: AbstractBaseUser | None = None) -> bool:
    """Revoke a token (one conditional UPDATE); False when it was already revoked."""
    with transaction.atomic():
        won = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if won:
            token.refresh_from_db()
            _audit("token.revoked", token, name=token.name)
    if won:
        log.info("api_token_revoked", user_id=token.user_id, prefix=token.prefix)
    return bool(won)


def _audit(action: str, token: ApiToken, **details) -> None:
    """Record a token event in the audit log (never the token or its digest)."""
    record(action, token, **{k: v for k, v in details.items() if v})


def find(clear: str) -> ApiToken | None:
    """The token row whose digest matches the clear text, compared in constant time."""
    if not clear.startswith(TOKEN_MARKER) or len(clear) < PREFIX_LENGTH + 16:
        return None
    # With the user's identity: which hubs the user may see depends on their IdP groups.
    token = (
        ApiToken.objects.select_related("user", "user__identity")
        .filter(prefix=clear[:PREFIX_LENGTH])
        .first()
    )
    if token is None or not hmac.compare_digest(token.digest, digest(clear)):
        return None
    return token


class ApiTokenAuthentication(BaseAuthentication):
    """``Authorization: Token <token>`` or ``Bearer <token>``; bad tokens are 401 with a reason."""

    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode(errors="replace").lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header: give exactly one token after the keyword."
            )
        try:
            clear = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = find(clear)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This token was revoked.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("This token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is inactive.")
        # At most one write a minute per token, and only by the request that wins the update;
        # a request that read a recent last use sends no statement at all (on SQLite even an
        # update that matches nothing takes the database's write lock).
        stale = token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION
        if stale:
            ApiToken.objects.filter(pk=token.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
            ).update(last_used_at=now)
        bind_user(token.user)  # the request's later log lines name the token's user
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


def effective_scope(token: ApiToken) -> str:
    """The token's scope, capped at write when its user is no longer a portal admin."""
    if token.scope == Scope.ADMIN and not token.user.is_staff:
        return Scope.WRITE
    return token.scope


def required_scope(request: Request, view) -> str:
    """The scope a request needs: read for safe methods, write for changes, admin for admin
    actions (``view.required_scope = "admin"`` marks a whole admin-only endpoint)."""
    declared = getattr(view, "required_scope", None)
    if declared == Scope.ADMIN:
        return Scope.ADMIN
    action = getattr(view, "action", None)
    admin_actions = getattr(view, "admin_actions", ADMIN_ACTIONS)
    if request.method not in SAFE_METHODS and action in admin_actions:
        return Scope.ADMIN
    return Scope.READ if request.method in SAFE_METHODS else Scope.WRITE


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes the token header."""

    target_class = "portal.accounts.tokens.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Token-based authentication with required prefix "Token" (or "Bearer")',
        }


class TokenScopePermission(BasePermission):
    """Refuse (403) a token-authenticated request that its token's scope does not cover.

    Session-authenticated calls have no token and are not limited by scopes.
    """

    def has_permission(self, request: Request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        needed = required_scope(request, view)
        if needed == Scope.ADMIN and not request.user.is_staff:
            # No admin powers to hold back: the view's own answer stands (others' hubs stay
            # 404, admin actions 403 "only portal admins").
            needed = Scope.READ if request.method in SAFE_METHODS else Scope.WRITE
        have = effective_scope(token)
        if _RANK[Scope(have)] >= _RANK[Scope(needed)]:
            return True
        if needed == Scope.ADMIN:
            self.message = (
                f"This token has the {have} scope; this is an admin action and needs a token "
                "with the admin scope."
            )
        else:
            self.message = (
                f"This token has the {have} scope, which only allows reading (GET, HEAD, "
                "OPTIONS); this request needs a token with the write scope."
            )
        return False

    def has_object_permission(self, request: Request, view, obj) -> bool:
        """A portal admin's token without the admin scope changes only their own hubs (as
        owner or co-owner); others' hubs need the admin scope."""
        token = request.auth
        if not isinstance(token, ApiToken) or request.method in SAFE_METHODS:
            return True
        if effective_scope(token) == Scope.ADMIN or not request.user.is_staff:
            return True
        hub = obj if hasattr(obj, "can_manage") else getattr(obj, "hub", None)
        if hub is None or not hasattr(hub, "members"):
            return True
        if (
            hub.owner_id == request.user.pk
            or hub.members.filter(user=request.user, role="co-owner").exists()
        ):
            return True
        self.message = (
            f"This token has the {token.scope} scope; changing a hub that is not yours is an "
            "admin action and needs a token with the admin scope."
        )
        return False
