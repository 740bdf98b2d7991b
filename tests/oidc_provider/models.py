"""What the provider keeps about clients that registered themselves (RFC 7591)."""

from django.db import models


class Registration(models.Model):
    """A self-registered client: the metadata it registered and its registration access token
    (only the token's SHA-256, so reading the database does not give the token away)."""

    application = models.OneToOneField(
        "oauth2_provider.Application", on_delete=models.CASCADE, related_name="registration"
    )
    token_hash = models.CharField(max_length=64)
    metadata = models.JSONField()

    def __str__(self):
        return f"registration of client {self.application.client_id}"


class EmailStatus(models.Model):
    """Whether the provider verified a user's e-mail address (verified unless a row says not)."""

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="email_status")
    verified = models.BooleanField(default=True)

    def __str__(self):
        return f"e-mail of {self.user} {'verified' if self.verified else 'not verified'}"
