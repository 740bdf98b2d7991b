"""Steps of the social-auth pipeline (SOCIAL_AUTH_PIPELINE in portal/settings.py).

Who a user is: an identity is (provider, uid), for the institutional issuer (issuer, subject)
(portal/accounts/auth.py). A known identity signs in to its account whatever name the
provider gives today: a user renamed at the provider keeps their account, hubs and data.

The username of a new account is derived once, at its first sign-in, and never changes:
- the issuer's username claim, lower-cased (JupyterHub lower-cases the same way), for the
  institutional issuer; ``<login>@github`` for GitHub, so the two never share a name;
- when that name is taken by an account that signs in with another identity (a name the
  provider gave away again, another provider's user), the first free ``<name>-2``,
  ``<name>-3``, ...; the newcomer never gets the existing account;
- when it is taken by an account that was not made by signing in (createapitoken, a local
  or break-glass account, a superuser), the sign-in is refused and a LinkRequest waits for a
  portal admin, who alone may link the identity to that account (the Django admin's action).

At each sign-in the user's IdP groups and verified e-mail are stored, and the admin groups
decide who is a portal admin (portal/accounts/rights.py applies the same rule at refreshes).
"""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from social_core.exceptions import AuthAssociationError, AuthPolicyError, AuthResponseError
from social_django.models import UserSocialAuth

from portal.accounts import rights
from portal.accounts.auth import subject_of
from portal.accounts.models import LinkRequest
from portal.audit.log import record

log = structlog.get_logger(__name__)

GITHUB_SUFFIX = "@github"
USERNAME_MAX_LENGTH = 150


class UsernameRejected(AuthPolicyError):
    """The issuer's username claim cannot be a portal (and hub) username."""

    user_message = (
        "Your identity provider gave a username the portal cannot use (missing, too long or "
        "with characters other than letters, digits and @ . + - _). Ask your administrator."
    )


class AccountNeedsLink(AuthAssociationError):
    """The username belongs to an account that was not made by signing in."""

    user_message = (
        "An account with your username already exists here and was not made by signing in "
        "(a service, local or break-glass account). A portal administrator has been asked to "
        "link it to your identity; until then you cannot sign in with it."
    )


class SignedInAsSomeoneElse(AuthAssociationError):
    """The browser is signed in to the portal as another user than the IdP's."""

    user_message = (
        "You are signed in to the portal as another user. Sign out first, then sign in with "
        "your identity provider."
    )


def upgrade_legacy_uid(backend, uid: str, *args, **kwargs) -> None:
    """An identity stored before (issuer, subject) keying, by subject alone, gets its issuer
    (the data migration does this for the issuer configured when it ran)."""
    if backend.name != "oidc":
        return
    subject = subject_of(uid, (backend.id_token or {}).get("iss") or "")
    if subject is None or UserSocialAuth.objects.filter(provider="oidc", uid=uid).exists():
        return
    legacy = UserSocialAuth.objects.filter(provider="oidc", uid=subject).first()
    if legacy is not None:
        UserSocialAuth.objects.filter(pk=legacy.pk).update(uid=uid)
        log.info("sso.identity_upgraded", user=legacy.user_id)


def proposed_username(backend, details: dict) -> str:
    """The username a new account of this identity would get, before collisions."""
    claim = details.get("username")
    name = claim.strip().lower() if isinstance(claim, str) else ""
    if backend.name == "github" and name:
        name += GITHUB_SUFFIX
    try:
        if not name or len(name) > USERNAME_MAX_LENGTH:
            raise ValidationError("length")
        UnicodeUsernameValidator()(name)
    except ValidationError as error:
        log.warning("sso.username_rejected", backend=backend.name)
        raise UsernameRejected(backend, code="authentication_disallowed") from error
    return name


def free_username(base: str) -> str:
    """`base`, else the first of `base-2`, `base-3`, ... that no account has."""
    taken = set(
        get_user_model()
        .objects.filter(username__startswith=base)
        .values_list("username", flat=True)
    )
    if base not in taken:
        return base
    number = 2
    while True:
        suffix = f"-{number}"
        candidate = base[: USERNAME_MAX_LENGTH - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        number += 1


def portal_username(
    backend, details: dict, uid: str, user=None, social=None, *args, **kwargs
) -> dict[str, Any] | None:
    """The account of a known identity, or the username of a new one (the rule above)."""
    if social is not None:
        return {"username": social.user.get_username()}
    if user is not None:
        # Signed in to the portal as someone: a new identity is never linked to them here.
        raise SignedInAsSomeoneElse(backend, code="identity_in_use")
    base = proposed_username(backend, details)
    holder = get_user_model().objects.filter(username=base).first()
    if holder is not None and not holder.social_auth.exists():
        LinkRequest.objects.update_or_create(
            user=holder,
            provider=backend.name,
            uid=uid,
            defaults={
                "claimed_username": base,
                "email": details.get("email") or "",
                "id_key": kwargs.get("id_key") or "",
            },
        )
        record("account.link_requested", holder, actor=None, provider=backend.name, uid=uid)
        log.warning("sso.link_requested", backend=backend.name, user=holder.pk)
        raise AccountNeedsLink(backend, code="username_in_use")
    username = free_username(base)
    if username != base:
        log.info("sso.username_derived", backend=backend.name, username=username)
    details["username"] = username
    return {"username": username}


def store_identity(backend, user=None, response=None, *args, **kwargs) -> None:
    """Store the user's IdP groups and verified e-mail; the admin groups grant or withdraw
    portal admin (portal/accounts/rights.py)."""
    if user is None:
        return
    if backend.name != "oidc":
        rights.apply(user, groups=[], verified_email="", source="github")
        return
    claims = {**(getattr(backend, "id_token", None) or {}), **(response or {})}
    try:
        groups = rights.groups_from(claims)
    except ValueError as error:
        raise AuthResponseError(
            backend, code="invalid_claim", claim=settings.OIDC_GROUPS_CLAIM, stage="user_info"
        ) from error
    rights.apply(user, groups=groups, verified_email=rights.verified_email(claims), source="oidc")
