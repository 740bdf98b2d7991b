"""Time reconciliation passes over many hubs on the local control plane.

    make bench-reconcile                         # N = 100 and 1,000
    .venv/bin/python benchmarks/reconcile.py --hubs 100

For each N: applies the objects of N hubs directly (suspended, so no pods run), then times one
reconcile pass with no drift and one with 1% of the hubs drifted (their hub Deployment deleted
and their quota edited), and prints N, seconds, API calls and calls per hub. Starts the
cluster if none runs and stops it afterwards; otherwise deletes the namespaces it made.
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from provisioning import k8s  # noqa: E402
from provisioning.reconcile import reconcile  # noqa: E402
from provisioning.render import HubSecrets, RenderSettings, render_hub  # noqa: E402
from tests.provisioning.examples import EXAMPLES  # noqa: E402

KUBECONFIG = REPO_ROOT / ".devcluster" / "kubeconfig"
SETTINGS = RenderSettings()


def cluster_runs() -> bool:
    status = subprocess.run(
        ["bash", str(REPO_ROOT / "devcluster/scripts/status.sh")], capture_output=True, check=False
    )
    return status.returncode == 0


def make_specs(count: int, offset: int):
    # A run id in the slugs: namespaces of an earlier run may still be terminating.
    run = secrets.token_hex(2)
    examples = list(EXAMPLES.values())
    return [
        dataclasses.replace(
            examples[i % len(examples)],
            hub_id=offset + i,
            slug=f"bench-{run}-{i}",
            suspended=True,
        )
        for i in range(count)
    ]


def apply_all(api, specs) -> float:
    started = time.monotonic()

    def apply_hub(spec):
        for manifest in render_hub(spec, SETTINGS, HubSecrets.generate()):
            k8s.apply(api, manifest)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(apply_hub, specs))
    return time.monotonic() - started


def timed_pass(api, specs):
    started = time.monotonic()
    report = reconcile(api, specs, SETTINGS)
    return time.monotonic() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()

    started_here = False
    if not cluster_runs():
        subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/up.sh")], check=True)
        started_here = True
    api = k8s.api_client(KUBECONFIG)
    made = []
    header = ("hubs", "pass", "seconds", "API calls", "calls/hub", "repaired")
    print("{:>6} {:<10} {:>8} {:>10} {:>10} {:>9}".format(*header))
    try:
        offset = 10**6
        for count in args.hubs:
            specs = make_specs(count, offset)
            offset += count
            made.extend(specs)
            setup = apply_all(api, specs)
            print(f"{count:>6} {'setup':<10} {setup:>8.1f}   (objects applied directly)")
            timed_pass(api, specs)  # warm-up: connections, imports
            seconds, report = timed_pass(api, specs)
            assert not report.repaired, report.repaired
            print(
                f"{count:>6} {'no drift':<10} {seconds:>8.2f} {report.api_calls:>10}"
                f" {report.api_calls / count:>10.3f} {len(report.repaired):>9}"
            )
            drifted = specs[::100] if count >= 100 else specs[:1]
            for spec in drifted:
                k8s.delete(api, "Deployment", "hub", spec.namespace)
                k8s._call(
                    api,
                    "PATCH",
                    f"/api/v1/namespaces/{spec.namespace}/resourcequotas/hub-quota",
                    header_params={"Content-Type": "application/merge-patch+json"},
                    body={"spec": {"hard": {"pods": "1"}}},
                )
            seconds, report = timed_pass(api, specs)
            assert len(report.repaired) == len(drifted), report.repaired
            print(
                f"{count:>6} {'1% drift':<10} {seconds:>8.2f} {report.api_calls:>10}"
                f" {report.api_calls / count:>10.3f} {len(report.repaired):>9}"
            )
    finally:
        if started_here:
            subprocess.run(["bash", str(REPO_ROOT / "devcluster/scripts/down.sh")], check=False)
        else:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda s: k8s.delete_namespace(api, s.namespace), made))


if __name__ == "__main__":
    main()
