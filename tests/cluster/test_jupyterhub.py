"""A real JupyterHub with KubeSpawner, configured by the shipped `jupyterhub_config.py`,
starting user servers in a hub namespace of the local control plane.

Each hub runs as a `jupyterhub` process on this machine with the static config and the hub's
values, plus the smallest override that running outside the cluster needs: the hub binds to
127.0.0.1 and starts its own configurable-http-proxy (from node_modules), KubeSpawner reaches
the cluster through KUBECONFIG, a DummyAuthenticator replaces the OIDC login (except in the
login test, where the shipped GenericOAuthenticator logs in at the test OIDC provider with the
client the portal registered), and a test service holds an admin token for the REST API.

What is NOT real here: the simulated (kwok) nodes run no containers, so a user server never
becomes reachable and a spawn never completes. The tests stop at the pod: they check the pod
that KubeSpawner created (admitted by the namespace's ResourceQuota and Pod Security level,
scheduled on a matching node), then stop the server through the API.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from kubernetes import client
from kubernetes.utils import parse_quantity

from provisioning import hubconfig, k8s, render
from provisioning.admission import users_admission
from provisioning.hubconfig import CONFIG_FILE, HubOAuthClient, hub_values, members_values
from provisioning.spec import (
    ExternalVolume,
    GpuRequest,
    GroupGrantSpec,
    HubSpec,
    ImageChoice,
    ServerOption,
    TierSpec,
)
from tests.oidc_provider import harness
from tests.sso_support import PASSWORD as SSO_PASSWORD
from tests.support import delete_namespaces, eventually, free_port

pytestmark = pytest.mark.cluster

REPO_ROOT = Path(__file__).resolve().parents[2]
CHP = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
OAUTH = HubOAuthClient(
    authorize_url="https://sso.example.org/authorize",
    token_url="https://sso.example.org/token",
    userdata_url="https://sso.example.org/userinfo",
    client_id="hub-test",
)
PASSWORD = "not-a-real-login"
OWNER, CO_OWNER, MEMBER = "ada@uni.example", "grace@uni.example", "alan@uni.example"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"

LAB = ImageChoice("scipy", "SciPy", "quay.io/jupyter/scipy-notebook:2025-01-06")
RSTUDIO = ImageChoice(
    "rstudio", "RStudio", "ghcr.io/rocker/binder:4.4", interface="rstudio", default_url="/rstudio"
)


OVERRIDE = """\
# Running outside the cluster: the smallest change to the shipped config.
load_subconfig({static!r})
c.JupyterHub.hub_bind_url = {hub_url!r}
c.JupyterHub.hub_connect_url = {hub_url!r}
c.JupyterHub.bind_url = {public_url!r}
c.JupyterHub.public_url = {public_url!r}
c.ConfigurableHTTPProxy.should_start = True
c.ConfigurableHTTPProxy.api_url = {proxy_api_url!r}
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = {db_url!r}
{login}
c.KubeSpawner.start_timeout = 60
c.JupyterHub.services = [*c.JupyterHub.services, {{"name": "test-admin", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {{
        "name": "test-admin",
        "scopes": ["admin:users", "admin:servers", "read:hub"],
        "services": ["test-admin"],
    }},
]
"""
# The DummyAuthenticator in place of the OIDC login, still limited to the members file.
DUMMY_LOGIN = """\
from jupyterhub.auth import DummyAuthenticator
c.JupyterHub.authenticator_class = type(
    "LocalAuthenticator", (c.JupyterHub.authenticator_class.members_mixin, DummyAuthenticator), {{}}
)
c.DummyAuthenticator.password = {password!r}
"""
# The shipped OIDC login; only the callback is this machine's address instead of the hub's host.
OIDC_LOGIN = "c.GenericOAuthenticator.oauth_callback_url = {callback!r}\n"


@dataclass(frozen=True)
class HubLogin:
    """The hub's own client at the identity provider, for the shipped OIDC login."""

    oauth: HubOAuthClient
    client_secret: str


@dataclass
class RunningHub:
    """A jupyterhub process for one hub spec, and how to talk to it."""

    spec: HubSpec
    api_url: str
    admin_token: str
    portal_token: str
    log_path: Path
    process: subprocess.Popen
    public_url: str = ""
    members_file: Path | None = None

    def write_members(self, spec: HubSpec) -> None:
        """Replace the members file the way the kubelet refreshes a ConfigMap: a new file
        swapped in at once, while the hub runs."""
        fresh = self.members_file.with_suffix(".new")
        fresh.write_text(json.dumps(members_values(spec), indent=2, sort_keys=True))
        os.replace(fresh, self.members_file)

    def api(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"token {token or self.admin_token}"}
        kwargs.setdefault("timeout", 30)
        return requests.request(method, self.api_url + path, headers=headers, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_hub(
    spec: HubSpec,
    workdir: Path,
    kubeconfig: Path,
    login: HubLogin | None = None,
    public_url: str = "",
) -> RunningHub:
    """Start the hub with the DummyAuthenticator, or with the shipped OIDC login when `login`
    gives its client (registered for `public_url`)."""
    if not CHP.exists():
        pytest.fail(f"{CHP} is missing: run `npm ci` in the repository root (make install)")
    workdir.mkdir(parents=True, exist_ok=True)
    values_file = workdir / "values.json"
    oauth = login.oauth if login else OAUTH
    values_file.write_text(json.dumps(hub_values(spec, oauth), indent=2, sort_keys=True))
    members_file = workdir / "members.json"
    members_file.write_text(json.dumps(members_values(spec), indent=2, sort_keys=True))
    hub_url = f"http://127.0.0.1:{free_port()}"
    public_url = public_url or f"http://127.0.0.1:{free_port()}/"
    admin_token, portal_token = secrets.token_hex(32), secrets.token_hex(32)
    override = workdir / "jupyterhub_config_local.py"
    override.write_text(
        OVERRIDE.format(
            static=str(CONFIG_FILE),
            hub_url=hub_url,
            public_url=public_url,
            proxy_api_url=f"http://127.0.0.1:{free_port()}",
            chp=str(CHP),
            db_url=f"sqlite:///{workdir / 'jupyterhub.sqlite'}",
            login=(
                OIDC_LOGIN.format(callback=public_url + "hub/oauth_callback")
                if login
                else DUMMY_LOGIN.format(password=PASSWORD)
            ),
            token=admin_token,
        )
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),  # read by kubernetes_asyncio inside KubeSpawner
        hubconfig.VALUES_FILE_ENV: str(values_file),
        hubconfig.MEMBERS_FILE_ENV: str(members_file),
        hubconfig.ENV_COOKIE_SECRET: secrets.token_hex(32),
        hubconfig.ENV_PROXY_AUTH_TOKEN: secrets.token_hex(32),
        hubconfig.ENV_CRYPT_KEY: secrets.token_hex(32),
        hubconfig.ENV_OAUTH_CLIENT_SECRET: (
            login.client_secret if login else "unused-with-the-dummy-authenticator"
        ),
        hubconfig.ENV_PORTAL_SERVICE_TOKEN: portal_token,
    }
    log_path = workdir / "jupyterhub.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "--config", str(override)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    hub = RunningHub(
        spec, f"{hub_url}/hub/api", admin_token, portal_token, log_path, process, public_url
    )
    hub.members_file = members_file

    def answers():
        if process.poll() is not None:
            pytest.fail(f"jupyterhub exited with {process.returncode}:\n{hub.log()[-6000:]}")
        try:
            return hub.api("GET", "/info").status_code == 200
        except requests.ConnectionError:
            return False

    eventually(answers, timeout=60)
    return hub


def stop_hub(hub: RunningHub) -> None:
    hub.process.send_signal(signal.SIGTERM)
    try:
        hub.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(hub.process.pid, signal.SIGKILL)
        hub.process.wait()
    print(f"---- {hub.log_path} (last lines) ----\n{hub.log()[-4000:]}")


def prepare_namespace(kube_api, spec: HubSpec) -> None:
    """What provisioning applies before the hub starts, except the hub itself (it runs on
    this machine): the namespaces, the admission policies and their params, quotas, limits,
    the jobs accounts and roles, and the claims of the users' namespace."""
    where_users_run = {spec.users_namespace, *spec.jobs_namespaces}
    for manifest in [
        *users_admission(),
        *(
            m
            for m in render.render_hub(spec)
            if m["kind"] == "Namespace" or m["metadata"].get("namespace") in where_users_run
        ),
    ]:
        k8s.apply(kube_api, manifest)
    core = client.CoreV1Api(kube_api)
    # Pods need the namespace's default ServiceAccount, made by the controller manager.
    eventually(
        lambda: core.list_namespaced_service_account(
            spec.users_namespace, field_selector="metadata.name=default"
        ).items,
        timeout=30,
    )


@pytest.fixture(scope="module")
def course_hub(kube_api, kubeconfig_path, tmp_path_factory) -> Iterator[RunningHub]:
    """A CPU-only course: two sizes, two images and custom images from two registries,
    two notebooks per user, a read-only shared volume, read-only NFS data and a writable
    external PVC."""
    spec = HubSpec(
        hub_id=secrets.randbelow(10**6),
        slug=f"jh{secrets.token_hex(3)}",
        owner=OWNER,
        hubs_domain="hubs.localhost",
        expected_users=3,
        notebooks_per_user=2,
        server_options=(
            ServerOption("small", "Small", 0.5, 1, 1, 2),
            ServerOption("large", "Large", 1, 2, 2, 4),
        ),
        images=(LAB, RSTUDIO),
        custom_image="ghcr.io/lab/analysis:1.2",
        allowed_registries=("quay.io", "ghcr.io"),
        home_size_gib=1,
        shared_size_gib=2,
        shared_mode="ro",
        external_volumes=(
            ExternalVolume("survey", "nfs", "/mnt/survey", True, server="nfs.example", path="/s"),
            ExternalVolume("scratch", "pvc", "/mnt/scratch", False),
        ),
        idle_timeout_minutes=30,
        co_owners=(CO_OWNER,),
        members=(MEMBER,),
    )
    prepare_namespace(kube_api, spec)
    hub = start_hub(spec, tmp_path_factory.mktemp("course-hub"), kubeconfig_path)
    yield hub
    stop_hub(hub)
    delete_namespaces(kube_api, spec)


@pytest.fixture(scope="module")
def gpu_hub(kube_api, kubeconfig_path, tmp_path_factory) -> Iterator[RunningHub]:
    """A research group: two users expected, one server each with an H100 GPU, jobs access,
    a writable shared volume, wiping the home allowed.

    One GPU per server keeps this module's share of the simulated H100 node small while other
    test modules (pytest-xdist workers) use it too."""
    spec = HubSpec(
        hub_id=secrets.randbelow(10**6),
        slug=f"jh{secrets.token_hex(3)}",
        owner=OWNER,
        hubs_domain="hubs.localhost",
        expected_users=2,
        server_options=(ServerOption("h100", "H100 server", 2, 4, 8, 16),),
        gpu=GpuRequest("nvidia.com/gpu", "NVIDIA-H100-80GB-HBM3", 1, display_name="H100"),
        images=(LAB,),
        home_size_gib=1,
        wipe_home_allowed=True,
        shared_size_gib=2,
        shared_mode="rw",
        idle_timeout_minutes=120,
        jobs_access=True,
        co_owners=(CO_OWNER,),
        members=(MEMBER,),
    )
    prepare_namespace(kube_api, spec)
    hub = start_hub(spec, tmp_path_factory.mktemp("gpu-hub"), kubeconfig_path)
    yield hub
    stop_hub(hub)
    delete_namespaces(kube_api, spec)


# --- helpers ---------------------------------------------------------------------------------


def server_path(user: str, server: str = "") -> str:
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


def start_server(hub: RunningHub, user: str, options: dict, server: str = ""):
    response = hub.api("POST", server_path(user, server), json=options)
    assert response.status_code in (201, 202), response.text
    return response


def server_pod(kube_api, hub: RunningHub, user: str, server: str = "") -> client.V1Pod | None:
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        hub.spec.users_namespace, label_selector="component=singleuser-server"
    )
    for pod in pods.items:
        annotations = pod.metadata.annotations or {}
        if (
            annotations.get("hub.jupyter.org/username") == user
            and annotations.get("hub.jupyter.org/servername", "") == server
            and not pod.metadata.deletion_timestamp
        ):
            return pod
    return None


