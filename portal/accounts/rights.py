"""Rights that follow the identity provider: IdP groups, portal admin from the admin groups,
and the verified e-mail, read at every sign-in and again on a schedule.

The schedule (`refresh_identities`, a Celery beat task every OIDC_REFRESH_INTERVAL_SECONDS)
exchanges each user's stored refresh token at the issuer's token endpoint and reads UserInfo
with the new access token, without the user signing in. What the provider says then applies
at once: groups replace the stored ones, an admin who left the admin groups stops being one
(and so every token of theirs loses the admin scope, portal/accounts/tokens.py).

- The provider refuses the refresh token (``invalid_grant``) or the access token (UserInfo
  401): it no longer vouches for the sign-in (the user was disabled, signed out everywhere,
  or the offline session ended). The user's portal sessions end, the refresh token is dropped,
  and rights the provider gave are withdrawn until the next sign-in.
- The provider cannot be asked (down, no refresh token): nothing changes until the stored
  groups are older than OIDC_RIGHTS_MAX_AGE_SECONDS; then admin rights the provider gave lapse
  and IdP groups stop counting for hub access in the portal (`current_groups`), until a
  refresh or a sign-in reads them again.
Admin rights the provider did not give (local and break-glass admins) are never touched.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import requests
import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from social_django.models import UserSocialAuth

from portal.accounts import oidc
from portal.accounts.auth import subject_of
from portal.accounts.models import IdentityProfile, UserSession
from portal.audit.log import record

log = structlog.get_logger(__name__)

TIMEOUT_SECONDS = 10


def groups_from(claims: Mapping[str, Any]) -> list[str]:
    """The groups claim (OIDC_GROUPS_CLAIM); one string is one group; ValueError if malformed."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(group, str) for group in value):
        raise ValueError(f"the {settings.OIDC_GROUPS_CLAIM} claim is not a list of names")
    return sorted({group for group in value if group})


def verified_email(claims: Mapping[str, Any]) -> str:
    """The e-mail address, only when the provider says it verified it (email_verified)."""
    email = claims.get("email")
    if claims.get("email_verified") is True and isinstance(email, str) and "@" in email:
        return email.strip().lower()
    return ""


def apply(user, *, groups: list[str], verified_email: str, source: str) -> IdentityProfile:
    """Store what the provider says of the user and grant or withdraw portal admin by the
    admin groups; every grant and withdrawal is in the audit log."""
    admin_groups = set(settings.OIDC_ADMIN_GROUPS)
    User = get_user_model()
    with transaction.atomic():
        profile, _ = IdentityProfile.objects.select_for_update().get_or_create(user=user)
        profile.idp_groups = groups
        profile.verified_email = verified_email
        profile.groups_refreshed_at = timezone.now()
        if source == "oidc" and admin_groups & set(groups):
            if not (user.is_staff and user.is_superuser):
                User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
                user.is_staff = user.is_superuser = True
                profile.admin_from_idp = True
                _audit("account.admin_granted", user, groups=sorted(admin_groups & set(groups)))
        elif source != "github" and profile.admin_from_idp:
            _withdraw(user, profile, "left the admin groups")
        profile.save()
    return profile


def _withdraw(user, profile: IdentityProfile, why: str) -> None:
    """Take back admin rights the provider gave (only those); the caller saves the profile."""
    get_user_model().objects.filter(pk=user.pk).update(is_staff=False, is_superuser=False)
    user.is_staff = user.is_superuser = False
    profile.admin_from_idp = False
    _audit("account.admin_withdrawn", user, why=why)


def _audit(action: str, user, **details) -> None:
    log.info(action.replace("account.", "sso."), user=user.get_username(), **details)
    record(action, user, actor=None, username=user.get_username(), **details)


def max_age() -> datetime.timedelta:
    """How long stored IdP groups and admin rights count without the provider confirming."""
    return datetime.timedelta(seconds=settings.OIDC_RIGHTS_MAX_AGE_SECONDS)


def is_fresh(profile: IdentityProfile | None) -> bool:
    """Whether the provider confirmed the profile's groups within the maximum age."""
    refreshed = getattr(profile, "groups_refreshed_at", None)
    return refreshed is not None and refreshed > timezone.now() - max_age()


def current_groups(user) -> list[str]:
    """The user's IdP groups as long as they are fresh; none once they lapsed."""
    profile = getattr(user, "identity", None) if user.is_authenticated else None
    if not is_fresh(profile):
        return []
    return [group for group in profile.idp_groups or [] if isinstance(group, str) and group]


def end_sessions(user_id: int) -> int:
    """Delete every portal session of the user (one indexed DELETE); returns how many."""
    ended, _ = UserSession.objects.filter(user_id=user_id).delete()
    return ended


class RefreshRefused(Exception):
    """The provider no longer vouches for the user's sign-in."""


class RefreshUnavailable(Exception):
    """The provider could not be asked now (down, misconfigured, no refresh token)."""


