"""Hand work on a hub to the Celery workers, after the deciding transaction commits.

Services, the expiry pass and member changes decide; the tasks in `portal/hubs/tasks.py` act
on those decisions and call back into the lifecycle. So the deciding code names tasks here
instead of importing them, and the dependency keeps one direction (tasks -> decisions). Which
queue a task goes to is CELERY_TASK_ROUTES' business (portal/settings.py), nowhere else.
Only the hub id is sent: the task reads everything else from the database when it runs.
"""

from __future__ import annotations

import structlog
from django.db import transaction

from portal.celery import app

log = structlog.get_logger(__name__)

# The hub tasks that are queued by decisions (their registration is checked by a test).
PROVISION = "portal.hubs.tasks.provision_hub"
DEPROVISION = "portal.hubs.tasks.deprovision_hub"
APPLY_MEMBERS = "portal.hubs.tasks.apply_members"
TASKS = (PROVISION, DEPROVISION, APPLY_MEMBERS)


def send(task_name: str, hub_id: int) -> None:
    """Queue one hub task now; a broker that is away is logged, never raised: the hub's state
    is already committed and the sweeper (or the reconcile pass) re-queues what sits still."""
    try:
        app.send_task(task_name, (hub_id,))
    except Exception:
        log.exception("enqueue_failed", task=task_name, hub_id=hub_id)
    else:
        log.info("enqueued", task=task_name, hub_id=hub_id)


def after_commit(task_name: str, hub_id: int) -> None:
    """Queue one hub task once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(task_name, hub_id))
