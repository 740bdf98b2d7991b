"""Two workers never work on the same hub at once (PostgreSQL advisory lock per hub)."""

import psycopg
import pytest
from django.db import connection

from portal.hubs import tasks
from portal.hubs.lifecycle import HubState
from tests.factories import HubFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
def other_worker():
    """A second database session, standing in for another worker."""
    if connection.vendor != "postgresql":
        pytest.skip("the per-hub lock is a PostgreSQL advisory lock")
    db = connection.settings_dict
    session = psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        autocommit=True,
    )
    yield session
    session.close()


@pytest.mark.parametrize("task", [tasks.provision_hub, tasks.deprovision_hub])
def test_a_task_for_a_hub_another_worker_holds_does_nothing(task, other_worker):
    hub = HubFactory(state=HubState.APPROVED)
    other_worker.execute("SELECT pg_advisory_lock(%s, %s)", [tasks.HUB_LOCK_CLASS, hub.pk])

    # Retried (at once when run eagerly), then left to the holder and the sweeper.
    assert task.apply((hub.pk,)).get() == "busy"
    hub.refresh_from_db()
    assert hub.state == HubState.APPROVED
    assert hub.events.count() == 0


def test_the_lock_is_released_after_the_task(other_worker):
    hub = HubFactory(state=HubState.REJECTED)
    assert tasks.provision_hub.apply((hub.pk,)).get() == "skipped"
    acquired = other_worker.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", [tasks.HUB_LOCK_CLASS, hub.pk]
    ).fetchone()[0]
    assert acquired is True
