"""A server registered by its IPv6 address, end to end: SSH to [::1] with the
host key looked up as ``[::1]:PORT``, the agent reached at ``http://[::1]:P``,
and a real rollout verified on what the host runs.

The loopback host's own sshd config is started a second time on [::1] (same
host key, same user); its agent is reached through a small TCP relay on [::1].
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from agent_update.rollout.model import RowStatus, Server, UpdateStatus
from agent_update.testing import sshd
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update

pytestmark = pytest.mark.fleet


def free_v6_port() -> int:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        return probe.getsockname()[1]


def relay(listen_port: int, target: tuple[str, int], stop: threading.Event) -> None:
    """Accept on [::1]:listen_port and pipe each connection to ``target`` (bounded by ``stop``)."""
    server = socket.socket(socket.AF_INET6)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("::1", listen_port))
    server.listen(16)
    server.settimeout(0.2)

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    while not stop.is_set():
        try:
            client, _ = server.accept()
        except TimeoutError:
            continue
        upstream = socket.create_connection(target, timeout=10)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()
    server.close()


@pytest.fixture
def v6_host(fleet, tmp_path):
    """(ssh port, agent port) of the fleet's first host, reached on [::1]."""
    host = fleet.hosts[0]
    home = Path(host.agent_dir).parent
    ssh_port, agent_port = free_v6_port(), free_v6_port()
    config = (home / "sshd_config").read_text()
    lines = [
        f"ListenAddress [::1]:{ssh_port}" if line.startswith("ListenAddress") else line
        for line in config.splitlines()
        if not line.startswith("PidFile")
    ]
    files = sshd.SshdFiles(
        config=tmp_path / "sshd_config",
        host_key=home / "ssh_host_ed25519_key",
        authorized_keys=home / "authorized_keys",
        log=tmp_path / "sshd.log",
    )
    files.config.write_text("\n".join([*lines, f"PidFile {tmp_path / 'sshd.pid'}"]) + "\n")
    proc = sshd.start(files)
    stop = threading.Event()
    agent = host.agent_url.removeprefix("http://").split(":")
    thread = threading.Thread(
        target=relay, args=(agent_port, (agent[0], int(agent[1])), stop), daemon=True
    )
    thread.start()
    try:
        deadline = 50
        while deadline:
            with contextlib.suppress(OSError), socket.create_connection(("::1", ssh_port), 0.2):
                break
            deadline -= 1
            threading.Event().wait(0.1)
        yield host, ssh_port, agent_port
    finally:
        stop.set()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        thread.join(5)


def test_a_rollout_to_a_server_registered_by_its_ipv6_address(fleet, tmp_path, v6_host):
    fleet.reset()
    host, ssh_port, agent_port = v6_host
    public = next(
        line.split(None, 1)[1]
        for line in fleet.known_hosts.splitlines()
        if line.startswith(f"[{host.address}]:{host.ssh_port} ")
    )
    settings = fleet_settings(fleet, tmp_path, known_hosts=f"[::1]:{ssh_port} {public}\n")
    service = fleet_service(fleet, tmp_path / "v6", settings=settings)
    for server in service.store.list_servers():  # only the IPv6 entry: one machine, one name
        service.store.save_server(dataclasses.replace(server, status="Archived"))
    v6 = Server(
        name="v6",
        host="[::1]",
        ssh_port=ssh_port,
        ssh_user=host.ssh_user,
        agent_user=host.agent_user,
        agent_dir=host.agent_dir,
        agent_url=f"http://[::1]:{agent_port}",
        agent_password=host.agent_password,
    )
    service.store.save_server(v6)
    assert service.store.get_server("v6").host == "::1"  # stored bare
    update = service.create(fleet_update(fleet.commits.good))
    planned = service.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    service.start(update.name)
    final = service.drive(update.name, timeout=120)
    (row,) = service.store.get_rows(update.name)
    assert final.status is UpdateStatus.SUCCESS and row.status is RowStatus.SUCCESS, row.log
    assert fleet.running_commit(host) == fleet.commits.good
