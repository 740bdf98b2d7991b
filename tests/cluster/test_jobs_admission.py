"""A hostile hub member with jobs access, talking to the API server directly with the `jobs`
ServiceAccount's own token: every Job that would reach the hub's secrets, another user's data,
the hub's Services or a node is refused by the API server's admission (the portal's
ValidatingAdmissionPolicies, provisioning/admission.py), with its message; a plain job passes."""

from __future__ import annotations

import copy
import dataclasses
import secrets

import pytest
from kubernetes import client

from provisioning import k8s
from provisioning.admission import POLICY_PREFIX
from provisioning.hubconfig import HUB_DB_PVC, JOBS_SERVICE_ACCOUNT, SHARED_PVC
from provisioning.render import SECRET_NAME, RenderSettings
from provisioning.sync import sync_hub
from tests.provisioning.examples import EXAMPLES
from tests.support import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def jobs_hub(kube_api):
    """A hub with jobs access, applied as provisioning applies it."""
    spec = dataclasses.replace(
        EXAMPLES["gpu-research"],
        slug=f"jobs-{secrets.token_hex(3)}",
        hub_id=secrets.randbelow(10**9),
    )
    assert spec.jobs_access
    sync_hub(kube_api, spec, RenderSettings())
    yield spec
    k8s.delete_namespace(kube_api, spec.namespace)


@pytest.fixture(scope="module")
def member_api(kube_api, jobs_hub):
    """An API client that authenticates as the hub's jobs ServiceAccount, with a token the API
    server issued for it (what a member's server holds), not the admin's certificate."""
    core = client.CoreV1Api(kube_api)

    def token():
        return core.create_namespaced_service_account_token(
            JOBS_SERVICE_ACCOUNT,
            jobs_hub.namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        ).status.token

    configuration = copy.copy(kube_api.configuration)
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token()}"}
    api = client.ApiClient(configuration)
    # The API server loads new policies through a watch: wait until they are in force.
    bad = job(jobs_hub.namespace, volumes=volume(secret={"secretName": SECRET_NAME}))
    eventually(lambda: _admission_message(api, bad))
    yield api
    api.close()


def job(namespace: str, **pod_spec) -> dict:
    """A Job whose pod template is a harmless non-root container, changed by `pod_spec`."""
    labels = pod_spec.pop("labels", {"app": "my-analysis"})
    template_spec = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "containers": [{"name": "work", "image": "python:3.12", "command": ["true"]}],
        **pod_spec,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"job-{secrets.token_hex(3)}", "namespace": namespace},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": template_spec}},
    }


def refusal(api, manifest) -> str:
    with pytest.raises(k8s.ClusterError) as refused:
        k8s.apply(api, manifest, dry_run=True)
    return refused.value.message


def volume(**source) -> list[dict]:
    return [{"name": "data", **source}]


ATTEMPTS = {
    "the hub's Secret": dict(volumes=volume(secret={"secretName": SECRET_NAME})),
    "the hub's Secret, projected": dict(
        volumes=volume(projected={"sources": [{"secret": {"name": SECRET_NAME}}]})
    ),
    "the hub's database claim": dict(
        volumes=volume(persistentVolumeClaim={"claimName": HUB_DB_PVC})
    ),
    "another user's home": dict(volumes=volume(persistentVolumeClaim={"claimName": "claim-bob"})),
    "the shared volume, writable": dict(
        volumes=volume(persistentVolumeClaim={"claimName": SHARED_PVC})
    ),
    "any NFS export": dict(volumes=volume(nfs={"server": "10.0.0.5", "path": "/export/all"})),
    "a host path": dict(volumes=volume(hostPath={"path": "/var/lib/kubelet"})),
    "a node by name": dict(nodeName="kwok-node-0"),
    "the node's network": dict(hostNetwork=True),
    "system-node-critical": dict(priorityClassName="system-node-critical"),
    "the hub's ServiceAccount": dict(serviceAccountName="hub"),
    "root": dict(securityContext={}),
    "a privileged container": dict(
        containers=[
            {
                "name": "work",
                "image": "python:3.12",
                "securityContext": {"privileged": True, "runAsNonRoot": True},
            }
        ]
    ),
    "the hub's labels": dict(labels={"app.kubernetes.io/component": "hub"}),
    "the proxy's labels": dict(labels={"app.kubernetes.io/component": "proxy"}),
    "a user server's labels": dict(labels={"hub.jupyter.org/username": "alice"}),
    "the hub id label": dict(labels={"hub-on-demand.io/hub-id": "1"}),
}

