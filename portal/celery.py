"""The Celery app, configured from Django settings (CELERY_*, routes in CELERY_TASK_ROUTES)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
# Every CELERY_* setting in portal/settings.py configures the app (acks_late, prefetch, routes).
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each Django app keeps its tasks in its own tasks.py (hub work in portal/hubs/tasks.py, usage
# collection in portal/usage/tasks.py); `provisioning` is a library and has none.
app.autodiscover_tasks()
