"""Who a user is beyond Django's User: the IdP groups they bring, identities waiting for an
admin to link them, and their API tokens.

A user signs in with an identity: (provider, uid) of social-auth's UserSocialAuth, where the
institutional issuer's uid is ``<issuer>#<subject>`` (portal/accounts/auth.py), so an
account is found by who the provider says the person is, never by a name.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import models


class IdentityProfile(models.Model):
    """The groups a user's identity provider says they belong to, refreshed at each sign-in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="identity"
    )
    idp_groups = models.JSONField(
        default=list, blank=True, help_text="Group or entitlement names from the IdP's claim."
    )
    groups_refreshed_at = models.DateTimeField(null=True, blank=True)
    admin_from_idp = models.BooleanField(
        default=False,
        help_text="Portal admin because of an IdP admin group; withdrawn when the group is gone.",
    )
    verified_email = models.EmailField(
        blank=True,
        help_text="The e-mail address the IdP vouched for (email_verified) at the last sign-in "
        "or refresh; invitations for an address are accepted with it.",
    )

    def __str__(self) -> str:
        return f"identity of {self.user}"


class LinkRequest(models.Model):
    """A sign-in refused because its name belongs to an account that was not made by signing in
    (createapitoken, a local or break-glass account): an admin may link the identity to it."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="link_requests"
    )
    provider = models.CharField(max_length=32)
    uid = models.CharField(max_length=255, help_text="The identity at the provider.")
    id_key = models.CharField(max_length=255, blank=True, help_text="The claim the uid is of.")
    claimed_username = models.CharField(max_length=150)
    email = models.EmailField(blank=True)
    requested_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "provider", "uid"], name="one_link_request_per_identity"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} identity {self.claimed_username!r} for {self.user}"


class ApiToken(models.Model):
    """A personal API token: shown once, stored as a hash, scoped, expiring and revocable."""

    class Scope(models.TextChoices):
        READ = "read", "read"
        WRITE = "write", "write"
        ADMIN = "admin", "admin"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    # The first characters of the token, kept in clear to find the row and to show in lists.
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64, help_text="SHA-256 of the whole token, hex.")
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class UserSession(AbstractBaseSession):
    """A portal session (Django's database session) that knows its user, so that one user's
    sessions are ended with one indexed DELETE (portal.accounts.rights.end_sessions) instead of
    decoding every session. Stored by portal.accounts.sessions.SessionStore (SESSION_ENGINE)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Who signed in with this session; empty before sign-in.",
    )

    class Meta:
        verbose_name = "session"

    @classmethod
    def get_session_store_class(cls):
        from portal.accounts.sessions import SessionStore

        return SessionStore