def _ask_provider(social: UserSocialAuth) -> dict[str, Any]:
    """Exchange the refresh token and read UserInfo; returns the UserInfo claims."""
    refresh_token = (social.extra_data or {}).get("refresh_token")
    if not refresh_token:
        raise RefreshUnavailable("no refresh token")
    try:
        found = oidc.endpoints()
    except oidc.DiscoveryError as error:
        raise RefreshUnavailable(str(error)) from error
    try:
        answer = requests.post(
            found.token_endpoint,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": settings.OIDC_CLIENT_ID,
                "client_secret": settings.OIDC_CLIENT_SECRET,
            },
            headers={"Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
        )
        if answer.status_code in (400, 401) and _error(answer) == "invalid_grant":
            raise RefreshRefused("the refresh token was refused")
        if answer.status_code != 200:
            raise RefreshUnavailable(f"token endpoint answered HTTP {answer.status_code}")
        tokens = answer.json()
        access_token = tokens["access_token"]
        userinfo = requests.get(
            found.userinfo_endpoint,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
        )
        if userinfo.status_code in (401, 403):
            raise RefreshRefused("the access token was refused at UserInfo")
        if userinfo.status_code != 200:
            raise RefreshUnavailable(f"UserInfo answered HTTP {userinfo.status_code}")
        claims = userinfo.json()
    except (requests.RequestException, ValueError, KeyError, TypeError) as error:
        raise RefreshUnavailable(type(error).__name__) from error
    if not isinstance(claims, dict):
        raise RefreshUnavailable("UserInfo is not a JSON object")
    # Rotated refresh tokens replace the stored one (the old one no longer works).
    data = dict(social.extra_data or {})
    data["refresh_token"] = tokens.get("refresh_token") or refresh_token
    data["access_token"] = access_token
    UserSocialAuth.objects.filter(pk=social.pk).update(extra_data=data)
    return claims


def _error(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("error") or "") if isinstance(body, dict) else ""


def refresh(social: UserSocialAuth) -> str:
    """Read the user's groups and rights from the provider again; returns what happened:
    "refreshed", "refused" (signed out, rights withdrawn), "unavailable" or "lapsed"."""
    user = social.user
    subject = subject_of(social.uid, oidc.issuer())
    if subject is None:
        return _lapse_if_stale(user, "the identity is of another issuer") or "other-issuer"
    try:
        claims = _ask_provider(social)
    except RefreshRefused as refused:
        data = {k: v for k, v in (social.extra_data or {}).items() if k != "refresh_token"}
        UserSocialAuth.objects.filter(pk=social.pk).update(extra_data=data)
        ended = end_sessions(user.pk)
        with transaction.atomic():
            profile, _ = IdentityProfile.objects.select_for_update().get_or_create(user=user)
            profile.idp_groups, profile.groups_refreshed_at = [], None
            if profile.admin_from_idp:
                _withdraw(user, profile, str(refused))
            profile.save()
        _audit("account.signed_out_by_provider", user, why=str(refused), sessions=ended)
        return "refused"
    except RefreshUnavailable as unavailable:
        log.info("sso.refresh_unavailable", user=user.pk, why=str(unavailable))
        return _lapse_if_stale(user, str(unavailable)) or "unavailable"
    if str(claims.get("sub")) != subject:
        log.warning("sso.refresh_subject_mismatch", user=user.pk)
        return _lapse_if_stale(user, "UserInfo named another subject") or "unavailable"
    try:
        groups = groups_from(claims)
    except ValueError:
        return _lapse_if_stale(user, "malformed groups claim") or "unavailable"
    apply(user, groups=groups, verified_email=verified_email(claims), source="oidc")
    return "refreshed"


def _lapse_if_stale(user, why: str) -> str:
    """Withdraw provider-given admin rights once they are older than the maximum age."""
    with transaction.atomic():
        profile = IdentityProfile.objects.select_for_update().filter(user=user).first()
        if profile is None or is_fresh(profile) or not profile.admin_from_idp:
            return ""
        _withdraw(user, profile, f"not confirmed by the provider within the maximum age ({why})")
        profile.save(update_fields=["admin_from_idp"])
    return "lapsed"


def refresh_all() -> dict[str, int]:
    """Refresh every institutional identity not confirmed within the refresh interval, and
    let stale provider-given admin rights lapse; returns counts by outcome."""
    due = timezone.now() - datetime.timedelta(seconds=settings.OIDC_REFRESH_INTERVAL_SECONDS)
    counts: dict[str, int] = {}
    identities = (
        UserSocialAuth.objects.filter(provider="oidc")
        .select_related("user", "user__identity")
        .order_by("pk")
    )
    for social in identities.iterator():
        profile = getattr(social.user, "identity", None)
        refreshed = getattr(profile, "groups_refreshed_at", None)
        if refreshed is not None and refreshed > due:
            continue
        outcome = refresh(social)
        counts[outcome] = counts.get(outcome, 0) + 1
    # Admins from the provider without any identity left to refresh lapse as well.
    for profile in IdentityProfile.objects.filter(admin_from_idp=True).select_related("user"):
        if not is_fresh(profile):
            counts["lapsed"] = counts.get("lapsed", 0) + bool(_lapse_if_stale(profile.user, ""))
    return counts
