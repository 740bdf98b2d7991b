"""Test harness for the real services the suite talks to: the local Kubernetes control plane.

The cluster is resolved once per test run, in this order: the cluster named by the
``KUBECONFIG`` environment variable; the local control plane if it already runs
(``make cluster``); otherwise the local control plane is started for the run and stopped
at its end (set ``KEEP_CLUSTER=1`` to leave it running for the next run).

Under pytest-xdist every worker resolves the cluster itself; a file lock makes sure only
one of them starts it, and the controlling process stops it after all workers finished.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fixtures shared by test modules that are not in tests/conftest.py's scope of everyday ones.
pytest_plugins = ["tests.smtp_support", "tests.sso_support"]

REPO_ROOT = Path(__file__).resolve().parent
DEVCLUSTER_STATE = Path(os.environ.get("DEVCLUSTER_STATE", REPO_ROOT / ".devcluster"))
LOCAL_KUBECONFIG = DEVCLUSTER_STATE / "kubeconfig"
# Written when a test run (not the developer) started the local control plane; holds that
# run's id, so that only the run that started the cluster stops it.
STARTED_BY_TESTS = REPO_ROOT / ".devcluster-started-by-tests"
RUN_ID_VARIABLE = "HUB_ON_DEMAND_TEST_RUN"
START_LOCK = REPO_ROOT / ".devcluster-start.lock"


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _cluster_answers(kubeconfig: Path) -> bool:
    """Whether the API server behind this kubeconfig answers."""
    from kubernetes import client, config

    try:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        api_client.configuration.retries = 0
        with api_client:
            client.VersionApi(api_client).get_code(_request_timeout=3)
        return True
    except Exception:
        return False


def _local_cluster_complete() -> bool:
    """Whether every component of the local control plane runs and the API server answers."""
    status = subprocess.run(
        ["bash", str(REPO_ROOT / "devcluster/scripts/status.sh")], capture_output=True, check=False
    )
    return status.returncode == 0 and _cluster_answers(LOCAL_KUBECONFIG)


def _start_local_cluster() -> None:
    """Start the local control plane, or the components of it that stopped."""
    with START_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _local_cluster_complete():
            return
        was_running = LOCAL_KUBECONFIG.exists() and _cluster_answers(LOCAL_KUBECONFIG)
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "devcluster/scripts/up.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.exit(
                "could not start the local control plane:\n" + result.stdout + result.stderr,
                returncode=3,
            )
        if not was_running:
            STARTED_BY_TESTS.write_text(os.environ[RUN_ID_VARIABLE])


@pytest.fixture(scope="session")
def kubeconfig_path() -> Path:
    """Path of the kubeconfig of the cluster this test run uses (started if needed)."""
    if os.environ.get("KUBECONFIG"):
        return Path(os.environ["KUBECONFIG"])
    if not _local_cluster_complete():
        _start_local_cluster()
    return LOCAL_KUBECONFIG


@pytest.fixture(scope="session")
def kube_api(kubeconfig_path: Path):
    """A `kubernetes.client.ApiClient` for the test cluster, with admin rights."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(kubeconfig_path))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(kube_api) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = f"test-{secrets.token_hex(4)}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"hub-on-demand.test": "true"})
        )
    )
    # The controller manager creates the default ServiceAccount shortly after; pods need it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if core.list_namespaced_service_account(name, field_selector="metadata.name=default").items:
            break
        time.sleep(0.2)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def pytest_configure(config: pytest.Config) -> None:
    # The controlling process names the run; xdist workers inherit the variable.
    if not _is_xdist_worker(config):
        os.environ[RUN_ID_VARIABLE] = secrets.token_hex(8)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop the local control plane if this test run started it (controller process only)."""
    if _is_xdist_worker(session.config) or not STARTED_BY_TESTS.exists():
        return
    if STARTED_BY_TESTS.read_text() != os.environ.get(RUN_ID_VARIABLE):
        return  # another test run started it and will stop it
    STARTED_BY_TESTS.unlink()
    if os.environ.get("KEEP_CLUSTER") == "1":
        return
    subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/down.sh")], check=False)
