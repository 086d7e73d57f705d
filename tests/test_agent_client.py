"""The agent HTTP client against a real tiny HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent_update.remote.agent_client import (
    AgentAuthError,
    AgentClient,
    AgentEndpoint,
    AgentError,
    AgentProtocolError,
    AgentUnreachable,
    ping,
    services_healthy,
    version,
)
from agent_update.rollout.errors import AgentUpdateError, ValidationError

SHA = "0123456789abcdef0123456789abcdef01234567"
PASSWORD = "s3cret"
SERVICES = {"web": "RUNNING", "redis": "RUNNING", "worker": {"0": "RUNNING"}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, to check connection reuse
    peers: set[tuple[str, int]] = set()

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        Handler.peers.add(self.client_address)
        mode, _, endpoint = self.path.strip("/").partition("/")
        if self.headers.get("Authorization") != f"bearer {PASSWORD}":
            return self._send(401, b'{"error": "unauthorized"}')
        if mode == "slow":
            time.sleep(2)
        if mode == "garbage":
            return self._send(200, b"<html>oops</html>")
        if mode == "list":
            return self._send(200, b"[1, 2]")
        if mode == "gateway":
            return self._send(502, b"bad gateway")
        if mode == "missing":
            return self._send(404, b"not found")
        if endpoint == "ping":
            message = "pong" if mode != "notpong" else "ping?"
            return self._send(200, json.dumps({"message": message}).encode())
        if endpoint == "version":
            commit = SHA.upper() if mode != "badcommit" else 42
            return self._send(200, json.dumps({"commit": commit, "services": SERVICES}).encode())
        return self._send(404, b"{}")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that gave up (the timeout test) are expected


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def ep(base: str, mode: str = "ok", password: str = PASSWORD) -> AgentEndpoint:
    return AgentEndpoint(f"{base}/{mode}", password)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ping_and_version(base: str) -> None:
    assert ping(ep(base), timeout=2) is True
    info = version(ep(base), timeout=2)
    assert info.commit == SHA
    assert info.services == SERVICES
    assert info.raw["commit"] == SHA.upper()


def test_ping_false_when_not_pong_or_not_up(base: str) -> None:
    assert ping(ep(base, "notpong"), timeout=2) is False
    assert ping(ep(base, "garbage"), timeout=2) is False
    assert ping(ep(base, "gateway"), timeout=2) is False
    assert ping(AgentEndpoint(f"http://127.0.0.1:{closed_port()}", PASSWORD), timeout=2) is False


def test_wrong_password_raises_auth_error(base: str) -> None:
    with pytest.raises(AgentAuthError, match="401"):
        version(ep(base, password="nope"), timeout=2)
    with pytest.raises(AgentAuthError):
        ping(ep(base, password="nope"), timeout=2)


@pytest.mark.parametrize("mode", ["garbage", "list", "badcommit", "missing"])
def test_bad_answers_are_protocol_errors(base: str, mode: str) -> None:
    with pytest.raises(AgentProtocolError):
        version(ep(base, mode), timeout=2)


def test_gateway_error_is_unreachable(base: str) -> None:
    with pytest.raises(AgentUnreachable, match="502"):
        version(ep(base, "gateway"), timeout=2)


def test_slow_agent_times_out(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(AgentUnreachable) as info:
        version(ep(base, "slow"), timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert "/slow/version" in str(info.value)


def test_closed_port_is_unreachable_fast() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(AgentUnreachable) as info:
        version(AgentEndpoint(url, PASSWORD), timeout=5)
    assert time.monotonic() - started < 1
    assert url in str(info.value)
    assert isinstance(info.value, AgentError) and isinstance(info.value, AgentUpdateError)


def test_password_not_in_repr_or_errors(base: str) -> None:
    endpoint = ep(base, password="hunter2-very-secret")
    assert "hunter2" not in repr(endpoint)
    with pytest.raises(AgentAuthError) as info:
        version(endpoint, timeout=2)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("url", ["", "ftp://h/x", "127.0.0.1:80", "http://", "https://u:p@h/x"])
def test_endpoint_url_validated(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        AgentEndpoint(url, PASSWORD)
    assert info.value.field == "agent_url"


def test_client_reuses_connections_per_thread_and_is_thread_safe(base: str) -> None:
    client = AgentClient(timeout=2)
    Handler.peers.clear()
    for _ in range(5):
        assert client.ping(ep(base))
    assert len(Handler.peers) == 1  # one keep-alive connection for this thread
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: client.version(ep(base)).commit, range(64)))
    assert results == [SHA] * 64
    assert len(Handler.peers) <= 1 + 8
    client.close()


def test_services_healthy() -> None:
    assert services_healthy(SERVICES) == (True, "3 services running")
    assert services_healthy({}) == (True, "no services reported")
    nested = {"web": "RUNNING", "worker": {"0": "RUNNING", "1": "STOPPED"}, "redis": "FATAL"}
    ok, reason = services_healthy(nested)
    assert not ok and "worker.1 is 'STOPPED'" in reason and "redis is 'FATAL'" in reason
    assert services_healthy(nested, keys=["web"]) == (True, "1 services running")
    ok, reason = services_healthy(nested, keys=["web", "worker_backup"])
    assert not ok and "worker_backup not reported" in reason
    assert not services_healthy({"web": None})[0]
