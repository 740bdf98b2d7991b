"""Helpers for tests on the local cluster's real node (make cluster NODE=real): pods that run
for real on it, and connections tried from inside them."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = os.environ.get("DEVCLUSTER_NODE_NAME", "real-node")
NODE_SELECTOR = {"hub-on-demand.dev/node": "real"}
TOLERATIONS = [{"key": "hub-on-demand.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}]
IMAGE_REGISTRY = "hub-on-demand.local"
BASE_IMAGE = f"{IMAGE_REGISTRY}/debian:bookworm"
PAUSE_IMAGE = f"{IMAGE_REGISTRY}/pause:1"
# What a pod under the `restricted` Pod Security level must say of itself.
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# The local cluster's ingress (node.sh local_ingress), as devcluster/scripts/common.sh names it.
INGRESS_NAMESPACE = "devcluster-ingress"
INGRESS_CLASS = "devcluster"
INGRESS_CA = REPO_ROOT / ".devcluster/ingress/ca.crt"


def _api_server_port() -> int:
    return int(os.environ.get("DEVCLUSTER_APISERVER_PORT", "6443"))


def node_host_ip() -> str:
    """The host's end of the link to the real node: an address both this machine's processes
    (the browser, the portal) and the node's pods reach."""
    link = os.environ.get("DEVCLUSTER_NODE_LINK_NET", f"10.201.{_api_server_port() % 250 + 1}.0")
    return str(ipaddress.IPv4Address(link) + 1)


def ingress_ip() -> str:
    """The Service address of the local cluster's ingress (the Service range's 11th)."""
    cidr = os.environ.get("DEVCLUSTER_SERVICE_CIDR", "10.96.0.0/16")
    return str(ipaddress.IPv4Network(cidr)[11])


RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

# A TCP connection tried from inside a pod: "open", "refused" (reset) or "timeout" (dropped).
# A name is looked up first, again when the resolver answers "try again" (EAI_AGAIN: no answer
# in its time, as a starved CoreDNS gives under load); what is probed is the connection.
PROBE = """
import socket, sys
for attempt in range(3):
    try:
        address = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), socket.AF_INET)[0][4][0]
        break
    except socket.gaierror as error:
        if error.errno != socket.EAI_AGAIN or attempt == 2:
            print("error", error); sys.exit()
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((address, int(sys.argv[2]))); print("open")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as error:
    print("error", error)
"""

# Plain HTTP servers on the given ports, answering with the pod's name: stand-ins for the hub,
# the proxy and user servers, so that policies are tested on the ports and labels they use.
SERVE = """
import http.server, os, sys, threading
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = os.environ["POD_NAME"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *args):
        pass
servers = [http.server.ThreadingHTTPServer(("", int(p)), Answer) for p in sys.argv[1:]]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""


def node_ready(core) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        node = core.read_node(NODE_NAME)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
    return bool(ready) and ready[0].status == "True"


def ensure_real_node(core) -> None:
    """Start the real node beside the running control plane when DEVCLUSTER_NODE=real asks for
    it; skip the test otherwise."""
    if node_ready(core):
        return
    if os.environ.get("DEVCLUSTER_NODE") != "real":
        pytest.skip("needs the real node: make cluster NODE=real, or DEVCLUSTER_NODE=real")
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "devcluster/scripts/node.sh"), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not node_ready(core):
        pytest.fail("could not start the real node:\n" + result.stdout + result.stderr)


def server_pod(name: str, ports: dict[str, int], labels: dict[str, str] | None = None) -> dict:
    """A pod on the real node that answers HTTP with its name on these ports (by port name, as
    the real containers name them: Services target them by name)."""
    numbers = list(ports.values()) or [9]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": NODE_SELECTOR,
            "tolerations": TOLERATIONS,
            "securityContext": RESTRICTED_POD,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "server",
                    "image": BASE_IMAGE,
                    "imagePullPolicy": "Never",
                    # A pod that serves nothing of interest still listens (on the discard port),
                    # so that readiness means the same for every pod.
                    "command": ["python3", "-c", SERVE, *map(str, numbers)],
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        }
                    ],
                    "securityContext": RESTRICTED_CONTAINER,
                    "ports": [
                        {"name": port_name, "containerPort": port}
                        for port_name, port in ports.items()
                    ],
                    "readinessProbe": {
                        "tcpSocket": {"port": numbers[0]},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }


def wait_running(core, namespace: str, names: list[str], timeout: float = 120) -> dict[str, str]:
    """Wait until these pods are ready; return their IPs by name."""
    deadline = time.monotonic() + timeout
    while True:
        ips = {}
        for name in names:
            pod = core.read_namespaced_pod(name, namespace)
            ready = [c for c in pod.status.conditions or [] if c.type == "Ready"]
            if ready and ready[0].status == "True" and pod.status.pod_ip:
                ips[name] = pod.status.pod_ip
        if len(ips) == len(names):
            return ips
        if time.monotonic() > deadline:
            states = {
                name: json.dumps(
                    core.read_namespaced_pod(name, namespace).status.to_dict(), default=str
                )[:600]
                for name in names
                if name not in ips
            }
            raise AssertionError(f"pods not ready after {timeout}s: {states}")
        time.sleep(0.5)


def run_in_pod(core, namespace: str, pod: str, command: list[str]) -> str:
    """Run a command in the pod's first container (the kubelet's exec, as `kubectl exec`)."""
    from kubernetes.stream import stream

    return stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        namespace,
        command=command,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )


def connect(core, namespace: str, pod: str, address: str, port: int, timeout: float = 3) -> str:
    """Try a TCP connection from inside the pod: "open", "refused" or "timeout"."""
    output = run_in_pod(
        core, namespace, pod, ["python3", "-c", PROBE, address, str(port), str(timeout)]
    )
    return output.strip()
