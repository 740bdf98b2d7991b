"""A hub requested through the portal runs on the real node, and a person uses it in a browser.

Everything is real: the portal (live server) and its Celery worker and hub watcher provision
the hub with the local cluster's images and placement; the hub signs its users in through the
test OpenID Connect provider; the browser (Debian's Chromium) reaches the hub at its address
https://<slug>.hubs.localhost through the local cluster's ingress (node.sh local_ingress), to
which Chromium's --host-resolver-rules send the hubs' names. The provider listens on the
host's end of the node's link, the one address both the browser and the hub's pod reach, so
the hub exchanges the code at the same issuer the browser signs in at. The portal's policy
task, run by the worker, reaches the hub's API through the same ingress (HUB_API_CONNECT_TO)
and stops the server once it has idled past its option's limit (a policy minute is a second).

The ingress's certificate comes from the local cluster's own CA: the browser's context ignores
certificate errors; the portal verifies the certificate against that CA (HUB_API_CA_BUNDLE).
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
from pathlib import Path

import pytest
from django.utils import timezone
from kubernetes import client
from playwright.sync_api import expect, sync_playwright

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, ServerRun
from portal.hubs.tasks import enforce_server_policies
from tests.cluster.realnode import (
    INGRESS_CA,
    INGRESS_CLASS,
    INGRESS_NAMESPACE,
    NODE_NAME,
    NODE_SELECTOR,
    TOLERATIONS,
    ensure_real_node,
    ingress_ip,
    node_host_ip,
)
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.factories import HardwareOptionFactory, ImageFactory
from tests.oidc_provider import harness
from tests.support import eventually

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.realnode,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery staple"
PORTAL_CLIENT = {"client_id": "portal-real-node", "client_secret": "portal-secret-" + "r" * 20}
REGISTRATION_TOKEN = "initial-access-token-" + "n" * 20
LAB_IMAGE = "hub-on-demand.local/singleuser:lab-4.6.6"
IDLE_MINUTES = 30  # a policy minute is a second here


@pytest.fixture
def real_node(kube_api):
    """The real node, started if DEVCLUSTER_NODE=real asks for it; the test is skipped without
    it before anything listens on the node's link."""
    ensure_real_node(client.CoreV1Api(kube_api))


@pytest.fixture
def provider(real_node, tmp_path, live_server):
    """The test provider on the host's end of the node's link, with the portal as a client
    and one researcher; hubs register their own clients with an initial access token."""
    ada = {"username": "Ada.Lovelace", "password": PASSWORD, "email": "ada@uni.example"}
    portal = {
        **PORTAL_CLIENT,
        "redirect_uris": [f"{live_server.url}/auth/complete/oidc/"],
        "post_logout_redirect_uris": [f"{live_server.url}/accounts/login/"],
        "skip_authorization": True,
    }
    started = harness.start({"users": [ada], "clients": [portal]}, tmp_path, host=node_host_ip())
    started.require_registration_token(REGISTRATION_TOKEN)
    yield started
    started.stop()


@pytest.fixture
def portal_settings(settings, provider):
    """What an operator sets for the local cluster's real node, in this process (the web)."""
    values = {
        "OIDC_ISSUER": provider.issuer,
        "OIDC_CLIENT_ID": PORTAL_CLIENT["client_id"],
        "OIDC_CLIENT_SECRET": PORTAL_CLIENT["client_secret"],
        "OIDC_HUB_REGISTRATION_TOKEN": REGISTRATION_TOKEN,
        "HUB_IMAGE": "hub-on-demand.local/k8s-hub:5.4.6",
        "PROXY_IMAGE": "hub-on-demand.local/configurable-http-proxy:5.0.1",
        "HUB_NODE_SELECTOR": json.dumps(NODE_SELECTOR),
        "HUB_TOLERATIONS": json.dumps(TOLERATIONS),
        "INGRESS_NAMESPACE": INGRESS_NAMESPACE,
        "INGRESS_CLASS": INGRESS_CLASS,
        "HUB_API_CONNECT_TO": f"{ingress_ip()}:443",
        "HUB_API_CA_BUNDLE": str(INGRESS_CA),
        "SERVER_POLICY_MINUTE_SECONDS": "1",
        "SERVER_POLICY_WARNING_MINUTES": "5",
        "SERVER_POLICY_MAIL": "false",
    }
    settings.OIDC_ISSUER = values["OIDC_ISSUER"]
    settings.OIDC_CLIENT_ID = values["OIDC_CLIENT_ID"]
    settings.OIDC_CLIENT_SECRET = values["OIDC_CLIENT_SECRET"]
    settings.OIDC_AUTHORIZE_URL = settings.OIDC_TOKEN_URL = settings.OIDC_USERINFO_URL = ""
    settings.OIDC_HUB_CLIENT_ID = settings.OIDC_HUB_CLIENT_SECRET = ""
    settings.OIDC_HUB_REGISTRATION_TOKEN = REGISTRATION_TOKEN
    settings.SERVER_POLICY_MINUTE_SECONDS = 1
    return values


@pytest.fixture
def real_node_workers(real_node, workers, portal_settings):
    """The worker and the watcher with the same settings, as their processes would read them."""
    workers.env.update(portal_settings)
    workers.start_watcher()
    return workers.start()


