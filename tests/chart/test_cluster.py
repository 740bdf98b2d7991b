"""The chart against the local control plane: every rendered object passes the API server's
dry-run in a namespace enforcing Pod Security `restricted`, and `helm install`, `upgrade` and
`uninstall` work on the simulated nodes.

kwok runs no containers: pods are scheduled by their requests and become Running and Ready,
and the migration hook's pod completes, without the portal's image ever being pulled. What
the processes do inside is tested elsewhere (tests/test_deployment_files.py runs the image's
commands); here the objects, their admission and the rollout are under test.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from provisioning import k8s
from tests.chart.conftest import CHART, REQUIRED, VALUES_SETS, merged
from tests.support import eventually

pytestmark = pytest.mark.cluster

COMPONENTS = ("web", "worker", "beat", "watcher")
# The Secret an operator creates before installing (README, "Deploy on Kubernetes").
CREDENTIALS = {
    "secret-key": "chart-test-" + "k" * 50,
    "database-url": "postgres://portal:pw@postgres.example.org:5432/portal",
    "redis-url": "redis://redis.example.org:6379/0",
    "metrics-token": "scrape-me",
}
# Pods land on the simulated CPU nodes (devcluster/nodes.yaml), through the chart's value.
ON_KWOK = {"nodeSelector": {"type": "kwok"}}


def create_credentials(kubectl, namespace: str, name: str = "portal-credentials") -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": CREDENTIALS,
    }
    kubectl("create", "-f", "-", input=json.dumps(secret))


def dry_run(kubectl, namespace: str, objects: list[dict]):
    """Server-side apply every object as a dry run; the API server admits or refuses it."""
    manifest = yaml.safe_dump_all(objects)
    return kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=chart-test",
        "-n", namespace, "-f", "-", input=manifest, check=False,
    )  # fmt: skip


def pods_of(objects: list[dict], namespace: str) -> list[dict]:
    """A Pod for every pod template (Deployments and the hook's Job): Pod Security enforces
    on pods, and only warns on the workloads that make them."""
    pods = []
    for workload in objects:
        if workload["kind"] not in ("Deployment", "Job"):
            continue
        template = workload["spec"]["template"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{workload['metadata']['name']}-probe",
                    "namespace": namespace,
                    "labels": template["metadata"]["labels"],
                },
                "spec": template["spec"],
            }
        )
    return pods


@pytest.mark.parametrize("values_set", sorted(VALUES_SETS))
def test_every_rendered_object_passes_a_server_dry_run(
    cluster_helm, kubectl, prometheus_operator_crds, restricted_namespace, values_set
):
    release = f"dry-{secrets.token_hex(3)}"
    objects = cluster_helm.template(VALUES_SETS[values_set], release, restricted_namespace)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "Job", "Service", "ConfigMap"} <= kinds
    if values_set == "everything":
        assert {
            "ServiceAccount", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ServiceMonitor", "PrometheusRule",
        } <= kinds  # fmt: skip

    result = dry_run(kubectl, restricted_namespace, objects)
    assert result.returncode == 0, result.stderr
    assert "would violate PodSecurity" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects)

    # The pods' ServiceAccount must exist for them to be admitted: that one for real.
    accounts = [o for o in objects if o["kind"] == "ServiceAccount"]
    if accounts:
        kubectl("apply", "-n", restricted_namespace, "-f", "-", input=yaml.safe_dump_all(accounts))
    pods = dry_run(kubectl, restricted_namespace, pods_of(objects, restricted_namespace))
    assert pods.returncode == 0, pods.stderr
    assert pods.stdout.count("(server dry run)") == len(COMPONENTS) + 1 - (values_set == "minimal")
    # Nothing was stored.
    stored = kubectl("get", "deployments,jobs,pods", "-n", restricted_namespace, "-o", "name")
    assert stored.stdout.strip() == ""


def test_pod_security_refuses_a_pod_that_is_not_restricted(
    cluster_helm, kubectl, restricted_namespace
):
    """The check above is the API server's: the same chart with root allowed is refused."""
    values = merged(
        REQUIRED,
        {
            "podSecurityContext": {"runAsNonRoot": False, "runAsUser": 0},
            "securityContext": {"runAsNonRoot": False, "allowPrivilegeEscalation": True},
        },
    )
    objects = cluster_helm.template(values, "root", restricted_namespace)
    result = dry_run(kubectl, restricted_namespace, pods_of(objects, restricted_namespace))
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "runAsNonRoot != true" in result.stderr
    assert "allowPrivilegeEscalation != false" in result.stderr


def deployments_available(kubectl, namespace: str, release: str) -> dict[str, dict]:
    listed = kubectl(
        "get", "deployments", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}",
        "-o", "json",
    )  # fmt: skip
    return {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in json.loads(listed.stdout)["items"]
    }


def running_pods(kubectl, namespace: str, release: str) -> list[dict]:
    listed = kubectl(
        "get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}",
        "-o", "json",
    )  # fmt: skip
    return json.loads(listed.stdout)["items"]


def settled(kubectl, namespace: str, release: str, expected: dict[str, int]) -> list[dict] | None:
    """The release's pods once each component has exactly its replicas, all Running and Ready
    on simulated nodes, and none terminating; else None."""
    pods = running_pods(kubectl, namespace, release)
    counts: dict[str, int] = {}
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp"):
            return None
        ready = [c for c in pod["status"].get("conditions", []) if c["type"] == "Ready"]
        if pod["status"].get("phase") != "Running" or not ready or ready[0]["status"] != "True":
            return None
        if not pod["spec"].get("nodeName", "").startswith("kwok-"):
            return None
        name = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        counts[name] = counts.get(name, 0) + 1
    return pods if counts == expected else None


