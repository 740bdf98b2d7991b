from django.apps import AppConfig


class UsageConfig(AppConfig):
    """Usage collection, prices and cost, GPU capacity."""

    name = "portal.usage"
    label = "usage"
    verbose_name = "Usage and cost"
