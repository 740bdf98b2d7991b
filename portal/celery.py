"""The Celery app, configured from Django settings (CELERY_*, routes in CELERY_TASK_ROUTES)."""

import os
from logging.config import dictConfig

from celery import Celery, Task
from celery.signals import setup_logging
from django.conf import settings
from django.db import InterfaceError, OperationalError

from portal.monitoring.heartbeat import WorkerHeartbeat

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class PortalTask(Task):
    """Every task of the portal retries transient database errors (a locked SQLite database,
    a PostgreSQL connection that went away) with a growing, jittered delay; the work is
    idempotent, so running it again is safe. Tasks retry their cluster errors themselves."""

    autoretry_for = (OperationalError, InterfaceError)
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5


app = Celery("portal", task_cls=PortalTask)
# Every CELERY_* setting in portal/settings.py configures the app (acks_late, prefetch, routes).
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each Django app keeps its tasks in its own tasks.py (hub work in portal/hubs/tasks.py, usage
# collection in portal/usage/tasks.py); `provisioning` is a library and has none.
app.autodiscover_tasks()


@setup_logging.connect
def use_the_portal_logging(**kwargs) -> None:
    """Workers and beat log as the rest of the portal does (settings.LOGGING: JSON lines with
    the task's id, name and hub), not in Celery's own format."""
    dictConfig(settings.LOGGING)


# The worker's liveness: a heartbeat file touched by its main loop (`manage.py healthcheck
# worker` reads it).
app.steps["worker"].add(WorkerHeartbeat)
