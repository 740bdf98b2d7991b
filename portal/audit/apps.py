from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit app: who did what to which object, when, from where."""

    name = "portal.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        # Connects the receivers that record hub transitions, membership changes and admin
        # actions; models other apps have not added yet are skipped.
        from portal.audit import receivers

        receivers.connect()
