"""Fixtures for tests that run the portal's background work for real: a Celery worker process
on its own Redis database, writing to this test's PostgreSQL database."""

from __future__ import annotations

import pytest


@pytest.fixture
def workers(kubeconfig_path, background):
    """Real Celery workers and hub watchers (see `background`) that work on the local
    control plane."""
    background.env["KUBECONFIG"] = str(kubeconfig_path)
    return background


@pytest.fixture
def celery_worker(workers):
    """One real Celery worker, and the hub watcher, for this test."""
    workers.start_watcher()
    return workers.start()
