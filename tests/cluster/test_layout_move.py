"""A hub of the one-namespace layout moves to its two namespaces through the normal sync and
reconcile, keeping users' homes and the shared volume: the same PersistentVolumes, bound to
claims of the same names in the users' namespace, with their reclaim policy given back."""

from __future__ import annotations

import dataclasses
import secrets

import pytest
from kubernetes import client

from provisioning import k8s, migrate
from provisioning.hubconfig import SHARED_PVC
from provisioning.reconcile import reconcile
from provisioning.render import RenderSettings, hub_labels, namespace, render_hub
from provisioning.sync import sync_hub
from tests.provisioning.examples import EXAMPLES
from tests.support import delete_namespaces, eventually

pytestmark = pytest.mark.cluster

SETTINGS = RenderSettings()
HOME = "home-alice"


def _claim(spec, name: str, labels: dict, mode: str, size_gib: int = 1) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
        "spec": {"accessModes": [mode], "resources": {"requests": {"storage": f"{size_gib}Gi"}}},
    }


def old_layout(kube_api, spec) -> dict[str, str]:
    """What a hub of the one-namespace layout had in its namespace: its objects with the user
    servers' network policy and the jobs account, the shared volume, a user's home made by
    KubeSpawner (no portal labels), a running user server. The claims' volumes, by claim."""
    k8s.apply(kube_api, namespace(spec))
    labels = hub_labels(spec)
    for manifest in [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "singleuser", "namespace": spec.namespace, "labels": labels},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "jobs", "namespace": spec.namespace, "labels": labels},
        },
        _claim(spec, SHARED_PVC, labels, "ReadWriteMany", spec.shared_size_gib),
        _claim(spec, HOME, {"component": "singleuser-storage"}, "ReadWriteOnce"),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "jupyter-alice",
                "namespace": spec.namespace,
                "labels": {"component": "singleuser-server"},
            },
            "spec": {
                "securityContext": {
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "notebook",
                        "image": "quay.io/jupyter/base-notebook",
                        "securityContext": {
                            "runAsUser": 1000,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    }
                ],
                "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": HOME}}],
            },
        },
    ]:
        k8s.apply(kube_api, manifest)

    def bound():
        claims = {
            name: k8s.get(kube_api, "PersistentVolumeClaim", name, spec.namespace)
            for name in (SHARED_PVC, HOME)
        }
        volumes = {name: (c.get("spec") or {}).get("volumeName") for name, c in claims.items()}
        return all(volumes.values()) and volumes

    return eventually(bound)


@pytest.fixture
def old_hub(kube_api):
    spec = dataclasses.replace(
        EXAMPLES["gpu-research"],
        slug=f"move-{secrets.token_hex(3)}",
        hub_id=secrets.randbelow(10**9),
    )
    volumes = old_layout(kube_api, spec)
    yield spec, volumes
    delete_namespaces(kube_api, spec)


def assert_moved(kube_api, spec, volumes: dict[str, str]) -> None:
    core = client.CoreV1Api(kube_api)
    for name, volume in volumes.items():
        # The same volume, bound to the claim of the same name in the users' namespace.
        def bound(name=name):
            claim = core.read_namespaced_persistent_volume_claim(name, spec.users_namespace)
            return claim if claim.status.phase == "Bound" else None

        claim = eventually(bound, timeout=60)
        assert claim.spec.volume_name == volume
        assert k8s.get(kube_api, "PersistentVolumeClaim", name, spec.namespace) is None
    # Nothing users run is left next to the hub.
    assert not k8s.list_objects(kube_api, "Pod", spec.namespace, migrate.USER_SERVER_SELECTOR)
    assert k8s.get(kube_api, "NetworkPolicy", "singleuser", spec.namespace) is None
    assert k8s.get(kube_api, "ServiceAccount", "jobs", spec.namespace) is None
    assert k8s.get(kube_api, "ServiceAccount", spec.jobs_account(spec.owner), spec.users_namespace)


def reclaim_policies_restored(kube_api, spec, volumes: dict[str, str]) -> None:
    def restored():
        migrate.finish_moves(kube_api, spec)
        found = [k8s.get(kube_api, "PersistentVolume", v) for v in volumes.values()]
        return all(
            v["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
            and migrate.LABEL_MOVING not in (v["metadata"].get("labels") or {})
            for v in found
        )

    eventually(restored, timeout=60)


def test_a_sync_moves_users_data_to_the_users_namespace(kube_api, old_hub):
    spec, volumes = old_hub
    core = client.CoreV1Api(kube_api)
    # A volume of the hostPath provisioner is deleted with its claim: only the move's Retain
    # keeps it.
    for volume in volumes.values():
        assert core.read_persistent_volume(volume).spec.persistent_volume_reclaim_policy == "Delete"

    result = sync_hub(kube_api, spec, SETTINGS)

    assert set(result.moved) == {SHARED_PVC, HOME}
    assert_moved(kube_api, spec, volumes)
    reclaim_policies_restored(kube_api, spec, volumes)
    # Done once: a second sync moves nothing and keeps the volumes.
    again = sync_hub(kube_api, spec, SETTINGS)
    assert again.moved == ()
    assert_moved(kube_api, spec, volumes)


def test_the_reconcile_pass_moves_an_old_hub_and_a_rollback_keeps_the_new_layout(kube_api, old_hub):
    spec, volumes = old_hub
    k8s.apply(kube_api, {**render_hub(spec, SETTINGS)[0]})  # the hub's namespace, labelled

    report = reconcile(kube_api, [spec], SETTINGS)

    assert set(report.repaired[spec.hub_id].moved) == {SHARED_PVC, HOME}
    assert_moved(kube_api, spec, volumes)
    reclaim_policies_restored(kube_api, spec, volumes)
    # The spec of any earlier revision renders the two namespaces too: there is no old
    # layout to go back to.
    earlier = dataclasses.replace(spec, expected_users=3, shared_mode="ro")
    where = {m["metadata"].get("namespace") for m in render_hub(earlier, SETTINGS)}
    assert where == {None, spec.namespace, spec.users_namespace, *spec.jobs_namespaces}
    sync_hub(kube_api, earlier, SETTINGS)
    assert_moved(kube_api, spec, volumes)
