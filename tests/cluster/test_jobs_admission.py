"""A hostile hub member with jobs access, talking to the API server directly with the `jobs`
ServiceAccount's own token: every Job that would reach the hub's secrets, another user's data,
the hub's Services or a node is refused by the API server (the authorizer for the hub's
namespace and for pods, the portal's ValidatingAdmissionPolicies of provisioning/admission.py
and Pod Security in the users' namespace), with its message; a plain job passes. The
namespace-wide rules hold for every requester, a cluster admin included."""

from __future__ import annotations

import copy
import dataclasses
import json
import secrets

import pytest
from kubernetes import client

from provisioning import k8s
from provisioning.admission import POLICY_PREFIX
from provisioning.hubconfig import HUB_DB_PVC, JOBS_SERVICE_ACCOUNT, SHARED_PVC
from provisioning.render import SECRET_NAME, RenderSettings
from provisioning.spec import ExternalVolume
from provisioning.sync import sync_hub
from tests.provisioning.examples import EXAMPLES
from tests.support import eventually

pytestmark = pytest.mark.cluster

GENOMES = ExternalVolume(
    "genomes", "nfs", "/mnt/genomes", read_only=True, server="nfs.example.org", path="/genomes"
)


@pytest.fixture(scope="module")
def jobs_hub(kube_api):
    """A hub with jobs access and an NFS export from the catalogue, applied as provisioning
    applies it."""
    spec = dataclasses.replace(
        EXAMPLES["gpu-research"],
        slug=f"jobs-{secrets.token_hex(3)}",
        hub_id=secrets.randbelow(10**9),
        external_volumes=(GENOMES,),
    )
    assert spec.jobs_access
    sync_hub(kube_api, spec, RenderSettings())
    yield spec
    for namespace in spec.namespaces:
        k8s.delete_namespace(kube_api, namespace)


@pytest.fixture(scope="module")
def member_api(kube_api, jobs_hub):
    """An API client that authenticates as the hub's jobs ServiceAccount, with a token the API
    server issued for it (what a member's server holds), not the admin's certificate."""
    core = client.CoreV1Api(kube_api)

    def token():
        return core.create_namespaced_service_account_token(
            JOBS_SERVICE_ACCOUNT,
            jobs_hub.users_namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        ).status.token

    configuration = copy.copy(kube_api.configuration)
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token()}"}
    api = client.ApiClient(configuration)
    # The API server loads new policies through a watch: wait until they are in force.
    bad = job(jobs_hub.users_namespace, volumes=volume(secret={"secretName": SECRET_NAME}))
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
    "a Secret in the environment": dict(
        containers=[
            {
                "name": "work",
                "image": "python:3.12",
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "proxy-token"}},
                    }
                ],
            }
        ]
    ),
    "the hub's database claim": dict(
        volumes=volume(persistentVolumeClaim={"claimName": HUB_DB_PVC})
    ),
    "another user's home": dict(volumes=volume(persistentVolumeClaim={"claimName": "home-bob"})),
    "the shared volume, writable": dict(
        volumes=volume(persistentVolumeClaim={"claimName": SHARED_PVC})
    ),
    "an ephemeral claim": dict(
        volumes=volume(
            ephemeral={
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    }
                }
            }
        )
    ),
    "any NFS export": dict(volumes=volume(nfs={"server": "10.0.0.5", "path": "/export/all"})),
    "the catalogue's NFS export, writable": dict(
        volumes=volume(nfs={"server": GENOMES.server, "path": GENOMES.path})
    ),
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
    "a user server's labels": dict(labels={"app.kubernetes.io/component": "singleuser-server"}),
    "KubeSpawner's username label": dict(labels={"hub.jupyter.org/username": "alice"}),
    "the hub id label": dict(labels={"hub-on-demand.io/hub-id": "1"}),
}

MESSAGES = {
    "volumes": "may mount only",
    "secret env": "no container reads a Secret",
    "node": "may not choose its node",
    "host": "may not use the node's network",
    "priority": "may not set a priority class",
    "account": "never as the hub's",
    "root": "must run as non-root",
    "privileged": "no container runs privileged",
    "labels": "may not carry the labels of the hub",
}
EXPECTED = {
    "the hub's Secret": "volumes",
    "the hub's Secret, projected": "volumes",
    "a Secret in the environment": "secret env",
    "the hub's database claim": "volumes",
    "another user's home": "volumes",
    "the shared volume, writable": "volumes",
    "an ephemeral claim": "volumes",
    "any NFS export": "volumes",
    "the catalogue's NFS export, writable": "volumes",
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
    "KubeSpawner's username label": "labels",
    "the hub id label": "labels",
}


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_the_api_server_refuses_a_members_job(member_api, jobs_hub, attempt):
    message = refusal(member_api, job(jobs_hub.users_namespace, **ATTEMPTS[attempt]))
    assert f"{POLICY_PREFIX}jobs" in message  # the API server's admission said no
    assert MESSAGES[EXPECTED[attempt]] in message


