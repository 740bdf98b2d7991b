"""The server policy against a real JupyterHub: the portal warns, keeps running and stops the
hub's user servers through the hub's API, as each server option's limits say.

The hub is the shipped config run as in test_jupyterhub.py (a `jupyterhub` process with
KubeSpawner starting pods in a namespace of the local control plane). What is NOT real: the
simulated nodes run no containers, so KubeSpawner's pod address is replaced by a stand-in HTTP
server on this machine (`get_pod_url`): the hub sees each server come up, routes it, and
reports it ready, as with a real notebook. Activity is posted through the hub's API, as a
notebook server does. Time is shortened by a setting (a policy minute is a quarter of a second),
not by sleeping through real limits; warnings go to a real SMTP server (aiosmtpd).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import secrets
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from portal.audit.models import AuditEvent
from portal.hubs import server_policy
from portal.hubs.lifecycle import HubState
from portal.hubs.models import ServerRun
from provisioning import k8s, render
from provisioning.hubapi import HubServers
from provisioning.spec import GpuRequest, HubSpec, ServerOption
from tests.cluster import test_jupyterhub as jh
from tests.factories import GpuTypeFactory, HardwareOptionFactory, HubFactory, UserFactory
from tests.support import delete_namespaces, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.django_db]

MINUTE = 0.25  # seconds per policy minute in these tests
OWNER, MEMBER = jh.OWNER, jh.MEMBER
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
# Idle: 40 minutes with a GPU (10 s), 480 without (2 min); warned 20 minutes (5 s) ahead.
GPU_IDLE, CPU_IDLE, WARNING = 40, 480, 20


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"stand-in for a notebook server")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    """An HTTP server on this machine that answers for every user server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def policy_hub(kube_api, kubeconfig_path, tmp_path_factory, stand_in) -> Iterator[jh.RunningHub]:
    """One option on an H100, offered with the GPU and without (profiles h100, h100-no-gpu)."""
    spec = HubSpec(
        hub_id=secrets.randbelow(10**6),
        slug=f"sp{secrets.token_hex(3)}",
        owner=OWNER,
        hubs_domain="hubs.localhost",
        expected_users=2,
        server_options=(ServerOption("h100", "H100 server", 0.5, 1, 1, 2),),
        gpu=GpuRequest("nvidia.com/gpu", GPU_PRODUCT, 1, display_name="H100"),
        images=(jh.LAB,),
        home_size_gib=1,
        members=(MEMBER,),
    )
    jh.prepare_namespace(kube_api, spec)
    # The smallest change on top of the test hub's: pods answer at the stand-in's address.
    extra = f"c.KubeSpawner.get_pod_url = lambda spawner, pod: {stand_in!r}\n"
    override, jh.OVERRIDE = jh.OVERRIDE, jh.OVERRIDE + extra.replace("{", "{{").replace("}", "}}")
    try:
        hub = jh.start_hub(spec, tmp_path_factory.mktemp("policy-hub"), kubeconfig_path)
    finally:
        jh.OVERRIDE = override
    yield hub
    jh.stop_hub(hub)
    delete_namespaces(kube_api, spec)


@pytest.fixture
def portal_hub(policy_hub, settings, smtp_server):
    """The portal's record of the same hub, its option's limits, and time shortened."""
    settings.SERVER_POLICY_MINUTE_SECONDS = MINUTE
    settings.SERVER_POLICY_WARNING_MINUTES = WARNING
    settings.SERVER_POLICY_IDLE_AFTER_MINUTES = 0
    settings.SERVER_POLICY_MAIL = True
    option = HardwareOptionFactory(
        name="h100",
        display_name="H100 server",
        cpu_guarantee=Decimal("0.5"),
        cpu_limit=Decimal("1"),
        mem_guarantee_gib=Decimal("1"),
        mem_limit_gib=Decimal("2"),
        idle_timeout_minutes=CPU_IDLE,
        max_idle_timeout_minutes=CPU_IDLE,
        gpu_idle_timeout_minutes=GPU_IDLE,
        max_age_hours=24,
        gpu_max_age_hours=24,
        age_extension_hours=1,
    )
    gpu = GpuTypeFactory(name="h100", display_name="H100", node_label_value=GPU_PRODUCT)
    hub = HubFactory(
        slug=policy_hub.spec.slug,
        owner=UserFactory(username=OWNER, email="ada@uni.example"),
        state=HubState.RUNNING,
        hardware_options=[option],
        gpu_type=gpu,
        gpus_per_user=1,
    )
    UserFactory(username=MEMBER, email="alan@uni.example")
    return hub