def scheduled_pod(kube_api, hub: RunningHub, user: str, server: str = "") -> client.V1Pod:
    """The server's pod once the scheduler placed it and the simulated kubelet runs it."""

    def placed():
        pod = server_pod(kube_api, hub, user, server)
        return pod if pod and pod.spec.node_name and pod.status.phase == "Running" else None

    return eventually(placed, timeout=60)


def stop_server(kube_api, hub: RunningHub, user: str, server: str = "") -> None:
    """Stop the server (its spawn is still pending: the pod never answers) and wait until
    its pod is gone, so that it no longer counts against the quota."""
    response = hub.api("DELETE", server_path(user, server))
    assert response.status_code in (202, 204), response.text
    eventually(lambda: server_pod(kube_api, hub, user, server) is None, timeout=60)
    eventually(lambda: server not in hub.api("GET", f"/users/{user}").json()["servers"], timeout=60)


def container(pod: client.V1Pod) -> client.V1Container:
    (notebook,) = [c for c in pod.spec.containers if c.name == "notebook"]
    return notebook


def quantities(resources: dict[str, str] | None) -> dict[str, object]:
    """CPU, memory and extended resources as KubeSpawner set them (scratch space comes from
    the users' namespace's LimitRange: see test_cpu_profile_starts_a_pod_as_requested)."""
    return {
        name: parse_quantity(value)
        for name, value in (resources or {}).items()
        if name != "ephemeral-storage"
    }


