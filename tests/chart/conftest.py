"""Fixtures of the chart's tests: the pinned helm (built from Go modules into the devcluster
cache, like the control plane), the values sets the tests render, kubectl for the local
cluster, and the prometheus-operator CRDs taken from its Go module."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "chart"
SCRIPTS = REPO / "devcluster" / "scripts"

# What an operator must set (README, "Deploy on Kubernetes").
REQUIRED = {
    "portal": {"url": "https://portal.example.org"},
    "hubs": {"domain": "hubs.example.org"},
    "secrets": {"existingSecret": "portal-credentials"},
}
# The keys the Secret holds when every credential is in use.
ALL_SECRET_KEYS = {
    "SECRET_KEY": "secret-key",
    "DATABASE_URL": "database-url",
    "REDIS_URL": "redis-url",
    "METRICS_TOKEN": "metrics-token",
    "OIDC_CLIENT_SECRET": "oidc-client-secret",
    "OIDC_HUB_REGISTRATION_TOKEN": "oidc-hub-registration-token",
    "OIDC_HUB_CLIENT_SECRET": "oidc-hub-client-secret",
    "EMAIL_HOST_PASSWORD": "email-host-password",
    "GITHUB_CLIENT_SECRET": "github-client-secret",
}


def merged(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, the way helm merges values files."""
    result = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# Every optional object and every credential on.
EVERYTHING = merged(
    REQUIRED,
    {
        "image": {"repository": "registry.example.org/hub-on-demand", "pullSecrets": ["pull"]},
        "portal": {"allowedHosts": ["portal.example.org", "portal.internal"], "hstsSeconds": 600},
        "hubs": {
            "ingressClass": "nginx",
            "ingressAnnotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            "storageClass": "fast",
            "deniedEgress": ["203.0.113.0/24"],
            "quotaCaps": {"requests.nvidia.com/gpu": "16"},
        },
        "oidc": {
            "issuer": "https://idp.example.org/realms/research",
            "clientId": "portal",
            "adminGroups": ["portal-admins"],
            "registrationToken": True,
            "hubClientId": "hubs",
        },
        "github": {"clientId": "gh-portal"},
        "email": {"host": "smtp.example.org", "user": "portal"},
        "kubeconfig": {"existingSecret": "hubs-cluster"},
        "extraEnv": [{"name": "USAGE_CURRENCY", "value": "EUR"}],
        "serviceAccount": {"annotations": {"example.org/owner": "research-computing"}},
        "nodeSelector": {"type": "kwok"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "portal"}],
        "web": {
            "autoscaling": {"enabled": True},
            "affinity": {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {
                                    "matchLabels": {"app.kubernetes.io/component": "web"}
                                },
                            },
                        }
                    ]
                }
            },
        },
        "worker": {"replicas": 2, "nodeSelector": {"node.kubernetes.io/instance-type": "cpu"}},
        "watcher": {"replicas": 2},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
            "tls": [{"secretName": "portal-tls", "hosts": ["portal.example.org"]}],
        },
        "networkPolicy": {
            "enabled": True,
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}],
        },
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    },
)
# The fewest objects: no metrics, no watcher, no budget, an existing ServiceAccount.
MINIMAL = merged(
    REQUIRED,
    {
        "metrics": {"enabled": False},
        "watcher": {"enabled": False},
        "web": {"replicas": 1, "podDisruptionBudget": {"enabled": False}},
        "serviceAccount": {"create": False, "name": "default"},
        "rbac": {"create": False},
    },
)
VALUES_SETS = {"required": REQUIRED, "everything": EVERYTHING, "minimal": MINIMAL}


