"""A hostile hub member with jobs access, talking to the API server directly with the token of
their own jobs ServiceAccount (what their server holds): every Job that would reach the hub's
secrets, another user's data, the hub's Services or a node is refused by the API server (the
authorizer, the portal's ValidatingAdmissionPolicies of provisioning/admission.py and Pod
Security), with its message; a plain job passes. Another member with Jobs neither sees nor
deletes it: each user's Jobs run in a namespace of their own. The users' namespace's rules hold
for every requester, a cluster admin included."""

from __future__ import annotations

import copy
import dataclasses
import json
import secrets

import pytest
from kubernetes import client

from provisioning import k8s
from provisioning.admission import POLICY_PREFIX
from provisioning.hubconfig import HUB_DB_PVC, SHARED_PVC
from provisioning.render import ADMISSION_PARAMS, QUOTA_NAME, SECRET_NAME, RenderSettings
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
    """A hub with jobs access (for its owner and its co-owner) and an NFS export from the
    catalogue, applied as provisioning applies it."""
    spec = dataclasses.replace(
        EXAMPLES["gpu-research"],
        slug=f"jobs-{secrets.token_hex(3)}",
        hub_id=secrets.randbelow(10**9),
        external_volumes=(GENOMES,),
    )
    assert spec.jobs_access and len(spec.jobs_users) == 2
    sync_hub(kube_api, spec, RenderSettings())
    yield spec
    for namespace in spec.namespaces:
        k8s.delete_namespace(kube_api, namespace)


def user_api(kube_api, spec, user: str) -> client.ApiClient:
    """An API client that authenticates as a user's jobs ServiceAccount, with a token the API
    server issued for it (what that user's server holds), not the admin's certificate."""
    core = client.CoreV1Api(kube_api)
    token = core.create_namespaced_service_account_token(
        spec.jobs_account(user),
        spec.users_namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    ).status.token
    configuration = copy.copy(kube_api.configuration)
    configuration.cert_file = configuration.key_file = None
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


@pytest.fixture(scope="module")
def member(jobs_hub) -> str:
    return jobs_hub.jobs_users[1]  # the co-owner


@pytest.fixture(scope="module")
def member_api(kube_api, jobs_hub, member):
    api = user_api(kube_api, jobs_hub, member)
    # The API server loads new policies through a watch: wait until they are in force.
    bad = job(jobs_hub.jobs_namespace(member), volumes=volume(secret={"secretName": SECRET_NAME}))
    eventually(lambda: _admission_message(api, bad))
    yield api
    api.close()


@pytest.fixture(scope="module")
def own(jobs_hub, member) -> str:
    """The member's own jobs namespace."""
    return jobs_hub.jobs_namespace(member)


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
    "the shared volume, read-only": dict(
        volumes=volume(persistentVolumeClaim={"claimName": SHARED_PVC, "readOnly": True})
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
    "another user's jobs ServiceAccount": dict(serviceAccountName="jobs-0123456789"),
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
    "the shared volume, read-only": "volumes",
    "an ephemeral claim": "volumes",
    "any NFS export": "volumes",
    "the catalogue's NFS export, writable": "volumes",
    "a host path": "volumes",
    "a node by name": "node",
    "the node's network": "host",
    "system-node-critical": "priority",
    "the hub's ServiceAccount": "account",
    "another user's jobs ServiceAccount": "account",
    "root": "root",
    "a privileged container": "privileged",
    "the hub's labels": "labels",
    "the proxy's labels": "labels",
    "a user server's labels": "labels",
    "KubeSpawner's username label": "labels",
    "the hub id label": "labels",
}


@pytest.mark.parametrize("attempt", sorted(ATTEMPTS))
def test_the_api_server_refuses_a_members_job(member_api, own, attempt):
    message = refusal(member_api, job(own, **ATTEMPTS[attempt]))
    assert f"{POLICY_PREFIX}jobs" in message  # the API server's admission said no
    assert MESSAGES[EXPECTED[attempt]] in message


def test_a_plain_job_with_the_catalogues_nfs_export_read_only_is_admitted(member_api, own):
    manifest = job(
        own,
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "genomes",
                "nfs": {"server": GENOMES.server, "path": GENOMES.path, "readOnly": True},
            },
        ],
    )
    admitted = k8s.apply(member_api, manifest, dry_run=True)
    assert admitted["metadata"]["name"] == manifest["metadata"]["name"]


def forbidden(call) -> str:
    """The authorizer's refusal of a call (through the client or provisioning.k8s)."""
    with pytest.raises((client.ApiException, k8s.ClusterError)) as refused:
        call()
    assert refused.value.status == 403
    if isinstance(refused.value, k8s.ClusterError):
        return refused.value.message
    return json.loads(refused.value.body)["message"]


