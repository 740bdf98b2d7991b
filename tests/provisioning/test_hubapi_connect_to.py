"""The portal reaches hubs' APIs at one address (HUB_API_CONNECT_TO: an ingress controller's
in-cluster Service) while each request keeps the hub's name: in the Host header the ingress
routes by, in the TLS server name, and in the certificate check. A real HTTPS server on this
machine stands for the ingress, with a certificate from a CA of the test's own."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from provisioning.hubapi import HubApiError, HubServers

HUB = "course.hubs.example.org"


def _certificate(
    subject: str, issuer_key, issuer: str, key, ca: bool, names=()
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[dict]:
    """An HTTPS server for *.hubs.example.org on 127.0.0.1 that answers with the Host it got."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test ingress CA", ca_key, "test ingress CA", ca_key, ca=True)
    leaf = _certificate("ingress", ca_key, "test ingress CA", key, False, ["*.hubs.example.org"])
    (tmp_path / "ca.crt").write_bytes(_pem(ca))
    (tmp_path / "tls.crt").write_bytes(_pem(leaf))
    (tmp_path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _certificate("another CA", other_key, "another CA", other_key, ca=True)
    (tmp_path / "other-ca.crt").write_bytes(_pem(other))

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(
                {
                    "items": [{"name": self.headers["Host"], "servers": {}}],
                    "_pagination": {"next": None},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {
        "address": f"127.0.0.1:{server.server_port}",
        "ca": str(tmp_path / "ca.crt"),
        "other_ca": str(tmp_path / "other-ca.crt"),
    }
    server.shutdown()


def _host_seen(servers: HubServers) -> str:
    """The Host header the ingress received for the hub's users list."""
    response = servers.session.get(f"{servers.api_url}/users", verify=servers.session.verify)
    response.raise_for_status()
    return response.json()["items"][0]["name"]


def test_requests_go_to_the_address_with_the_hubs_name_and_its_certificate_checked(
    ingress, monkeypatch
):
    # The system's CA file in the environment does not replace the hubs' CA (requests would
    # otherwise prefer REQUESTS_CA_BUNDLE to the session's own).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ingress["other_ca"])
    servers = HubServers(
        f"https://{HUB}/hub/api", "token", verify=ingress["ca"], connect_to=ingress["address"]
    )
    assert _host_seen(servers) == HUB
    assert servers.running() == []  # the portal's own calls go the same way


def test_a_certificate_from_another_ca_is_refused(ingress):
    servers = HubServers(
        f"https://{HUB}/hub/api", "token", verify=ingress["other_ca"], connect_to=ingress["address"]
    )
    with pytest.raises(HubApiError, match="did not answer"):
        servers.running()


def test_a_name_the_certificate_does_not_cover_is_refused(ingress):
    """The check is of the hub's name, not of the address connected to."""
    servers = HubServers(
        "https://course.elsewhere.example/hub/api",
        "token",
        verify=ingress["ca"],
        connect_to=ingress["address"],
    )
    with pytest.raises(HubApiError, match="did not answer"):
        servers.running()


def test_an_address_that_is_not_host_and_port_is_refused():
    with pytest.raises(ValueError, match="host:port"):
        HubServers(f"https://{HUB}/hub/api", "token", connect_to="ingress.example")
