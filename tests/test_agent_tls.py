"""TLS to an agent is always verified: by the system's CAs, or a private CA's bundle."""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent_update.remote.agent_client import AgentEndpoint, AgentUnreachable
from agent_update.remote.connector import SshConnector
from agent_update.rollout import rules
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import EngineSettings, Server
from agent_update.testing import ports

ADDRESS = "127.0.0.7"


def _cert(subject: str, issuer_key, issuer_name, key, *, ca: bool, ip: str = ""):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """An HTTPS agent on loopback whose certificate a private CA signed."""
    root = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent_update test CA")])
    ca = _cert("agent_update test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(ADDRESS, ca_key, ca_name, key, ca=False, ip=ADDRESS)
    (root / "ca.pem").write_bytes(_pem(ca))
    (root / "cert.pem").write_bytes(_pem(cert))
    (root / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {"message": "pong"} if self.path.endswith("/ping") else {"commit": "a" * 40}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return None

    (port,) = ports.free_ports(ADDRESS, 1)
    server = http.server.ThreadingHTTPServer((ADDRESS, port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(root / "cert.pem", root / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://{ADDRESS}:{port}/agent", root / "ca.pem"
    server.shutdown()
    server.server_close()


def _connector(ca_file: str = "") -> SshConnector:
    return SshConnector(EngineSettings(agent_ca_file=ca_file, probe_timeout=3))


def test_a_private_ca_bundle_is_trusted_when_set(agent):
    url, ca = agent
    connector = _connector(str(ca))
    endpoint = connector.endpoint(Server(name="s", host=ADDRESS, agent_url=url, agent_password="p"))
    assert connector.agent.ping(endpoint) is True
    assert connector.agent.version(endpoint).commit == "a" * 40


def test_without_the_bundle_the_certificate_is_refused(agent):
    url, _ = agent
    connector = _connector()
    endpoint = AgentEndpoint(url, "p")
    assert connector.agent.ping(endpoint) is False
    with pytest.raises(AgentUnreachable) as err:
        connector.agent.version(endpoint)
    assert "certificate verify failed" in str(err.value)


def test_a_missing_bundle_file_is_refused_naming_the_setting(tmp_path: Path):
    with pytest.raises(ValidationError) as err:
        rules.validate_settings(EngineSettings(agent_ca_file=str(tmp_path / "none.pem")))
    assert err.value.field == "agent_ca_file"