def node_labels(kube_api, name: str) -> dict[str, str]:
    return client.CoreV1Api(kube_api).read_node(name).metadata.labels


def restricted_warnings(kube_api, pod: client.V1Pod) -> list[str]:
    """What Pod Security "restricted" (the namespace's warn level) says about this pod's spec:
    the same spec is created again as a server-side dry run and the warnings are read."""
    body = kube_api.sanitize_for_serialization(pod)
    body["metadata"] = {"name": pod.metadata.name + "-check", "namespace": pod.metadata.namespace}
    body.pop("status", None)
    body["spec"].pop("nodeName", None)
    _, _, headers = client.CoreV1Api(kube_api).create_namespaced_pod_with_http_info(
        pod.metadata.namespace, body, dry_run="All"
    )
    warnings = [w.replace('\\"', '"') for w in headers.getlist("Warning")]
    return [w for w in warnings if "restricted" in w]


def mounts(pod: client.V1Pod) -> dict[str, tuple[str, bool]]:
    return {m.name: (m.mount_path, bool(m.read_only)) for m in container(pod).volume_mounts}


# --- the course hub (CPU) --------------------------------------------------------------------


def test_cpu_profile_starts_a_pod_as_requested(kube_api, course_hub):
    start_server(course_hub, MEMBER, {"profile": "small", "image": "rstudio"})
    try:
        pod = scheduled_pod(kube_api, course_hub, MEMBER)
        notebook = container(pod)

        assert notebook.image == RSTUDIO.reference
        assert quantities(notebook.resources.requests) == {
            "cpu": parse_quantity("500m"),
            "memory": parse_quantity("1Gi"),
        }
        assert quantities(notebook.resources.limits) == {
            "cpu": parse_quantity("1"),
            "memory": parse_quantity("2Gi"),
        }
        # In the users' namespace, with scratch space from its LimitRange (the quota counts it).
        assert pod.metadata.namespace == course_hub.spec.users_namespace
        assert parse_quantity(notebook.resources.limits["ephemeral-storage"]) == parse_quantity(
            "10Gi"
        )
        env = {e.name: e.value for e in notebook.env}
        assert env["JUPYTERHUB_DEFAULT_URL"] == "/rstudio"
        # Placed on a CPU node: GPU nodes are tainted and this pod neither tolerates nor
        # selects them.
        assert GPU_PRODUCT_LABEL not in node_labels(kube_api, pod.spec.node_name)
        assert not pod.spec.node_selector

        volumes = {v.name: v for v in pod.spec.volumes}
        home = volumes["home"].persistent_volume_claim.claim_name
        assert home.startswith("home-alan")
        assert volumes["shared"].persistent_volume_claim.claim_name == "shared"
        assert volumes["shared"].persistent_volume_claim.read_only is True
        assert volumes["ext-survey"].nfs.server == "nfs.example"
        assert volumes["ext-survey"].nfs.read_only is True
        assert volumes["ext-scratch"].persistent_volume_claim.claim_name == "ext-scratch"
        assert mounts(pod) == {
            "home": ("/home/jovyan", False),
            "shared": ("/home/jovyan/shared", True),
            "ext-survey": ("/mnt/survey", True),
            "ext-scratch": ("/mnt/scratch", False),
        }
        # KubeSpawner made the user's home PVC, of the hub's home size.
        claim = client.CoreV1Api(kube_api).read_namespaced_persistent_volume_claim(
            home, course_hub.spec.users_namespace
        )
        assert claim.spec.resources.requests["storage"] == "1Gi"

        # No Kubernetes API access without jobs access.
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.service_account_name in (None, "default")
        # Admitted under the namespace's Pod Security level; the security context is
        # restricted-friendly.
        # (baseline: the hub mounts an NFS export, which "restricted" does not allow).
        namespace = client.CoreV1Api(kube_api).read_namespace(course_hub.spec.users_namespace)
        assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.security_context.fs_group == 100
        assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
        assert notebook.security_context.run_as_user == 1000
        assert notebook.security_context.allow_privilege_escalation is False
        assert notebook.security_context.capabilities.drop == ["ALL"]
        # Under "restricted" only the inline NFS volume would be refused.
        (warning,) = restricted_warnings(kube_api, pod)
        assert warning.endswith(
            'restricted volume types (volume "ext-survey" uses restricted volume type "nfs")"'
        )
    finally:
        stop_server(kube_api, course_hub, MEMBER)


