"""Tasks retry transient database errors (a locked SQLite database, a dropped PostgreSQL
connection) instead of dying with them; other errors are not retried."""

import pytest
from django.db import OperationalError

from portal.celery import app
from portal.hubs import tasks

pytestmark = pytest.mark.django_db


def flaky(monkeypatch, name: str, error: Exception, failures: int):
    real = getattr(tasks, name)
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) <= failures:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks, name, call)
    return calls


def test_a_locked_database_is_retried_until_the_task_gets_through(monkeypatch):
    calls = flaky(monkeypatch, "_hub_state", OperationalError("database is locked"), failures=2)
    result = tasks.check_hub_ready.apply((123456,))
    assert result.get() == "skipped"  # no such hub: the check ends normally
    assert len(calls) == 3


def test_a_database_that_stays_away_fails_the_task_after_its_retries(monkeypatch):
    calls = flaky(monkeypatch, "_hub_state", OperationalError("connection refused"), failures=99)
    result = tasks.check_hub_ready.apply((123456,))
    with pytest.raises(OperationalError):
        result.get()
    assert len(calls) == tasks.check_hub_ready.max_retries + 1


def test_other_errors_are_not_retried(monkeypatch):
    calls = flaky(monkeypatch, "_hub_state", ValueError("a bug"), failures=99)
    with pytest.raises(ValueError):
        tasks.check_hub_ready.apply((123456,)).get()
    assert len(calls) == 1


def test_every_task_of_the_portal_retries_database_errors():
    portal_tasks = [t for name, t in app.tasks.items() if name.startswith("portal.")]
    assert portal_tasks
    for task in portal_tasks:
        assert OperationalError in task.autoretry_for, task.name


def test_an_unreachable_cluster_is_retried_with_growing_delays_then_fails_the_hub(
    settings, tmp_path, monkeypatch
):
    """Nothing listens where the kubeconfig points: each try is a transient error, retried
    after 2, 4, 8, ... seconds, at most 120, then the hub fails with the reason. The delays
    are recorded on their way to Celery's own retry."""
    from portal.hubs.lifecycle import HubState
    from tests.factories import HubFactory
    from tests.support import free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: away\n"
        f"clusters: [{{name: away, cluster: {{server: 'https://127.0.0.1:{free_port()}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: away, user: {token: not-a-token}}]\n"
        "contexts: [{name: away, context: {cluster: away, user: away}}]\n"
    )
    settings.KUBECONFIG = str(kubeconfig)
    hub = HubFactory(state=HubState.APPROVED)
    delays = []
    real_retry = tasks.provision_hub.retry

    def retry(*args, **kwargs):
        delays.append(kwargs["countdown"])
        return real_retry(*args, **kwargs)

    monkeypatch.setattr(tasks.provision_hub, "retry", retry)

    assert tasks.provision_hub.apply((hub.pk,)).get() == "failed"
    assert delays == [2, 4, 8, 16, 32, 64, 120, 120]
    hub.refresh_from_db()
    assert hub.state == HubState.FAILED
    assert "cannot reach the Kubernetes API server" in hub.state_reason