MESSAGES = {
    "volumes": "may mount only emptyDir",
    "node": "may not choose its node",
    "host": "may not use the node's network",
    "priority": "may not set a priority class",
    "account": "runs as the jobs ServiceAccount",
    "root": "must run as non-root",
    "privileged": "may not run privileged containers",
    "labels": "may not carry the labels of the hub",
}
EXPECTED = {
    "the hub's Secret": "volumes",
    "the hub's Secret, projected": "volumes",
    "the hub's database claim": "volumes",
    "another user's home": "volumes",
    "the shared volume, writable": "volumes",
    "any NFS export": "volumes",
    "a host path": "volumes",
    "a node by name": "node",
    "the node's network": "host",
    "system-node-critical": "priority",
    "the hub's ServiceAccount": "account",
    "root": "root",
    "a privileged container": "privileged",
    "the hub's labels": "labels",
    "the proxy's labels": "labels",
    "a user server's labels": "labels",
    "the hub id label": "labels",
}


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_the_api_server_refuses_a_members_job(member_api, jobs_hub, attempt):
    message = refusal(member_api, job(jobs_hub.namespace, **ATTEMPTS[attempt]))
    assert f"{POLICY_PREFIX}jobs" in message  # the API server's admission said no
    assert MESSAGES[EXPECTED[attempt]] in message


def test_a_plain_job_with_the_shared_volume_read_only_is_admitted(member_api, jobs_hub):
    manifest = job(
        jobs_hub.namespace,
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "shared",
                "persistentVolumeClaim": {"claimName": SHARED_PVC, "readOnly": True},
            },
        ],
    )
    admitted = k8s.apply(member_api, manifest, dry_run=True)
    assert admitted["metadata"]["name"] == manifest["metadata"]["name"]


def test_the_policies_bind_only_the_jobs_account(kube_api, jobs_hub):
    """The portal (here the admin) still creates what it needs: the policies match requests of
    the namespace's jobs ServiceAccount only, never the hub's or the portal's."""
    manifest = job(jobs_hub.namespace, volumes=volume(secret={"secretName": SECRET_NAME}))
    assert k8s.apply(kube_api, manifest, dry_run=True)["kind"] == "Job"


def test_pods_a_member_could_create_are_held_to_the_same_rules(kube_api, member_api, jobs_hub):
    """Today the jobs role creates Jobs, not Pods; should a role ever let it create Pods, the
    same rules hold for them (the pods policy), not only for Jobs' templates."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    name = f"pods-{secrets.token_hex(3)}"
    rbac.create_namespaced_role(
        jobs_hub.namespace,
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "patch"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        jobs_hub.namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": JOBS_SERVICE_ACCOUNT,
                    "namespace": jobs_hub.namespace,
                }
            ],
        },
    )
    template = job(jobs_hub.namespace, volumes=volume(secret={"secretName": SECRET_NAME}))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": jobs_hub.namespace},
        "spec": template["spec"]["template"]["spec"],
    }
    # The authorizer sees the new binding through a cache: wait for it to let the call in.
    message = eventually(lambda: _admission_message(member_api, pod))
    assert f"{POLICY_PREFIX}pods" in message
    assert MESSAGES["volumes"] in message


def _admission_message(api, manifest) -> str:
    """The policies' refusal of `manifest`, or "" while it is admitted (not in force yet)."""
    try:
        k8s.apply(api, manifest, dry_run=True)
    except k8s.ClusterError as error:
        return error.message if POLICY_PREFIX in error.message else ""
    return ""