def test_custom_image_from_an_allowed_registry(kube_api, course_hub):
    reference = "quay.io/jupyter/r-notebook:2025-01-06"
    start_server(course_hub, CO_OWNER, {"profile": "large", "image--unlisted-choice": reference})
    try:
        pod = scheduled_pod(kube_api, course_hub, CO_OWNER)
        assert container(pod).image == reference
        assert quantities(container(pod).resources.limits) == {
            "cpu": parse_quantity("2"),
            "memory": parse_quantity("4Gi"),
        }
    finally:
        stop_server(kube_api, course_hub, CO_OWNER)


def test_image_from_another_registry_is_refused(kube_api, course_hub):
    response = course_hub.api(
        "POST",
        server_path(OWNER),
        json={"profile": "small", "image--unlisted-choice": "quay.io.evil.com/x:1"},
    )

    assert response.status_code >= 400, response.text
    assert "failed validation regex" in response.text + course_hub.log()
    assert server_pod(kube_api, course_hub, OWNER) is None


def test_portal_token_reads_but_cannot_start_servers(course_hub):
    users = course_hub.api("GET", "/users", token=course_hub.portal_token)
    assert users.status_code == 200
    assert {u["name"] for u in users.json()} == {OWNER, CO_OWNER, MEMBER}
    admins = {u["name"] for u in users.json() if u["admin"]}
    assert admins == {OWNER, CO_OWNER}

    refused = course_hub.api("POST", server_path(MEMBER), token=course_hub.portal_token)
    assert refused.status_code == 403


def test_two_notebooks_per_user_share_the_home(kube_api, course_hub):
    """Named servers: a user's second notebook is a named server on the same home volume;
    a third one is refused."""
    start_server(course_hub, MEMBER, {"profile": "small"})
    start_server(course_hub, MEMBER, {"profile": "small"}, server="second")
    try:
        first = scheduled_pod(kube_api, course_hub, MEMBER)
        second = scheduled_pod(kube_api, course_hub, MEMBER, "second")
        assert first.metadata.name != second.metadata.name

        def home(pod):
            (volume,) = [v for v in pod.spec.volumes if v.name == "home"]
            return volume.persistent_volume_claim.claim_name

        assert home(first) == home(second)

        third = course_hub.api("POST", server_path(MEMBER, "third"), json={"profile": "small"})
        assert third.status_code == 400
        assert "already has the maximum of 1 named servers" in third.text
    finally:
        stop_server(kube_api, course_hub, MEMBER, "second")
        stop_server(kube_api, course_hub, MEMBER)


