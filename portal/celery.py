"""The Celery app: configured from Django settings (CELERY_*), tasks routed by module."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
# Every CELERY_* setting in portal/settings.py configures the app (acks_late, prefetch, routes).
app.config_from_object("django.conf:settings", namespace="CELERY")
# Tasks of the Django apps, plus the provisioning package, which is deliberately not a Django app.
app.autodiscover_tasks()
app.autodiscover_tasks(["provisioning"])
