"""Measure the local control plane: start-up with cached binaries, and how fast a Deployment
becomes Ready on a simulated node.

    make bench-cluster            # or: .venv/bin/python benchmarks/devcluster.py [--rounds N]

Starts the cluster if none runs (and stops it again afterwards); prints figures only.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import time
from pathlib import Path

from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[1]
KUBECONFIG = REPO_ROOT / ".devcluster" / "kubeconfig"


def cluster_runs() -> bool:
    status = subprocess.run(
        ["bash", str(REPO_ROOT / "devcluster/scripts/status.sh")], capture_output=True, check=False
    )
    return status.returncode == 0


def deployment_ready_seconds(apps: client.AppsV1Api, namespace: str, name: str) -> float:
    labels = {"app": name}
    started = time.monotonic()
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(name="main", image="registry.k8s.io/pause:3.10")
                        ]
                    ),
                ),
            ),
        ),
    )
    deadline = started + 120
    while time.monotonic() < deadline:
        status = apps.read_namespaced_deployment_status(name, namespace).status
        if (status.ready_replicas or 0) == 1:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"deployment {name} not ready after 120s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="Deployments to time")
    args = parser.parse_args()

    started_here = False
    if not cluster_runs():
        began = time.monotonic()
        subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/up.sh")], check=True)
        print(f"cluster start (cached binaries): {time.monotonic() - began:.1f} s")
        started_here = True
    try:
        api = config.new_client_from_config(config_file=str(KUBECONFIG))
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        namespace = f"bench-{secrets.token_hex(3)}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        while not core.list_namespaced_service_account(namespace).items:
            time.sleep(0.1)
        samples = [deployment_ready_seconds(apps, namespace, f"d{i}") for i in range(args.rounds)]
        core.delete_namespace(namespace)
        print(
            f"deployment -> ready pod, {args.rounds} rounds: "
            f"median {statistics.median(samples):.2f} s, max {max(samples):.2f} s"
        )
    finally:
        if started_here:
            subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/down.sh")], check=False)


if __name__ == "__main__":
    main()
