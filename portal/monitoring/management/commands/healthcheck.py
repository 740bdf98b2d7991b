"""`manage.py healthcheck worker|beat|watcher`: exit 0 when the service's heartbeat is fresh."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.monitoring import heartbeat


class Command(BaseCommand):
    help = (
        "Exit 0 when the Celery worker, beat or the hub watcher said it was alive within "
        "--max-age seconds (its heartbeat file in HEALTH_HEARTBEAT_DIR), non-zero otherwise. "
        "For Docker HEALTHCHECKs and Kubernetes liveness probes; needs no database."
    )
    requires_system_checks = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("service", choices=heartbeat.SERVICES)
        parser.add_argument(
            "--max-age",
            type=float,
            default=None,
            help="Seconds a heartbeat stays fresh (default HEALTH_MAX_AGE_SECONDS).",
        )

    def handle(self, *args, service: str, max_age: float | None, **options) -> None:
        limit = settings.HEALTH_MAX_AGE_SECONDS if max_age is None else max_age
        age = heartbeat.age(service)
        if age is None:
            raise CommandError(f"{service}: no heartbeat at {heartbeat.path(service)}")
        if age > limit:
            raise CommandError(f"{service}: last heartbeat {age:.0f} s ago (limit {limit:g} s)")
        self.stdout.write(f"{service}: alive ({age:.0f} s ago)")
