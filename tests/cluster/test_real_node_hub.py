"""A hub as the portal renders and syncs it, really running on the real node: the hub image
built here (JupyterHub, KubeSpawner, OAuthenticator and the idle culler at the pinned
versions) runs the rendered jupyterhub_config.py, the proxy image routes to it, and the
portal's service token is accepted by the hub's API."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets
import urllib.request

import pytest
from kubernetes import client

from portal.hubs.tasks import deployments_available
from provisioning import k8s
from provisioning.render import SECRET_NAME, HubSecrets, RenderSettings, selector
from provisioning.spec import ImageChoice
from provisioning.sync import sync_hub
from tests.cluster.realnode import (
    IMAGE_REGISTRY,
    NODE_NAME,
    NODE_SELECTOR,
    TOLERATIONS,
    ensure_real_node,
    run_in_pod,
    server_pod,
    wait_running,
)
from tests.provisioning.examples import EXAMPLES
from tests.support import delete_namespaces, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.realnode]

HUB_IMAGE = f"{IMAGE_REGISTRY}/k8s-hub:5.4.6"
PROXY_IMAGE = f"{IMAGE_REGISTRY}/configurable-http-proxy:5.0.1"
LAB = ImageChoice("lab", "JupyterLab", f"{IMAGE_REGISTRY}/singleuser:lab-4.6.6")


@pytest.fixture
def ingress(kube_api):
    """A namespace standing in for the ingress controller's, with a pod to send requests from:
    the only place the hub's policies let reach its proxy's public port."""
    core = client.CoreV1Api(kube_api)
    ensure_real_node(core)
    name = f"ingress-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name, "labels": {"hub-on-demand.test": "true"}}})
    eventually(lambda: core.list_namespaced_service_account(name).items, timeout=30)
    core.create_namespaced_pod(name, server_pod("controller", {}))
    wait_running(core, name, ["controller"])
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def render_settings(ingress):
    return RenderSettings(
        hub_image=HUB_IMAGE,
        proxy_image=PROXY_IMAGE,
        node_selector=NODE_SELECTOR,
        tolerations=tuple(TOLERATIONS),
        ingress_namespace=ingress,
    )


@pytest.fixture
def hub(kube_api):
    example = EXAMPLES["cpu-course"]
    spec = dataclasses.replace(
        example,
        slug=f"real-{secrets.token_hex(3)}",
        hub_id=secrets.randbelow(10**9),
        images=(LAB,),
        tiers=(),
        member_tiers=(),
    )
    yield spec
    delete_namespaces(kube_api, spec)


# A GET from inside the ingress pod: prints the status and the JSON body (status 0: no answer).
GET = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    request.add_header("Authorization", "token " + sys.argv[2])
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        print("answer", json.dumps([response.status, json.loads(response.read())]))
except urllib.error.HTTPError as error:
    print("answer", json.dumps([error.code, None]))
except OSError:
    print("answer", json.dumps([0, None]))
"""


def _get_from(core, namespace: str, url: str, token: str = "") -> tuple[int, object]:
    output = run_in_pod(core, namespace, "controller", ["python3", "-c", GET, url, token])
    # Prefixed: the client's exec stream would turn output that parses as JSON into a repr.
    status, body = json.loads(output.strip().splitlines()[-1].removeprefix("answer "))
    return status, body


def test_a_synced_hub_runs_on_the_real_node_and_answers_through_its_proxy(
    kube_api, hub, render_settings, ingress
):
    sync_hub(kube_api, hub, render_settings)

    def available():
        items = k8s.list_objects(kube_api, "Deployment", hub.namespace, selector(hub.hub_id))
        return len(items) == 2 and deployments_available(items)[0]

    # Ready means the readiness probes passed: the hub's /hub/health, the proxy's own.
    eventually(available, timeout=240)
    core = client.CoreV1Api(kube_api)
    pods = core.list_namespaced_pod(hub.namespace, label_selector=selector(hub.hub_id)).items
    assert {p.metadata.labels["app.kubernetes.io/component"] for p in pods} == {"hub", "proxy"}
    assert {p.spec.node_name for p in pods} == {NODE_NAME}
    assert {c.image for p in pods for c in p.spec.containers} == {HUB_IMAGE, PROXY_IMAGE}

    # From the ingress controller's namespace, through the proxy's public Service by name: the
    # proxy forwards to the hub, whose API names the JupyterHub version the image pins.
    public = f"http://proxy-public.{hub.namespace}.svc.cluster.local"

    def hub_answers():
        status, info = _get_from(core, ingress, f"{public}/hub/api/")
        return status == 200 and info

    assert eventually(hub_answers, timeout=60)["version"] == "5.4.6"
    # The portal's service token (from the hub's Secret) is accepted; an invented one is not.
    secret = core.read_namespaced_secret(SECRET_NAME, hub.namespace)
    token = base64.b64decode(secret.data[HubSecrets.KEYS["portal_token"]]).decode()
    status, users = _get_from(core, ingress, f"{public}/hub/api/users", token)
    assert status == 200 and isinstance(users, list)
    assert _get_from(core, ingress, f"{public}/hub/api/users", secrets.token_hex(16))[0] == 403
    # Anywhere but the ingress controller's namespace, the proxy is out of reach: the host,
    # through the same Service's address, gets no answer.
    address = core.read_namespaced_service("proxy-public", hub.namespace).spec.cluster_ip
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}/hub/api/", timeout=3)