@pytest.fixture
def browser():
    """Chromium as tests/conftest.py launches it, with the hubs' names resolved to the local
    cluster's ingress (the one change a real DNS record for *.hubs.localhost would make)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP *.hubs.localhost {ingress_ip()}"],
        )
        yield launched
        launched.close()


def test_a_hub_requested_in_the_portal_runs_a_notebook_on_the_real_node_and_idles_out(
    kube_api, live_server, provider, real_node_workers, browser, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    HardwareOptionFactory(
        name="real-small",
        display_name="Real-node small",
        idle_timeout_minutes=IDLE_MINUTES,
        max_idle_timeout_minutes=IDLE_MINUTES,
        gpu_idle_timeout_minutes=IDLE_MINUTES,
    )
    ImageFactory(name="local-lab", display_name="Local JupyterLab", reference=LAB_IMAGE)
    slug = f"rn-{secrets.token_hex(3)}"
    hub_url = f"https://{slug}.hubs.localhost"
    today = timezone.localdate()
    context = browser.new_context(
        viewport={"width": 1280, "height": 1000}, ignore_https_errors=True
    )
    page = context.new_page()

    # The researcher signs in to the portal through the identity provider.
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_role("button", name="Institutional sign-in").click()
    page.get_by_label("Username").fill("Ada.Lovelace")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/**")

    # ... requests a hub inside the self-service policy, which is approved at once.
    page.goto(f"{live_server.url}/hubs/new/")
    page.get_by_label("Display name").fill("Real node lab")
    page.get_by_label("Slug").fill(slug)
    page.get_by_label("Start date").fill(today.isoformat())
    page.get_by_label("End date").fill((today + datetime.timedelta(days=30)).isoformat())
    page.get_by_label("Expected users").fill("2")
    page.get_by_label("Real-node small").check()
    page.get_by_label("Local JupyterLab").check()
    page.get_by_role("button", name="Submit request").click()
    portal_page = page.url
    expect(page.locator("#hub-status").get_by_text("Running", exact=True)).to_be_visible(
        timeout=300_000
    )
    assert hub_url in page.content()
    hub = Hub.objects.get(slug=slug)
    core = client.CoreV1Api(kube_api)
    pods = core.list_namespaced_pod(hub.namespace).items
    assert {p.spec.node_name for p in pods} == {NODE_NAME}

    # ... opens the hub at its address, signs in (the provider knows her already), and
    # starts a server.
    hub_page = context.new_page()
    hub_page.goto(f"{hub_url}/hub/oauth_login?next=%2Fhub%2Fspawn", timeout=60_000)
    hub_page.wait_for_url(re.compile(r".*/(hub/spawn|hub/spawn-pending/.*|user/.*)$"))
    if hub_page.url.endswith("/hub/spawn"):  # the options form, when the hub shows one
        hub_page.get_by_role("button", name="Start").click()
    hub_page.wait_for_url(f"{hub_url}/user/ada.lovelace/lab**", timeout=180_000)
    (server_pod,) = core.list_namespaced_pod(
        hub.users_namespace, label_selector="app.kubernetes.io/component=singleuser-server"
    ).items
    assert server_pod.spec.node_name == NODE_NAME
    assert server_pod.spec.containers[0].image == LAB_IMAGE

    # ... runs a cell of a new notebook and sees its output.
    # JupyterLab's first load on a busy machine takes a while (its launcher comes last).
    hub_page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=180_000)
    # The kernel has started and its channels are connected (a WebSocket through the ingress).
    expect(hub_page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
    editor = hub_page.locator(".jp-Notebook .jp-Cell .cm-content").first
    editor.click(timeout=60_000)
    hub_page.keyboard.type("print(6*7)")
    hub_page.keyboard.press("Shift+Enter")
    try:
        expect(hub_page.locator(".jp-OutputArea-output").first).to_have_text("42", timeout=60_000)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        hub_page.screenshot(path=ARTIFACTS / "real-node-notebook.png")
        print(core.read_namespaced_pod_log(server_pod.metadata.name, hub.users_namespace)[-6000:])

    # The owner's page in the portal shows the hub running.
    page.goto(portal_page)
    expect(page.locator("#hub-status").get_by_text("Running", exact=True)).to_be_visible()

    # Left alone (the page closed), the server idles; the portal's policy task, on the worker,
    # sees it through the ingress and stops it at its limit.
    hub_page.close()
    left_at = datetime.datetime.now(datetime.UTC)

    def stopped():
        enforce_server_policies.delay()
        run = ServerRun.objects.filter(hub=hub, username="ada.lovelace").first()
        return run if run and run.stopped else None

    run = eventually(stopped, timeout=IDLE_MINUTES + 120, interval=3)
    assert run.stop_reason == ServerRun.StopReason.IDLE
    # Not before its limit, counted from the last activity the hub knew of (the server
    # reports activity every few minutes, so that may be before the page closed).
    assert run.stopped >= run.last_activity + datetime.timedelta(seconds=IDLE_MINUTES)
    assert run.stopped > left_at
    eventually(
        lambda: not core.list_namespaced_pod(
            hub.users_namespace, label_selector="app.kubernetes.io/component=singleuser-server"
        ).items,
        timeout=120,
    )
    assert Hub.objects.get(pk=hub.pk).state == HubState.RUNNING


@pytest.fixture(autouse=True)
def _remove_hub_namespaces(kube_api):
    """The hub's namespaces go with the test (the portal's own deletion is tested elsewhere)."""
    yield
    core = client.CoreV1Api(kube_api)
    for hub in Hub.objects.filter(slug__startswith="rn-"):
        for name in (hub.namespace, hub.users_namespace):
            try:
                core.delete_namespace(name, propagation_policy="Background")
            except client.ApiException as error:
                if error.status != 404:
                    raise
