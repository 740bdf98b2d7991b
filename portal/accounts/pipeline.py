"""Steps of the social-auth pipeline (SOCIAL_AUTH_PIPELINE in portal/settings.py).

Two rules hold for the OIDC issuer. A user's portal username is the issuer's username claim,
lower-cased: JupyterHub lower-cases it the same way, so the name is the same in the portal and
in every hub (and an account of that name, e.g. created by ``createapitoken``, is that user).
And at each sign-in the user's IdP groups are stored and the admin groups decide who is a
portal admin.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from social_core.exceptions import AuthAssociationError, AuthPolicyError, AuthResponseError

from portal.accounts.models import IdentityProfile

log = structlog.get_logger(__name__)


class UsernameRejected(AuthPolicyError):
    """The issuer's username claim cannot be a portal (and hub) username."""

    user_message = (
        "Your identity provider gave a username the portal cannot use (missing, too long or "
        "with characters other than letters, digits and @ . + - _). Ask your administrator."
    )


class UsernameTaken(AuthAssociationError):
    """The username belongs to an account that signs in through another provider."""

    user_message = (
        "An account with your username already signs in through another provider. "
        "Ask a portal administrator to link it."
    )


class PasswordAccountExists(AuthAssociationError):
    """The username belongs to a local account that signs in with a password."""

    user_message = (
        "An account with your username signs in here with a password (a local or break-glass "
        "account). Ask a portal administrator to link it to your identity provider."
    )


class SignedInAsSomeoneElse(AuthAssociationError):
    """The browser is signed in to the portal as another user than the IdP's."""

    user_message = (
        "You are signed in to the portal as another user. Sign out first, then sign in with "
        "your identity provider."
    )


def idp_username(backend, details: dict, user=None, *args, **kwargs) -> dict[str, Any] | None:
    """Use the issuer's username claim as the username, and the account of that name if any."""
    if backend.name != "oidc":
        return None
    claim = details.get("username")
    username = claim.strip().lower() if isinstance(claim, str) else ""
    try:
        if not username or len(username) > 150:
            raise ValidationError("length")
        UnicodeUsernameValidator()(username)
    except ValidationError as error:
        log.warning("sso.username_rejected", claim=settings.OIDC_USERNAME_CLAIM)
        raise UsernameRejected(backend, code="authentication_disallowed") from error
    details["username"] = username
    if user is not None:
        if kwargs.get("social") is None and user.username != username:
            # Signed in to the portal as someone else: never link this identity to them.
            raise SignedInAsSomeoneElse(backend, code="identity_in_use")
        return {"username": user.username}
    existing = get_user_model().objects.filter(username=username).first()
    if existing is None:
        return {"username": username}
    if existing.social_auth.exclude(provider=backend.name).exists():
        raise UsernameTaken(backend, code="username_in_use")
    if existing.has_usable_password() and not existing.social_auth.exists():
        # A password account (e.g. a break-glass admin) is never taken over by a name claim.
        raise PasswordAccountExists(backend, code="username_in_use")
    return {"username": username, "user": existing}


def store_idp_groups(backend, user=None, response=None, *args, **kwargs) -> None:
    """Store the user's IdP groups and grant or withdraw portal admin by the admin groups."""
    if user is None:
        return
    groups = _groups(backend, response or {}) if backend.name == "oidc" else []
    admin_groups = set(settings.OIDC_ADMIN_GROUPS)
    with transaction.atomic():
        profile, _ = IdentityProfile.objects.select_for_update().get_or_create(user=user)
        profile.idp_groups = groups
        profile.groups_refreshed_at = timezone.now()
        User = get_user_model()
        if backend.name == "oidc" and admin_groups & set(groups):
            if not (user.is_staff and user.is_superuser):
                User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
                user.is_staff = user.is_superuser = True
                profile.admin_from_idp = True
                log.info("sso.admin_granted", user=user.username)
        elif backend.name == "oidc" and profile.admin_from_idp:
            # Only what the IdP granted is withdrawn; local admins stay admins.
            User.objects.filter(pk=user.pk).update(is_staff=False, is_superuser=False)
            user.is_staff = user.is_superuser = False
            profile.admin_from_idp = False
            log.info("sso.admin_withdrawn", user=user.username)
        profile.save()


def _groups(backend, response: dict) -> list[str]:
    """The group claim from the UserInfo answer, else the ID token; one string is one group."""
    key = settings.OIDC_GROUPS_CLAIM
    id_token = getattr(backend, "id_token", None) or {}
    if key in response:
        value = response[key]
    elif key in id_token:
        value = id_token[key]
    else:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(group, str) for group in value):
        raise AuthResponseError(backend, code="invalid_claim", claim=key, stage="user_info")
    return sorted({group for group in value if group})
