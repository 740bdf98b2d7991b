from django.apps import AppConfig


class OidcProviderConfig(AppConfig):
    """The test OpenID Connect provider's own app (its seed command)."""

    name = "tests.oidc_provider"
    label = "oidc_provider"