def test_install_upgrade_rollback_uninstall(cluster_helm, kubectl, restricted_namespace):
    namespace = restricted_namespace
    release = f"portal-{secrets.token_hex(3)}"
    create_credentials(kubectl, namespace)
    values = merged(REQUIRED, ON_KWOK)
    expected = {"web": 2, "worker": 1, "beat": 1, "watcher": 1}

    cluster_helm.run(
        "install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "3m", values=values
    )
    deployments = deployments_available(kubectl, namespace, release)
    assert set(deployments) == set(COMPONENTS)
    for name, deployment in deployments.items():
        status = deployment["status"]
        assert status.get("availableReplicas") == expected[name], (name, status)
    pods = eventually(lambda: settled(kubectl, namespace, release, expected), timeout=90)
    account = f"{release}-hub-on-demand"
    for pod in pods:
        # The API server mounted the ServiceAccount's token where in-cluster config reads it.
        assert pod["spec"]["serviceAccountName"] == account
        (container,) = pod["spec"]["containers"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/var/run/secrets/kubernetes.io/serviceaccount" in mounts
        assert pod["spec"]["nodeSelector"] == {"type": "kwok"}
    # The migration hook ran to completion before the Deployments were made, and was removed.
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    job = f"{release}-hub-on-demand-migrate"
    completed = [
        e for e in events if e["involvedObject"]["name"] == job and e["reason"] == "Completed"
    ]
    assert completed, [e["reason"] for e in events if e["involvedObject"]["kind"] == "Job"]
    assert kubectl("get", "job", job, "-n", namespace, check=False).returncode != 0
    before = {p["metadata"]["name"]: p["metadata"]["annotations"]["checksum/config"] for p in pods}

    # A changed setting rolls every component's pods through the checksum annotation.
    changed = merged(values, {"portal": {"logLevel": "DEBUG"}})
    cluster_helm.run(
        "upgrade", release, str(CHART), "-n", namespace, "--wait", "--timeout", "3m", values=changed
    )
    pods = eventually(
        lambda: (p := settled(kubectl, namespace, release, expected))
        and not {x["metadata"]["name"] for x in p} & before.keys()
        and p,
        timeout=90,
    )
    checksums = {p["metadata"]["annotations"]["checksum/config"] for p in pods}
    assert len(checksums) == 1 and checksums.isdisjoint(before.values())
    configmap = json.loads(
        kubectl("get", "configmap", account, "-n", namespace, "-o", "json").stdout
    )
    assert configmap["data"]["LOG_LEVEL"] == "DEBUG"
    history = json.loads(cluster_helm.run("history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    # Rolling back brings the first revision's settings and pods back.
    cluster_helm.run("rollback", release, "1", "-n", namespace, "--wait", "--timeout", "3m")
    pods = eventually(
        lambda: (p := settled(kubectl, namespace, release, expected))
        and {x["metadata"]["annotations"]["checksum/config"] for x in p} == set(before.values())
        and p,
        timeout=90,
    )
    assert pods

    cluster_helm.run("uninstall", release, "-n", namespace, "--wait", "--timeout", "2m")
    left = kubectl(
        "get", "deployments,services,configmaps,serviceaccounts,jobs,poddisruptionbudgets",
        "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "name",
    )  # fmt: skip
    assert left.stdout.strip() == ""
    eventually(lambda: not running_pods(kubectl, namespace, release), timeout=60)
    # The operator's Secret is theirs: uninstalling leaves it.
    kubectl("get", "secret", "portal-credentials", "-n", namespace)


def test_the_service_account_token_works_as_in_cluster_config(
    cluster_helm, kubectl, restricted_namespace, kubeconfig_path, tmp_path, monkeypatch
):
    """What a pod of the chart does to reach the API server: no KUBECONFIG, the token and CA
    that Kubernetes mounts into it, and KUBERNETES_SERVICE_HOST/PORT. Here the token is one
    the TokenRequest API issues for the chart's ServiceAccount, written where the pod would
    have it (the client's paths point into tmp_path)."""
    from kubernetes.config import incluster_config

    namespace = restricted_namespace
    release = f"sa-{secrets.token_hex(3)}"
    create_credentials(kubectl, namespace)
    cluster_helm.run(
        "install", release, str(CHART), "-n", namespace, values=merged(REQUIRED, ON_KWOK)
    )
    account = f"{release}-hub-on-demand"
    token = kubectl("create", "token", account, "-n", namespace, "--duration=10m").stdout.strip()

    admin = config.new_client_from_config(config_file=str(kubeconfig_path))
    server = admin.configuration.host.removeprefix("https://")
    host, _, port = server.rpartition(":")
    (tmp_path / "token").write_text(token)
    (tmp_path / "ca.crt").write_bytes(Path(admin.configuration.ssl_ca_cert).read_bytes())
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.setattr(k8s._local, "clients", {}, raising=False)

    api = k8s.api_client(None)
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert review.status.user_info.username == f"system:serviceaccount:{namespace}:{account}"
    # It is a real identity: the API server decides what it may do.
    answer = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace="kube-system", verb="get", resource="secrets"
                )
            )
        )
    )
    assert answer.status.allowed is False
    admin.close()
    cluster_helm.run("uninstall", release, "-n", namespace, "--wait")
