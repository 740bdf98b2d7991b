"""The local cluster's ingress controller: terminates TLS for `*.<HUBS_DOMAIN>` and forwards
each connection, by the Host header of its first request, to the Service that an Ingress of
this controller's class names for that host. Python's standard library only, so it runs in
the cluster's base image; started by devcluster/scripts/node.sh as a pod on the real node.

A connection is routed once, by its first request, then both directions are copied as they
are: WebSockets (the notebook's kernel channels) and keep-alive work without parsing more.
Browsers open a connection per host, so one connection carries one hub's requests.

Only what a hub's portal-rendered Ingress says is served: a host claimed by two Ingresses is
served by neither (no namespace can take over another's address), and an unknown host gets
404 without reaching any pod.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import ssl
import sys
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
INGRESS_CLASS = os.environ.get("INGRESS_CLASS", "devcluster")
LISTEN_PORT = int(os.environ.get("LISTEN_PORT", "8443"))
CERT_DIR = os.environ.get("CERT_DIR", "/etc/ingress/tls")
REFRESH_SECONDS = 2
HEAD_TIMEOUT_SECONDS = 30
MAX_HEAD_BYTES = 64 * 1024

routes: dict[str, tuple[str, int]] = {}


def _api(path: str) -> dict:
    api = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    with open(f"{ACCOUNT}/token") as token:
        request = urllib.request.Request(
            api + path, headers={"Authorization": "Bearer " + token.read().strip()}
        )
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        return json.load(answer)


def read_routes() -> dict[str, tuple[str, int]]:
    """Host -> (Service address, port) from every Ingress of this class."""
    services = {}
    for service in _api("/api/v1/services")["items"]:
        meta, spec = service["metadata"], service["spec"]
        ports = {p.get("name", ""): p["port"] for p in spec.get("ports", [])}
        ports.update({str(p["port"]): p["port"] for p in spec.get("ports", [])})
        services[meta["namespace"], meta["name"]] = (spec.get("clusterIP"), ports)
    found, claims = {}, collections.Counter()
    for ingress in _api("/apis/networking.k8s.io/v1/ingresses")["items"]:
        spec, namespace = ingress["spec"], ingress["metadata"]["namespace"]
        if spec.get("ingressClassName") != INGRESS_CLASS:
            continue
        for rule in spec.get("rules", []):
            host, paths = rule.get("host"), rule.get("http", {}).get("paths", [])
            if not host:
                continue
            claims[host] += 1
            # What the portal renders: one path, the whole site, to one Service.
            if len(paths) != 1 or paths[0].get("path", "/") != "/":
                continue
            backend = paths[0].get("backend", {}).get("service", {})
            port = backend.get("port", {})
            address, ports = services.get((namespace, backend.get("name")), (None, {}))
            number = ports.get(str(port.get("number") or port.get("name") or ""))
            if address and address != "None" and number:
                found[host.lower()] = (address, number)
    return {host: target for host, target in found.items() if claims[host] == 1}


async def refresh_routes() -> None:
    global routes
    while True:
        try:
            routes = await asyncio.to_thread(read_routes)
        except Exception as error:  # keep the last routes while the API server is away
            print(f"ingress: could not read Ingresses: {error!r}", file=sys.stderr, flush=True)
        await asyncio.sleep(REFRESH_SECONDS)


def _host(head: bytes) -> str:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            host = value.strip().decode("latin-1").lower()
            return host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return ""


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _answer(writer: asyncio.StreamWriter, status: str, text: str) -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        writer.close()
        return
    target = routes.get(_host(head))
    if target is None:
        await _answer(writer, "404 Not Found", "No hub at this address.\n")
        return
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        await _answer(writer, "502 Bad Gateway", "The hub does not answer.\n")
        return
    upstream_writer.write(head)
    await asyncio.gather(_copy(reader, upstream_writer), _copy(upstream_reader, writer))


async def main() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(f"{CERT_DIR}/tls.crt", f"{CERT_DIR}/tls.key")
    refresher = asyncio.create_task(refresh_routes())
    server = await asyncio.start_server(
        handle, "0.0.0.0", LISTEN_PORT, ssl=context, limit=MAX_HEAD_BYTES
    )
    print(f"ingress: class {INGRESS_CLASS}, TLS on port {LISTEN_PORT}", flush=True)
    async with server:
        await server.serve_forever()
    refresher.cancel()


if __name__ == "__main__":
    asyncio.run(main())
