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