def test_members_see_and_delete_only_their_own_jobs(kube_api, jobs_hub, member_api, member, own):
    """The owner's Job runs in the owner's jobs namespace; the co-owner, with Jobs of their
    own, can neither list, read, change nor delete it, nor read its pods or logs."""
    owner = jobs_hub.jobs_users[0]
    owner_api = user_api(kube_api, jobs_hub, owner)
    theirs = jobs_hub.jobs_namespace(owner)
    created = k8s.apply(owner_api, job(theirs))
    name = created["metadata"]["name"]
    owner_batch, batch = client.BatchV1Api(owner_api), client.BatchV1Api(member_api)
    core = client.CoreV1Api(member_api)
    assert [j.metadata.name for j in owner_batch.list_namespaced_job(theirs).items] == [name]
    client.CoreV1Api(owner_api).list_namespaced_pod(theirs)  # their own job's pods: readable

    assert 'cannot list resource "jobs"' in forbidden(lambda: batch.list_namespaced_job(theirs))
    forbidden(lambda: batch.read_namespaced_job(name, theirs))
    forbidden(lambda: batch.delete_namespaced_job(name, theirs))
    forbidden(lambda: batch.patch_namespaced_job(name, theirs, {"spec": {"suspend": True}}))
    forbidden(lambda: core.list_namespaced_pod(theirs))
    forbidden(lambda: core.read_namespaced_pod_log("any", theirs))
    forbidden(lambda: k8s.apply(member_api, job(theirs)))
    # Still there, untouched.
    assert owner_batch.read_namespaced_job(name, theirs).spec.suspend in (None, False)
    owner_api.close()
    # Their own namespace is empty for them: they see only what they made.
    assert batch.list_namespaced_job(own).items == []


def test_a_member_reads_no_pod_and_nothing_of_the_hubs_namespace(member_api, jobs_hub, own):
    """No user token where another member can read it: a user server's pod spec holds its
    user's hub token, and no user's account reads pods in the users' namespace; the hub's
    namespace is out of reach, and so is what the portal wrote into the member's own."""
    core, batch = client.CoreV1Api(member_api), client.BatchV1Api(member_api)
    users = jobs_hub.users_namespace
    assert 'cannot list resource "pods"' in forbidden(lambda: core.list_namespaced_pod(users))
    assert 'cannot get resource "pods"' in forbidden(
        lambda: core.read_namespaced_pod("jupyter-alice", users)
    )
    forbidden(lambda: batch.list_namespaced_job(users))
    forbidden(lambda: k8s.apply(member_api, job(users)))
    forbidden(lambda: core.read_namespaced_secret(SECRET_NAME, jobs_hub.namespace))
    forbidden(lambda: core.list_namespaced_pod(jobs_hub.namespace))
    forbidden(lambda: batch.list_namespaced_job(jobs_hub.namespace))
    forbidden(
        lambda: core.create_namespaced_service(
            own, {"metadata": {"name": "x"}, "spec": {"ports": [{"port": 1}]}}
        )
    )
    # Pods only through Jobs, and the namespace's admission and quota are the portal's.
    forbidden(lambda: k8s.apply(member_api, restricted_pod(own)))
    forbidden(lambda: core.patch_namespaced_config_map(ADMISSION_PARAMS, own, {"data": {}}))
    forbidden(lambda: core.delete_namespaced_resource_quota(QUOTA_NAME, own))


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


def test_every_pod_in_a_jobs_namespace_is_held_to_the_members_rules(kube_api, own):
    """Pods the Job controller makes, or anyone else: in a jobs namespace even a cluster
    admin's pod may not mount a claim, run as root or carry a user server's labels."""
    home = restricted_pod(own, volumes=volume(persistentVolumeClaim={"claimName": "home-bob"}))
    message = refusal(kube_api, home)
    assert f"{POLICY_PREFIX}pods" in message and MESSAGES["volumes"] in message
    root = restricted_pod(own)
    del root["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    assert MESSAGES["root"] in refusal(kube_api, root)
    server = restricted_pod(own)
    server["metadata"]["labels"] = {"app.kubernetes.io/component": "singleuser-server"}
    assert MESSAGES["labels"] in refusal(kube_api, server)


def test_a_user_who_loses_jobs_loses_their_jobs_namespace(kube_api, jobs_hub, member):
    """Taking the jobs role away (here: the co-owner leaves) deletes that user's jobs
    namespace and account at the next sync; the owner's stays."""
    spec = dataclasses.replace(
        jobs_hub, slug=f"jobs-{secrets.token_hex(3)}", hub_id=secrets.randbelow(10**9)
    )
    sync_hub(kube_api, spec, RenderSettings())
    leaving = spec.jobs_namespace(member)
    fewer = dataclasses.replace(spec, co_owners=())
    result = sync_hub(kube_api, fewer, RenderSettings())
    try:
        assert f"Namespace {leaving}" in result.pruned
        assert f"ServiceAccount {spec.jobs_account(member)} (in {spec.users_namespace})" in (
            result.pruned
        )
        assert k8s.get(kube_api, "Namespace", leaving)["metadata"].get("deletionTimestamp")
        (kept,) = fewer.jobs_namespaces
        assert k8s.get(kube_api, "Namespace", kept)["metadata"].get("deletionTimestamp") is None
    finally:
        for namespace in spec.namespaces:
            k8s.delete_namespace(kube_api, namespace)


def _admission_message(api, manifest) -> str:
    """The policies' refusal of `manifest`, or "" while it is admitted (not in force yet)."""
    try:
        k8s.apply(api, manifest, dry_run=True)
    except k8s.ClusterError as error:
        return error.message if POLICY_PREFIX in error.message else ""
    return ""