def test_a_plain_job_with_the_shared_volume_read_only_is_admitted(member_api, jobs_hub):
    manifest = job(
        jobs_hub.users_namespace,
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "shared",
                "persistentVolumeClaim": {"claimName": SHARED_PVC, "readOnly": True},
            },
            {
                "name": "genomes",
                "nfs": {"server": GENOMES.server, "path": GENOMES.path, "readOnly": True},
            },
        ],
    )
    admitted = k8s.apply(member_api, manifest, dry_run=True)
    assert admitted["metadata"]["name"] == manifest["metadata"]["name"]


def forbidden(call) -> str:
    with pytest.raises(client.ApiException) as refused:
        call()
    assert refused.value.status == 403
    return json.loads(refused.value.body)["message"]


def test_a_member_reads_no_pod_and_nothing_of_the_hubs_namespace(member_api, jobs_hub):
    """No user token where another member can read it: a user server's pod spec holds its
    user's hub token, and the jobs role reads no pods; the hub's namespace is out of reach."""
    core, batch = client.CoreV1Api(member_api), client.BatchV1Api(member_api)
    assert 'cannot list resource "pods"' in forbidden(
        lambda: core.list_namespaced_pod(jobs_hub.users_namespace)
    )
    assert 'cannot get resource "pods"' in forbidden(
        lambda: core.read_namespaced_pod("jupyter-alice", jobs_hub.users_namespace)
    )
    forbidden(lambda: core.read_namespaced_secret(SECRET_NAME, jobs_hub.namespace))
    forbidden(lambda: core.list_namespaced_pod(jobs_hub.namespace))
    forbidden(lambda: batch.list_namespaced_job(jobs_hub.namespace))
    forbidden(
        lambda: core.create_namespaced_service(
            jobs_hub.users_namespace, {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}}
        )
    )
    # Its own Jobs it does see.
    assert batch.list_namespaced_job(jobs_hub.users_namespace).items == []


def restricted_pod(namespace: str, **pod_spec) -> dict:
    """A pod as KubeSpawner makes it: Pod Security "restricted" passes."""
    container = {
        "name": "notebook",
        "image": "quay.io/jupyter/base-notebook",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"jupyter-{secrets.token_hex(3)}", "namespace": namespace},
        "spec": {"containers": [container], **pod_spec},
    }


def test_the_namespace_rules_hold_for_everyone_even_a_cluster_admin(kube_api, jobs_hub):
    """The hub (here the admin) starts a user server with that user's home and the shared
    volume writable; nobody, not even a cluster admin, mounts a Secret or a foreign claim in the
    users' namespace or runs a pod that Pod Security "restricted" refuses."""
    home = {"name": "home", "persistentVolumeClaim": {"claimName": "home-alice"}}
    shared = {"name": "shared", "persistentVolumeClaim": {"claimName": SHARED_PVC}}
    server = restricted_pod(jobs_hub.users_namespace, volumes=[home, shared])
    assert k8s.apply(kube_api, server, dry_run=True)["kind"] == "Pod"

    secret = restricted_pod(
        jobs_hub.users_namespace, volumes=volume(secret={"secretName": SECRET_NAME})
    )
    message = refusal(kube_api, secret)
    assert f"{POLICY_PREFIX}pods" in message and MESSAGES["volumes"] in message
    database = restricted_pod(
        jobs_hub.users_namespace, volumes=volume(persistentVolumeClaim={"claimName": HUB_DB_PVC})
    )
    assert MESSAGES["volumes"] in refusal(kube_api, database)

    # Pod Security: this hub mounts an NFS export, which "restricted" does not allow, so its
    # users' namespace enforces "baseline" (hubs without one enforce "restricted": see
    # tests/cluster/test_provisioning.py), which refuses added capabilities.
    labels = k8s.get(kube_api, "Namespace", jobs_hub.users_namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    powerful = restricted_pod(jobs_hub.users_namespace)
    powerful["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_ADMIN"]}}
    assert 'violates PodSecurity "baseline' in refusal(kube_api, powerful)


def test_pods_a_member_could_create_are_held_to_the_same_rules(kube_api, member_api, jobs_hub):
    """Today the jobs role creates Jobs, not Pods; should a role ever let it create Pods, the
    same rules hold for them (the pods policy), not only for Jobs' templates."""
    rbac = client.RbacAuthorizationV1Api(kube_api)
    name = f"pods-{secrets.token_hex(3)}"
    rbac.create_namespaced_role(
        jobs_hub.users_namespace,
        {
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "patch"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        jobs_hub.users_namespace,
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": JOBS_SERVICE_ACCOUNT,
                    "namespace": jobs_hub.users_namespace,
                }
            ],
        },
    )
    pod = restricted_pod(
        jobs_hub.users_namespace,
        volumes=volume(persistentVolumeClaim={"claimName": "home-bob"}),
    )
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
