"""Hub on Demand: the Django project and the web side of the portal."""

# Load the Celery app whenever Django starts so that @shared_task uses it.
from portal.celery import app as celery_app

__all__ = ("celery_app",)