def servers_of(hub: jh.RunningHub, user: str) -> dict:
    return hub.api("GET", f"/users/{user}").json()["servers"]


def start_ready(kube_api, hub: jh.RunningHub, user: str, profile: str) -> dict:
    """Start the user's server and wait until the hub reports it ready."""
    jh.start_server(hub, user, {"profile": profile})

    def ready():
        server = servers_of(hub, user).get("")
        return server if server and server["ready"] else None

    return eventually(ready, timeout=90)


def post_activity(hub: jh.RunningHub, user: str) -> bool:
    """What a notebook server does while its user works; False once the server is gone."""
    if "" not in servers_of(hub, user):
        return False
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    answer = hub.api(
        "POST", f"/users/{user}/activity", json={"servers": {"": {"last_activity": now}}}
    )
    assert answer.status_code in (200, 204, 400), answer.text  # 400: it stopped just now
    return answer.status_code != 400


def checks_until(portal_hub, servers: HubServers, done, timeout: float = 60):
    """Run the policy's check once a (real) second until `done()` holds; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        server_policy.enforce(portal_hub, servers)
        result = done()
        if result:
            return result
        time.sleep(1)
    pytest.fail("the policy's checks did not get there in time")


def warnings_to(inbox, address: str) -> list:
    return [
        message
        for rcpt, message in inbox.messages()
        if any(address in to for to in rcpt) and "stops in" in message["Subject"]
    ]


def minutes_left(message) -> int:
    return int(re.search(r"stops in (\d+) minute", message["Subject"]).group(1))


def the_run(portal_hub, user: str) -> ServerRun:
    return ServerRun.objects.filter(hub=portal_hub, username=user).latest("started")


def test_an_idle_gpu_server_is_warned_then_stopped_while_a_cpu_server_keeps_running(
    kube_api, policy_hub, portal_hub, smtp_server
):
    servers = HubServers(policy_hub.api_url, policy_hub.portal_token)
    start_ready(kube_api, policy_hub, OWNER, "h100")
    start_ready(kube_api, policy_hub, MEMBER, "h100-no-gpu")
    try:
        post_activity(policy_hub, OWNER)
        post_activity(policy_hub, MEMBER)
        warned = checks_until(portal_hub, servers, lambda: warnings_to(smtp_server, "ada@"))
        (mail,) = warned
        run = the_run(portal_hub, OWNER)
        event = AuditEvent.objects.get(action="server.warned")
        # The time left the mail says is the time to the option's idle limit.
        limit_at = run.last_activity + datetime.timedelta(seconds=GPU_IDLE * MINUTE)
        expected = (limit_at - event.created).total_seconds() / MINUTE
        assert abs(minutes_left(mail) - expected) <= 1.5, (minutes_left(mail), expected)
        assert 1 <= minutes_left(mail) <= WARNING
        body = mail.get_body(("plain",)).get_content()
        assert "stop after 40 minutes idle" in body
        keep = re.search(r"https://portal\.example\.org/hubs/\d+/servers/\d+/keep-running/", body)
        assert keep, body

        checks_until(portal_hub, servers, lambda: "" not in servers_of(policy_hub, OWNER))
        run.refresh_from_db()
        assert run.stop_reason == ServerRun.StopReason.IDLE
        # Not before its limit.
        assert run.stopped >= limit_at
        stopped = AuditEvent.objects.get(action="server.stopped")
        assert stopped.details["gpus"] == 1 and stopped.details["gpu_hours_saved"] > 0
        eventually(lambda: jh.server_pod(kube_api, policy_hub, OWNER) is None, timeout=60)

        # The CPU server idled just as long and runs on, unwarned.
        assert servers_of(policy_hub, MEMBER)[""]["ready"] is True
        assert not warnings_to(smtp_server, "alan@")
        assert the_run(portal_hub, MEMBER).stopped is None
    finally:
        for user in (OWNER, MEMBER):
            if "" in servers_of(policy_hub, user):
                jh.stop_server(kube_api, policy_hub, user)


def test_the_user_is_told_why_at_the_next_visit(client, kube_api, policy_hub, portal_hub):
    servers = HubServers(policy_hub.api_url, policy_hub.portal_token)
    start_ready(kube_api, policy_hub, OWNER, "h100")
    try:
        checks_until(portal_hub, servers, lambda: "" not in servers_of(policy_hub, OWNER))
    finally:
        if "" in servers_of(policy_hub, OWNER):
            jh.stop_server(kube_api, policy_hub, OWNER)
    client.force_login(portal_hub.owner)
    page = client.get(f"/hubs/{portal_hub.pk}/").content.decode()
    assert "Your server on " in page and "idle for longer than its limit" in page
    # Told once.
    assert "idle for longer than its limit" not in client.get("/hubs/").content.decode()


def test_keep_running_moves_the_stop(
    client, kube_api, kubeconfig_path, policy_hub, portal_hub, settings, smtp_server
):
    # The portal reaches the hub as it does in production: its token from the hub's Secret.
    settings.HUB_API_URL = policy_hub.api_url
    settings.KUBECONFIG = str(kubeconfig_path)
    hub_secrets = dataclasses.replace(
        render.HubSecrets.generate(), portal_token=policy_hub.portal_token
    )
    k8s.apply(kube_api, render.hub_secret(policy_hub.spec, hub_secrets))
    servers = HubServers(policy_hub.api_url, policy_hub.portal_token)
    start_ready(kube_api, policy_hub, OWNER, "h100")
    try:
        (mail,) = checks_until(portal_hub, servers, lambda: warnings_to(smtp_server, "ada@"))
        run = the_run(portal_hub, OWNER)
        first_stop = server_policy.next_stop(run, server_policy.limits_for(portal_hub)[0]).at
        body = mail.get_body(("plain",)).get_content()
        path = re.search(r"/hubs/\d+/servers/\d+/keep-running/", body).group(0)

        # Nobody else may use the link, not even the hub's co-owners or a member.
        client.force_login(UserFactory(username="mallory"))
        assert client.post(path).status_code == 404
        client.force_login(portal_hub.owner)
        assert "Keep running" in client.get(path).content.decode()
        answer = client.post(path, follow=True)
        assert "Your server keeps running" in answer.content.decode()

        # The hub has the activity, and the stop moved past the old one.
        activity = servers_of(policy_hub, OWNER)[""]["last_activity"]
        assert datetime.datetime.fromisoformat(activity.replace("Z", "+00:00")) > run.last_activity
        while datetime.datetime.now(datetime.UTC) < first_stop + datetime.timedelta(seconds=1):
            server_policy.enforce(portal_hub, servers)
            time.sleep(0.5)
        assert servers_of(policy_hub, OWNER)[""]["ready"] is True
        # Idle again, it is warned again for the new stretch, then stopped.
        checks_until(portal_hub, servers, lambda: "" not in servers_of(policy_hub, OWNER))
        assert len(warnings_to(smtp_server, "ada@")) == 2
    finally:
        if "" in servers_of(policy_hub, OWNER):
            jh.stop_server(kube_api, policy_hub, OWNER)
        k8s.delete(kube_api, "Secret", render.SECRET_NAME, policy_hub.spec.namespace)


def test_a_policy_change_reaches_the_running_hub_and_stops_a_server_at_its_age(
    kube_api, policy_hub, portal_hub, smtp_server
):
    """The owner shortens the servers' maximum age while one runs: nothing restarts, the
    next check warns its user and the one after its age stops it."""
    servers = HubServers(policy_hub.api_url, policy_hub.portal_token)
    start_ready(kube_api, policy_hub, MEMBER, "h100-no-gpu")
    try:
        pod = jh.server_pod(kube_api, policy_hub, MEMBER)
        hub_pid = policy_hub.process.pid
        server_policy.enforce(portal_hub, servers)
        assert not warnings_to(smtp_server, "alan@")

        portal_hub.max_server_age_hours = 1  # 15 s of test time
        portal_hub.save(update_fields=["max_server_age_hours"])

        def busy_and_warned():
            post_activity(policy_hub, MEMBER)  # busy all along: only the age counts
            return warnings_to(smtp_server, "alan@")

        (mail,) = checks_until(portal_hub, servers, busy_and_warned)
        assert "run at most 1 hour" in mail.get_body(("plain",)).get_content()
        assert jh.server_pod(kube_api, policy_hub, MEMBER).metadata.uid == pod.metadata.uid
        assert policy_hub.process.poll() is None and policy_hub.process.pid == hub_pid

        checks_until(portal_hub, servers, lambda: not post_activity(policy_hub, MEMBER))
        run = the_run(portal_hub, MEMBER)
        assert run.stop_reason == ServerRun.StopReason.AGE
        assert run.stopped >= run.started + datetime.timedelta(seconds=60 * MINUTE)
    finally:
        if "" in servers_of(policy_hub, MEMBER):
            jh.stop_server(kube_api, policy_hub, MEMBER)
