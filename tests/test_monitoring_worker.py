"""Operating the background processes: the worker's own metrics endpoint after a real task
run in its prefork pool, the JSON log lines of that task, and the liveness of the worker and
beat through `manage.py healthcheck` (real processes on a Redis database of their own and this
test's PostgreSQL database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.error import URLError
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portal.celery import app
from tests.support import REPO_ROOT, eventually, free_port

pytestmark = pytest.mark.django_db

PROVISION = "portal.hubs.tasks.provision_hub"


def scrape(port: int) -> dict[tuple[str, tuple], float] | None:
    """The worker's metrics, or None while it does not answer yet."""
    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
    except (URLError, ConnectionError):
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def healthcheck(env: dict[str, str], service: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "healthcheck", service, *options],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_workers_endpoint_counts_a_task_run_in_its_pool(background, tmp_path):
    port = free_port()
    worker = background.start(
        pool="prefork",
        WORKER_METRICS_PORT=str(port),
        METRICS_LISTEN_ADDRESS="127.0.0.1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "worker-metrics"),
    )
    eventually(lambda: scrape(port) is not None, timeout=60)
    missing_hub = 10**9  # nothing to do: the run needs no cluster

    sent = app.send_task(PROVISION, (missing_hub,))

    runs = ("hubondemand_celery_tasks_total", (("outcome", "success"), ("task", PROVISION)))
    eventually(lambda: (scrape(port) or {}).get(runs) == 1, timeout=60)
    samples = scrape(port)
    assert samples[("hubondemand_celery_task_duration_seconds_count", (("task", PROVISION),))] == 1
    assert samples[("django_db_execute_total", (("alias", "default"), ("vendor", "postgresql")))]

    # Alive while it runs; gone, as far as the probe can tell, once stopped.
    alive = healthcheck(background.env, "worker")
    assert alive.returncode == 0, alive.stdout + alive.stderr
    background.stop(worker)
    assert healthcheck(background.env, "worker").returncode != 0

    lines = [json.loads(line) for line in background.log().splitlines() if line.startswith("{")]
    of_task = [line for line in lines if line.get("task_id") == sent.id]
    events = {line["event"].split("[")[0].split(" ")[0] for line in of_task}
    # The task's own line and Celery's (a standard-library logger), both with the context.
    assert "provision.skip" in events and "Task" in events, of_task
    assert all(line["task"] == PROVISION and line["hub_id"] == missing_hub for line in of_task)
    # Lines of the worker outside the task carry no task context.
    assert any(line["event"] == "metrics.serving" and "task_id" not in line for line in lines)


def test_beat_is_alive_while_it_ticks(background):
    env = {**background.env, "HEALTH_HEARTBEAT_SECONDS": "1", "HEALTH_MAX_AGE_SECONDS": "3"}
    beat = background.start_beat(**env)
    eventually(lambda: healthcheck(env, "beat").returncode == 0, timeout=60)
    background.stop(beat)
    time.sleep(3.5)
    stale = healthcheck(env, "beat")
    assert stale.returncode != 0
    assert "last heartbeat" in stale.stderr


def test_a_stale_or_missing_heartbeat_fails_the_healthcheck(tmp_path):
    env = {**os.environ, "HEALTH_HEARTBEAT_DIR": str(tmp_path)}
    missing = healthcheck(env, "worker")
    assert missing.returncode != 0 and "no heartbeat" in missing.stderr
    heartbeat = tmp_path / "worker.heartbeat"
    heartbeat.touch()
    assert healthcheck(env, "worker").returncode == 0
    two_minutes_ago = time.time() - 120
    os.utime(heartbeat, (two_minutes_ago, two_minutes_ago))
    assert healthcheck(env, "worker").returncode != 0
    assert healthcheck(env, "worker", "--max-age", "300").returncode == 0


def test_server_policy_checks_that_waited_past_the_next_pass_are_dropped(background, settings):
    """A worker that falls behind gets no pile of checks: one left in the queue past the next
    pass (SERVER_POLICY_INTERVAL_SECONDS) is dropped unrun and counted as expired, and the
    next pass's checks run."""
    from portal.hubs.lifecycle import HubState
    from portal.hubs.tasks import enforce_server_policies
    from tests.factories import HubFactory

    HubFactory(slug="behind-a", state=HubState.RUNNING)
    HubFactory(slug="behind-b", state=HubState.EXPIRING)
    HubFactory(slug="behind-c", state=HubState.SUSPENDED)  # no users: no check
    settings.SERVER_POLICY_INTERVAL_SECONDS = 1
    queued_at = time.monotonic()
    assert enforce_server_policies() == 2
    # No worker took them within the interval (the next pass is due).
    time.sleep(max(0.0, queued_at + 1.5 - time.monotonic()))

    port = free_port()
    background.start(WORKER_METRICS_PORT=str(port), METRICS_LISTEN_ADDRESS="127.0.0.1")
    eventually(lambda: scrape(port) is not None, timeout=60)
    settings.SERVER_POLICY_INTERVAL_SECONDS = 60
    assert enforce_server_policies() == 2

    task = "portal.hubs.tasks.enforce_server_policy"

    def runs(outcome: str) -> float:
        key = ("hubondemand_celery_tasks_total", (("outcome", outcome), ("task", task)))
        return (scrape(port) or {}).get(key, 0)

    # The worker sees the hubs' rows only in this test's transaction, so the checks it runs
    # find no hub and skip: what counts here is that they ran and the stale ones did not.
    eventually(lambda: (runs("expired"), runs("success")) == (2, 2), timeout=60)
