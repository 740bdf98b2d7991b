"""What a test run says about itself (conftest.py): a line per skip reason, a failed run when
REQUIRE_ALL_TESTS=1 and something was skipped, and one line, not a worker crash, when the
cluster cannot be reached. Each case is a real pytest run in a subprocess."""

import os
import subprocess
import sys

from tests.support import REPO_ROOT, free_port

SAMPLE = """\
import pytest


def test_runs():
    pass


@pytest.mark.skip(reason="no such service here")
def test_skipped():
    pass
"""


def run_pytest(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "REQUIRE_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=REPO_ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_sample(tmp_path, **env: str) -> subprocess.CompletedProcess:
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE)
    # The repository's conftest as a plugin, for a test file outside the repository.
    return run_pytest("-p", "conftest", "--rootdir", str(tmp_path), str(sample), **env)


def test_a_run_that_skips_says_why_at_the_end(tmp_path):
    result = run_sample(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.split("not proven in this run", 1)[1]
    assert "1 skipped: no such service here" in summary


def test_a_skip_fails_the_run_where_every_test_should_run(tmp_path):
    result = run_sample(tmp_path, REQUIRE_ALL_TESTS="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 skipped" in result.stdout
    assert "REQUIRE_ALL_TESTS=1: this environment should run every test" in result.stdout


def test_a_cluster_that_does_not_answer_stops_the_run_with_one_line(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: away\n"
        f"clusters: [{{name: away, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: away, user: {token: not-a-token}}]\n"
        "contexts: [{name: away, context: {cluster: away, user: away}}]\n"
    )
    result = run_pytest(
        "-n", "2", "tests/cluster/test_control_plane.py", KUBECONFIG=str(kubeconfig)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert f"Exit: cannot reach the cluster KUBECONFIG names ({kubeconfig})" in output
    assert "INTERNALERROR" not in output and "crashed" not in output
