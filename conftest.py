"""Test harness for the real services the suite talks to: the local Kubernetes control plane.

The cluster is resolved once per test run, in this order: the cluster named by the
``KUBECONFIG`` environment variable; the local control plane if it already runs
(``make cluster``); otherwise the local control plane is started for the run and stopped
at its end (set ``KEEP_CLUSTER=1`` to leave it running for the next run).

Under pytest-xdist the controlling process starts (or reaches) the cluster before the workers
start when the run selects tests that need it, so that a cluster that cannot start stops the
run with one line instead of crashing every worker; each worker resolves the cluster itself
too (a file lock makes sure only one starts it), and the controlling process stops it after
all workers finished.

Every run ends with one line per reason tests were skipped: what this run did not prove. With
``REQUIRE_ALL_TESTS=1`` (CI sets it) a skipped test fails the run.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
import time
from collections import Counter
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
START_LOG = REPO_ROOT / ".devcluster-start.log"
# Test folders whose tests need the control plane.
CLUSTER_TESTS = (REPO_ROOT / "tests/cluster", REPO_ROOT / "tests/chart")
# Set by CI: a skipped test is one that CI's environment should have run, so it fails the run.
REQUIRE_ALL_TESTS = "REQUIRE_ALL_TESTS"


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
            START_LOG.write_text(result.stdout + result.stderr)
            reason = _first_error(result.stdout + result.stderr)
            pytest.exit(
                f"could not start the local control plane: {reason} (output in {START_LOG})",
                returncode=3,
            )
        if not was_running:
            STARTED_BY_TESTS.write_text(os.environ[RUN_ID_VARIABLE])


def _first_error(output: str) -> str:
    """The line of the start script's output that says what went wrong."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\b(error|taken|failed|cannot|not found)\b", line, re.IGNORECASE):
            return line
    return lines[-1] if lines else "the start script printed nothing"


def _resolve_cluster() -> Path:
    """The kubeconfig of the cluster this run uses: the one KUBECONFIG names, which must
    answer, or the local control plane, started if needed; exits the run with the reason."""
    if os.environ.get("KUBECONFIG"):
        named = Path(os.environ["KUBECONFIG"])
        if not _cluster_answers(named):
            pytest.exit(f"cannot reach the cluster KUBECONFIG names ({named})", returncode=3)
        return named
    if not _local_cluster_complete():
        _start_local_cluster()
    return LOCAL_KUBECONFIG


def _selects_cluster_tests(config: pytest.Config) -> bool:
    """Whether the run's paths and marker expression can select tests that need a cluster."""
    if re.search(r"\bnot\s+cluster\b", config.getoption("markexpr") or ""):
        return False
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args] or [REPO_ROOT / "tests"]
    return any(
        path == folder or path in folder.parents or folder in path.parents
        for path in paths
        for folder in CLUSTER_TESTS
    )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist, start or reach the cluster in the controlling process, before any worker:
    a failure there ends the run with its reason, where a worker's would crash it."""
    config = session.config
    if _is_xdist_worker(config) or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.getoption("numprocesses", None) and _selects_cluster_tests(config):
        _resolve_cluster()


@pytest.fixture(scope="session")
def kubeconfig_path() -> Path:
    """Path of the kubeconfig of the cluster this test run uses (started if needed)."""
    return _resolve_cluster()


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


_skip_reasons: Counter[str] = Counter()


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count skipped tests by reason (in the controlling process, workers' reports too)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _skip_reasons[_skip_reason(report)] += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line per reason tests were skipped: what this run did not prove."""
    if _is_xdist_worker(config) or not _skip_reasons:
        return
    terminalreporter.write_sep("=", "not proven in this run")
    for reason, count in sorted(_skip_reasons.items(), key=lambda item: (-item[1], item[0])):
        terminalreporter.write_line(f"{count} skipped: {reason}")
    if os.environ.get(REQUIRE_ALL_TESTS) == "1":
        terminalreporter.write_line(
            f"{REQUIRE_ALL_TESTS}=1: this environment should run every test, so the run fails",
            red=True,
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail a run that skipped tests where all should run; stop the local control plane if
    this test run started it (controller process only)."""
    if _is_xdist_worker(session.config):
        return
    passed = session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    if os.environ.get(REQUIRE_ALL_TESTS) == "1" and _skip_reasons and passed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not STARTED_BY_TESTS.exists():
        return
    if STARTED_BY_TESTS.read_text() != os.environ.get(RUN_ID_VARIABLE):
        return  # another test run started it and will stop it
    STARTED_BY_TESTS.unlink()
    if os.environ.get("KEEP_CLUSTER") == "1":
        return
    subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/down.sh")], check=False)
