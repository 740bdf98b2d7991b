from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Metrics, probes and log context; no models of its own."""

    name = "portal.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        # Task metrics and log context, the worker's metrics endpoint, provisioning durations.
        from portal.monitoring import receivers

        receivers.connect()