def devcluster_value(function: str) -> str:
    """The value of one of devcluster/scripts/common.sh's functions (e.g. helm_bin_dir)."""
    result = subprocess.run(
        ["bash", "-c", f'source "{SCRIPTS}/common.sh" && {function}'],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def versions_env() -> dict[str, str]:
    lines = (REPO / "devcluster/versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def run_tool(
    command: list[str], stdin: str | None, check: bool, env: dict | None = None, timeout=120
) -> subprocess.CompletedProcess:
    """Run helm or kubectl; with `check`, a failure fails the test with the tool's output."""
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, env=env, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        name = Path(command[0]).name
        pytest.fail(f"{name} {' '.join(command[1:])} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Helm:
    """The pinned helm, run against the test cluster when `kubeconfig` is set."""

    binary: Path
    kubeconfig: Path | None = None

    def run(
        self, *args: str, values: dict | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        command = [str(self.binary), *args]
        if values is not None:
            command += ["--values", "-"]
        env = dict(os.environ)
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
        stdin = yaml.safe_dump(values) if values is not None else None
        return run_tool(command, stdin, check, env=env, timeout=300)

    def template(
        self, values: dict, release: str = "portal", namespace: str = "portal", *args: str
    ) -> list[dict[str, Any]]:
        """The objects `helm template` renders, hooks included."""
        result = self.run("template", release, str(CHART), "-n", namespace, *args, values=values)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    """The pinned helm, built by devcluster/scripts/build.sh if the cache lacks it (one
    pytest-xdist worker builds, the other waits)."""
    binary = Path(devcluster_value("helm_bin_dir")) / "helm"
    if not binary.exists():
        cache = Path(devcluster_value('echo "$DEVCLUSTER_CACHE"'))
        cache.mkdir(parents=True, exist_ok=True)
        with (cache / "build-helm.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not binary.exists():
                build = subprocess.run(
                    ["bash", str(SCRIPTS / "build.sh"), "helm"],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert build.returncode == 0, build.stdout + build.stderr
    return binary


@pytest.fixture(scope="session")
def helm(helm_binary) -> Helm:
    """helm for rendering and linting, without a cluster."""
    return Helm(helm_binary)


@pytest.fixture(scope="session")
def cluster_helm(helm_binary, kubeconfig_path) -> Helm:
    """helm against the test cluster."""
    return Helm(helm_binary, kubeconfig_path)


@pytest.fixture(scope="session")
def kubectl(kubeconfig_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the cached kubectl against the test cluster; stdin from `input`."""
    binary = Path(devcluster_value("kubernetes_bin_dir")) / "kubectl"

    def run(*args: str, input: str | None = None, check: bool = True):
        return run_tool([str(binary), "--kubeconfig", str(kubeconfig_path), *args], input, check)

    return run


@pytest.fixture(scope="session")
def prometheus_operator_crds(kubectl) -> list[str]:
    """The ServiceMonitor and PrometheusRule CRDs of the pinned prometheus-operator module
    (PROMETHEUS_OPERATOR_VERSION in devcluster/versions.env), installed into the cluster.

    Taken from the module the Go proxy serves, not kept in this repository. Cluster-wide and
    applied idempotently, so parallel test processes may both install them; they stay."""
    version = versions_env()["PROMETHEUS_OPERATOR_VERSION"]
    module = f"github.com/prometheus-operator/prometheus-operator@{version}"
    download = subprocess.run(
        ["go", "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        timeout=600,
    )
    assert download.returncode == 0, download.stdout + download.stderr
    crds = Path(json.loads(download.stdout)["Dir"]) / "example" / "prometheus-operator-crd"
    names = []
    for kind in ("servicemonitors", "prometheusrules"):
        path = crds / f"monitoring.coreos.com_{kind}.yaml"
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names.append(f"{kind}.monitoring.coreos.com")
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *[f"crd/{n}" for n in names])
    return names


def create_namespace(kubectl, prefix: str, restricted: bool = True) -> str:
    """A namespace of a unique name; with `restricted`, Pod Security `restricted` enforced."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    labels = {"hub-on-demand.test": "true"}
    if restricted:
        for mode in ("enforce", "warn"):
            labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
            labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }
    kubectl("create", "-f", "-", input=json.dumps(namespace))
    return name


@pytest.fixture
def restricted_namespace(kubectl) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security `restricted`, deleted afterwards."""
    name = create_namespace(kubectl, "chart")
    yield name
    kubectl("delete", "namespace", name, "--wait=false")