# --- the research group hub (GPU) ------------------------------------------------------------


def test_gpu_profile_with_jobs_access_and_wipe(kube_api, gpu_hub):
    start_server(gpu_hub, OWNER, {"profile": "h100", "image": "scipy", "wipe_home": "wipe"})
    try:
        pod = scheduled_pod(kube_api, gpu_hub, OWNER)
        notebook = container(pod)

        assert notebook.image == LAB.reference
        assert quantities(notebook.resources.limits) == {
            "cpu": parse_quantity("4"),
            "memory": parse_quantity("16Gi"),
            "nvidia.com/gpu": parse_quantity("1"),
        }
        assert quantities(notebook.resources.requests)["nvidia.com/gpu"] == 1
        assert pod.spec.node_selector == {GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
        assert any(
            t.key == "nvidia.com/gpu" and t.operator == "Exists" and t.effect == "NoSchedule"
            for t in pod.spec.tolerations
        )
        labels = node_labels(kube_api, pod.spec.node_name)
        assert labels[GPU_PRODUCT_LABEL] == "NVIDIA-H100-80GB-HBM3"

        # Jobs access: the owner's own jobs ServiceAccount, with its token mounted, and the
        # owner's jobs namespace in the environment.
        assert pod.spec.service_account_name == gpu_hub.spec.jobs_account(OWNER)
        env = {e.name: e.value for e in container(pod).env}
        assert env["JOBS_NAMESPACE"] == gpu_hub.spec.jobs_namespace(OWNER)
        assert pod.spec.automount_service_account_token is True
        assert "/var/run/secrets/kubernetes.io/serviceaccount" in {
            path for path, _ in mounts(pod).values()
        }
        assert mounts(pod)["shared"] == ("/home/jovyan/shared", False)

        # "Wipe my home directory on start": an init container empties the home volume.
        (wipe,) = pod.spec.init_containers
        assert wipe.name == "wipe-home"
        assert wipe.image == LAB.reference
        assert wipe.command == ["find", "/wipe/home", "-mindepth", "1", "-delete"]
        assert [(m.name, m.mount_path) for m in wipe.volume_mounts if m.name == "home"] == [
            ("home", "/wipe/home")
        ]
        # The same resources as the server: the pod needs no more quota for it.
        assert quantities(wipe.resources.limits) == {
            "cpu": parse_quantity("4"),
            "memory": parse_quantity("16Gi"),
        }
        assert quantities(wipe.resources.requests) == {
            "cpu": parse_quantity("2"),
            "memory": parse_quantity("8Gi"),
        }
        # Nothing in this pod (no NFS) that Pod Security "restricted" would refuse.
        assert restricted_warnings(kube_api, pod) == []

        # Admitted by the quota, and counted against it.
        def gpus_used():
            quota = client.CoreV1Api(kube_api).read_namespaced_resource_quota(
                "hub-quota", gpu_hub.spec.users_namespace
            )
            return (quota.status.used or {}).get("requests.nvidia.com/gpu")

        # Admission counts the pod at once. Under load KubeSpawner's create can time out on
        # its side and be sent again: the second one is refused as AlreadyExists, but admission
        # has already added the pod once more (kubernetes/kubernetes#76787), and that count
        # stays until the quota controller recounts (every 15 s in the local cluster).
        eventually(gpus_used, equals="1", timeout=120)
    finally:
        stop_server(kube_api, gpu_hub, OWNER)


def test_named_servers_are_off_for_one_notebook_per_user(gpu_hub):
    response = gpu_hub.api("POST", server_path(MEMBER, "second"), json={})
    assert response.status_code == 400
    assert "Named servers are not enabled" in response.text


def test_a_server_beyond_the_quota_fails_with_the_quota_message(kube_api, gpu_hub):
    """Two users are expected, with a GPU each: a third user's server does not fit the users'
    namespace's quota (its home claim, the first thing KubeSpawner asks for, is already beyond
    the claims the quota counts), and the spawn fails with the quota's message. It asks for no
    GPU: a third GPU server would not get that far, the hub refuses it for its GPU seats (see
    test_gpu_seats.py)."""
    start_server(gpu_hub, OWNER, {"profile": "h100"})
    start_server(gpu_hub, CO_OWNER, {"profile": "h100"})
    try:
        scheduled_pod(kube_api, gpu_hub, OWNER)
        scheduled_pod(kube_api, gpu_hub, CO_OWNER)

        # The pod is refused at once, so the hub answers the start request with the failure.
        refused = gpu_hub.api("POST", server_path(MEMBER), json={"profile": "h100-no-gpu"})
        assert refused.status_code == 500, refused.text
        progress = gpu_hub.api("GET", f"/users/{MEMBER}/server/progress", stream=True)
        events = [
            json.loads(line[len(b"data:") :])
            for line in progress.iter_lines()
            if line.startswith(b"data:")
        ]
        (final,) = events
        assert final["failed"] is True
        assert "exceeded quota: hub-quota" in final["message"], final
        message = final["message"]
        assert "requested: persistentvolumeclaims=1" in message, message
        # Two homes and the shared volume.
        assert "limited: persistentvolumeclaims=3" in message, message
        assert "exceeded quota: hub-quota" in gpu_hub.log()
        assert server_pod(kube_api, gpu_hub, MEMBER) is None
    finally:
        stop_server(kube_api, gpu_hub, CO_OWNER)
        stop_server(kube_api, gpu_hub, OWNER)


# --- Member tiers --------------------------------------------------------------------------

STUDENT, STAFF, NEWCOMER = "stu@uni.example", "ta@uni.example", "new@uni.example"
STUDENTS = TierSpec("students", gpu=False, shared="ro")
STAFF_TIER = TierSpec("staff", shared="rw", jobs=True)


@contextmanager
def running_tier_hub(kube_api, kubeconfig_path, workdir: Path) -> Iterator[RunningHub]:
    """A course with one size on an H100 (and the same size without a GPU), a shared volume
    and jobs access; students get no GPU and read the shared volume, staff get everything."""
    spec = HubSpec(
        hub_id=secrets.randbelow(10**6),
        slug=f"jh{secrets.token_hex(3)}",
        owner=OWNER,
        hubs_domain="hubs.localhost",
        expected_users=3,
        server_options=(ServerOption("standard", "Standard", 0.5, 1, 1, 2),),
        gpu=GpuRequest("nvidia.com/gpu", "NVIDIA-H100-80GB-HBM3", 1, display_name="H100"),
        images=(LAB,),
        home_size_gib=1,
        shared_size_gib=2,
        shared_mode="ro",
        jobs_access=True,
        members=(STUDENT, STAFF),
        tiers=(TierSpec("members", default=True), STUDENTS, STAFF_TIER),
        member_tiers=((STUDENT, "students"), (STAFF, "staff")),
    )
    prepare_namespace(kube_api, spec)
    hub = start_hub(spec, workdir, kubeconfig_path)
    try:
        yield hub
    finally:
        stop_hub(hub)
        delete_namespaces(kube_api, spec)


@pytest.fixture(scope="module")
def tier_hub(kube_api, kubeconfig_path, tmp_path_factory) -> Iterator[RunningHub]:
    """The tier hub the read-only tier tests share: none of them changes its members."""
    with running_tier_hub(kube_api, kubeconfig_path, tmp_path_factory.mktemp("tier-hub")) as hub:
        yield hub


@pytest.fixture
def own_tier_hub(kube_api, kubeconfig_path, tmp_path) -> Iterator[RunningHub]:
    """A tier hub of one test's own, for a test that changes its members."""
    with running_tier_hub(kube_api, kubeconfig_path, tmp_path / "tier-hub") as hub:
        yield hub


def created_pod(kube_api, hub: RunningHub, user: str) -> client.V1Pod:
    """The server's pod as KubeSpawner created it. The tier tests check its spec and identity
    only, so they do not wait for the simulated kubelet, which lags when other tests flood
    the cluster with pods."""
    return eventually(lambda: server_pod(kube_api, hub, user), timeout=60)


def stop_server_patiently(kube_api, hub: RunningHub, user: str) -> None:
    """stop_server, with time for a busy simulated kubelet to confirm the deletion."""
    response = hub.api("DELETE", server_path(user))
    assert response.status_code in (202, 204, 400), response.text
    eventually(lambda: server_pod(kube_api, hub, user) is None, timeout=240)
    eventually(lambda: "" not in hub.api("GET", f"/users/{user}").json()["servers"], timeout=240)


def log_in(hub: RunningHub, user: str) -> tuple[requests.Session, requests.Response]:
    """Sign in on the hub's login page, as a browser does; returns the session and answer."""
    session = requests.Session()

    def login_form():
        # Through the proxy, whose route to the hub may lag the hub's start by a moment.
        page = session.get(hub.public_url + "hub/login", timeout=30)
        return re.search(r'name="_xsrf" value="([^"]+)"', page.text)

    xsrf = eventually(login_form, timeout=30).group(1)
    answer = session.post(
        hub.public_url + "hub/login",
        data={"username": user, "password": PASSWORD, "_xsrf": xsrf},
        timeout=30,
    )
    return session, answer


def offered_profiles(hub: RunningHub, user: str) -> list[str]:
    """The profiles on the user's spawn form."""
    session, answer = log_in(hub, user)
    assert answer.ok, answer.text
    form = session.get(hub.public_url + "hub/spawn", timeout=30)
    assert form.status_code == 200, form.text
    return re.findall(r'name="profile"\s+id="profile-item-[^"]*"\s+value="([^"]+)"', form.text)


def test_students_see_only_the_cpu_profile_and_read_the_shared_volume(kube_api, tier_hub):
    profiles = offered_profiles(tier_hub, STUDENT)
    assert profiles == ["standard-no-gpu"], profiles
    assert "standard" in offered_profiles(tier_hub, STAFF)

    # Choosing the GPU profile anyway (through the API) is refused: no pod.
    refused = tier_hub.api("POST", server_path(STUDENT), json={"profile": "standard"})
    assert refused.status_code >= 400, refused.text
    assert "No such profile: standard" in tier_hub.log()
    assert server_pod(kube_api, tier_hub, STUDENT) is None
    eventually(
        lambda: "" not in tier_hub.api("GET", f"/users/{STUDENT}").json()["servers"], timeout=30
    )

    start_server(tier_hub, STUDENT, {"profile": "standard-no-gpu"})
    try:
        pod = created_pod(kube_api, tier_hub, STUDENT)
        assert "nvidia.com/gpu" not in quantities(container(pod).resources.limits)
        assert not pod.spec.node_selector
        assert mounts(pod)["shared"] == ("/home/jovyan/shared", True)
        (shared,) = [v for v in pod.spec.volumes if v.name == "shared"]
        assert shared.persistent_volume_claim.read_only is True
        # No jobs role for students, though the hub has jobs access.
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.service_account_name in (None, "default")
    finally:
        stop_server_patiently(kube_api, tier_hub, STUDENT)


def test_staff_start_the_gpu_profile_with_the_shared_volume_writable(kube_api, tier_hub):
    start_server(tier_hub, STAFF, {"profile": "standard", "image": "scipy"})
    try:
        pod = created_pod(kube_api, tier_hub, STAFF)
        assert quantities(container(pod).resources.limits)["nvidia.com/gpu"] == 1
        assert pod.spec.node_selector == {GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
        assert mounts(pod)["shared"] == ("/home/jovyan/shared", False)
        assert pod.spec.service_account_name == tier_hub.spec.jobs_account(STAFF)
        assert pod.spec.automount_service_account_token is True
    finally:
        stop_server_patiently(kube_api, tier_hub, STAFF)


def test_a_new_tier_applies_at_the_next_spawn_without_restarting_anything(kube_api, own_tier_hub):
    """The hub takes a new members file at the next spawn, in the same process, and leaves
    the running server alone. (That applying members leaves the hub's Deployment untouched is
    tests/cluster/test_members_apply.py's.)"""
    hub = own_tier_hub
    start_server(hub, STUDENT, {"profile": "standard-no-gpu"})
    before = created_pod(kube_api, hub, STUDENT)
    hub_pid = hub.process.pid

    promoted = dataclasses.replace(hub.spec, member_tiers=((STUDENT, "staff"), (STAFF, "staff")))
    # As a sync does: the student's jobs account and namespace, then the members file.
    prepare_namespace(kube_api, promoted)
    hub.write_members(promoted)
    # The server started under the old tier is still the same pod, read-only as it was.
    after = server_pod(kube_api, hub, STUDENT)
    assert after is not None and after.metadata.uid == before.metadata.uid
    assert mounts(after)["shared"] == ("/home/jovyan/shared", True)
    stop_server_patiently(kube_api, hub, STUDENT)

    # The next spawn: the same hub process now offers the GPU profile, and the server gets it.
    assert "standard" in offered_profiles(hub, STUDENT)
    start_server(hub, STUDENT, {"profile": "standard"})
    try:
        pod = created_pod(kube_api, hub, STUDENT)
        assert quantities(container(pod).resources.limits)["nvidia.com/gpu"] == 1
        assert mounts(pod)["shared"] == ("/home/jovyan/shared", False)
        assert pod.spec.service_account_name == hub.spec.jobs_account(STUDENT)
        assert hub.process.poll() is None and hub.process.pid == hub_pid
    finally:
        stop_server_patiently(kube_api, hub, STUDENT)


def test_only_members_log_in_and_a_new_member_needs_no_restart(own_tier_hub):
    hub = own_tier_hub
    _, refused = log_in(hub, NEWCOMER)
    assert "/hub/spawn" not in refused.url and "/hub/home" not in refused.url
    assert f"User {NEWCOMER!r} not allowed." in hub.log()

    hub.write_members(dataclasses.replace(hub.spec, members=(*hub.spec.members, NEWCOMER)))
    # A member without a tier of their own gets the default tier: everything.
    assert "standard" in offered_profiles(hub, NEWCOMER)
    hub.write_members(hub.spec)
    _, refused_again = log_in(hub, NEWCOMER)
    assert "/hub/spawn" not in refused_again.url


# --- Login through the identity provider ----------------------------------------------------


def oidc_log_in(hub: RunningHub, provider, username: str) -> requests.Response:
    """Press the hub's login button, sign in at the provider, and bring the code back to the
    hub, as a browser does; returns the hub's answer to the callback."""
    browser = harness.Browser(provider, username, SSO_PASSWORD)

    def started():
        # Through the proxy, whose route to the hub may lag the hub's start by a moment.
        answer = browser.session.get(
            hub.public_url + "hub/oauth_login", allow_redirects=False, timeout=30
        )
        return answer if answer.status_code == 302 else None

    start = eventually(started, timeout=30)
    back = browser.visit(urljoin(start.url, start.headers["Location"]))
    assert back.startswith(hub.public_url + "hub/oauth_callback?"), back
    return browser.session.get(back, allow_redirects=False, timeout=30)


@pytest.mark.django_db
def test_members_log_in_through_the_identity_provider_with_the_hubs_own_client(
    registering, kubeconfig_path, tmp_path
):
    """The portal registers the hub's client (as provisioning does); the shipped
    GenericOAuthenticator logs members in with it and refuses everyone else."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from portal.accounts import hub_clients
    from portal.hubs import cluster, hubspec
    from portal.hubs.models import GroupGrant
    from tests.factories import HubFactory
    from tests.test_sso import sign_in

    # The hub names people by their subject's portal account: the owner has signed in to the
    # portal, so the portal knows the subject.
    assert sign_in(Client(), registering, "Ada.Lovelace").status_code == 302
    ada = get_user_model().objects.get(username="ada.lovelace")
    portal_hub = HubFactory(slug=f"jh{secrets.token_hex(3)}", owner=ada)
    spec = HubSpec(
        hub_id=portal_hub.pk,
        slug=portal_hub.slug,
        owner="ada.lovelace",
        hubs_domain="hubs.localhost",
        expected_users=2,
        server_options=(ServerOption("small", "Small", 0.5, 1, 1, 2),),
        images=(LAB,),
        identities=hubspec.from_hub(portal_hub).identities,
    )
    public_url = f"http://127.0.0.1:{free_port()}/"
    client_login = hub_clients.ensure(portal_hub, public_url + "hub/oauth_callback")
    spec = dataclasses.replace(spec, login_client_id=client_login.client_id)
    oauth = cluster.render_settings().identity_provider.for_hub(spec)
    hub = start_hub(
        spec, tmp_path, kubeconfig_path, HubLogin(oauth, client_login.client_secret), public_url
    )
    try:
        owner = oidc_log_in(hub, registering, "Ada.Lovelace")
        assert owner.status_code == 302, owner.text
        assert hub.api("GET", "/users/ada.lovelace").json()["admin"] is True

        refused = oidc_log_in(hub, registering, "grace")
        assert refused.status_code == 403
        assert hub.api("GET", "/users/grace").status_code == 404

        # A group granted in the portal lets its members in, by the provider's groups claim,
        # once the portal knows them (they signed in to it once).
        registering.set_groups("grace", ["course-101"])
        assert sign_in(Client(), registering, "grace").status_code == 302
        GroupGrant.objects.create(hub=portal_hub, group="course-101")
        hub.write_members(
            dataclasses.replace(
                spec,
                group_grants=(GroupGrantSpec("course-101"),),
                identities=hubspec.from_hub(portal_hub).identities,
            )
        )
        member = oidc_log_in(hub, registering, "grace")
        assert member.status_code == 302, member.text
        assert hub.api("GET", "/users/grace").json()["admin"] is False
    finally:
        stop_hub(hub)
        hub_clients.remove(portal_hub)


# --- Ending a removed member's access ---------------------------------------------------------


@pytest.mark.django_db
def test_a_removed_members_session_ends_at_once(kube_api, kubeconfig_path, own_tier_hub, settings):
    """The portal's task deletes, through the hub's API with the portal's service token, the
    users its members no longer include; members keep their access."""
    from portal.audit.models import AuditEvent
    from portal.hubs import tasks
    from portal.hubs.lifecycle import HubState
    from portal.hubs.models import Member
    from tests.factories import HubFactory, UserFactory

    tier_hub = own_tier_hub

    # The portal's record of the same hub, and its Secret with the portal's token.
    portal_hub = HubFactory(
        slug=tier_hub.spec.slug, owner=UserFactory(username=OWNER), state=HubState.RUNNING
    )
    for name in (STUDENT, STAFF):
        Member.objects.create(
            hub=portal_hub, user=UserFactory(username=name), role=Member.Role.MEMBER
        )
    secrets_of_hub = dataclasses.replace(
        render.HubSecrets.generate(), portal_token=tier_hub.portal_token
    )
    k8s.apply(kube_api, render.hub_secret(tier_hub.spec, secrets_of_hub))
    settings.HUB_API_URL = tier_hub.api_url
    settings.KUBECONFIG = str(kubeconfig_path)  # where the task reads the hub's Secret
    tier_hub.write_members(
        dataclasses.replace(tier_hub.spec, members=(*tier_hub.spec.members, NEWCOMER))
    )
    try:
        session, answer = log_in(tier_hub, NEWCOMER)
        assert answer.ok and session.get(tier_hub.public_url + "hub/home").url.endswith("/home")

        tier_hub.write_members(tier_hub.spec)  # the owner removed them
        assert tasks.end_removed_access.apply((portal_hub.pk,)).get() == "ended 1"

        assert tier_hub.api("GET", f"/users/{NEWCOMER}").status_code == 404
        assert "/hub/login" in session.get(tier_hub.public_url + "hub/home").url
        left = {user["name"] for user in tier_hub.api("GET", "/users").json()}
        assert {OWNER, STUDENT, STAFF} <= left
        event = AuditEvent.objects.get(action="hub.access_ended")
        assert event.details == {"users": [NEWCOMER]} and event.actor is None
        # Nothing more to do at the second run (after the kubelet's refresh).
        assert tasks.end_removed_access.apply((portal_hub.pk,)).get() == "ended 0"
    finally:
        k8s.delete(kube_api, "Secret", render.SECRET_NAME, tier_hub.spec.namespace)
