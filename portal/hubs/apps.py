from django.apps import AppConfig


class HubsConfig(AppConfig):
    """The hubs app."""

    name = "portal.hubs"
    label = "hubs"
    verbose_name = "Hubs"
