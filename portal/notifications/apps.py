from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    """The notifications app: e-mails about hubs, and the record of what was sent."""

    name = "portal.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # Connects the HubEvent receiver that mails the people of a hub after each transition.
        from portal.notifications import receivers  # noqa: F401
