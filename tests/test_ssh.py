"""SSH against the loopback fleet's real sshd (see agent_update.testing)."""

from __future__ import annotations

import io
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from agent_update.remote.ssh import (
    OUTPUT_LIMIT,
    HostKeyError,
    SshAuthError,
    SshConnectError,
    SshCredentials,
    SshError,
    SshSession,
    SshTarget,
    load_private_key,
    parse_known_hosts,
    run,
)
from agent_update.rollout.errors import ValidationError
from agent_update.testing import Fleet

pytestmark = pytest.mark.fleet


def target(fleet: Fleet, i: int = 0) -> SshTarget:
    host = fleet.hosts[i]
    return SshTarget(host.address, host.ssh_port, host.ssh_user)


def creds(fleet: Fleet, known_hosts: str | None = None, key: str | None = None) -> SshCredentials:
    return SshCredentials(
        private_key=fleet.client_key if key is None else key,
        known_hosts=fleet.known_hosts if known_hosts is None else known_hosts,
    )


def known_line(fleet: Fleet, i: int) -> str:
    name = target(fleet, i).known_hosts_name
    return next(line for line in fleet.known_hosts.splitlines() if line.split()[0] == name)


def new_key_text(tmp_path: Path, kind: str = "ed25519") -> str:
    path = tmp_path / f"key_{kind}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True, timeout=30
    )
    return path.read_text()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_echo_exit_codes_and_session_reuse(fleet: Fleet) -> None:
    with SshSession(target(fleet), creds(fleet)) as ssh:
        result = ssh.run("echo hi", timeout=10)
        assert (result.exit_code, result.output, result.timed_out) == (0, "hi\n", False)
        assert result.ok and result.duration < 5
        assert ssh.run("exit 3", timeout=10).exit_code == 3
        mixed = ssh.run("echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c; exit 1", timeout=10)
        assert mixed.output == "a\nb\nc\n" and mixed.exit_code == 1 and not mixed.ok


def test_module_run_one_off(fleet: Fleet) -> None:
    result = run(target(fleet, 1), creds(fleet), "printf '%s' \"$USER\"", timeout=10)
    assert result.exit_code == 0
    assert result.output == fleet.hosts[1].ssh_user


def test_timeout_closes_channel_promptly(fleet: Fleet) -> None:
    started = time.monotonic()
    result = run(target(fleet), creds(fleet), "echo started; sleep 5", timeout=1)
    assert result.timed_out and result.exit_code is None
    assert result.output == "started\n"
    assert 0.9 < result.duration < 2 and time.monotonic() - started < 3


def test_output_keeps_the_tail(fleet: Fleet) -> None:
    command = "head -c 300000 /dev/zero | tr '\\0' x; echo; echo END"
    result = run(target(fleet), creds(fleet), command, timeout=20)
    assert result.exit_code == 0
    assert len(result.output) == OUTPUT_LIMIT
    assert result.output.endswith("x\nEND\n")


def test_other_hosts_key_under_this_name_is_refused(fleet: Fleet) -> None:
    name = target(fleet, 0).known_hosts_name
    other_key = known_line(fleet, 1).split(maxsplit=1)[1]
    with pytest.raises(HostKeyError) as info:
        run(target(fleet), creds(fleet, known_hosts=f"{name} {other_key}\n"), "true", timeout=5)
    assert name in str(info.value) and "known hosts" in str(info.value)


@pytest.mark.parametrize("text", ["", "# nothing\n", "[127.0.0.99]:22 ssh-ed25519 AAAA\n"])
def test_unknown_host_is_refused(fleet: Fleet, text: str) -> None:
    with pytest.raises(HostKeyError) as info:
        run(target(fleet), creds(fleet, known_hosts=text), "true", timeout=5)
    assert target(fleet).known_hosts_name in str(info.value)
    assert "must list it" in str(info.value)


def test_hashed_known_hosts_work(fleet: Fleet, tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(known_line(fleet, 0) + "\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, timeout=30)
    hashed = path.read_text()
    assert hashed.startswith("|1|")
    assert run(target(fleet), creds(fleet, known_hosts=hashed), "echo ok", timeout=10).ok


def test_wrong_client_key_is_an_auth_error(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(SshAuthError) as info:
        run(target(fleet), creds(fleet, key=new_key_text(tmp_path)), "true", timeout=5)
    assert str(target(fleet)) in str(info.value)


def test_unreadable_key_is_an_auth_error(fleet: Fleet) -> None:
    for bad in ["", "not a key"]:
        with pytest.raises(SshAuthError):
            run(target(fleet), creds(fleet, key=bad), "true", timeout=5)


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_key_types_load_from_text(tmp_path: Path, kind: str) -> None:
    key = load_private_key(new_key_text(tmp_path, kind))
    assert key.get_name().startswith(
        {"ed25519": "ssh-ed25519", "rsa": "ssh-rsa"}.get(kind, "ecdsa")
    )
    pem = io.StringIO()
    paramiko.RSAKey.generate(2048).write_private_key(pem)  # legacy PEM format
    assert load_private_key(pem.getvalue()).get_name() == "ssh-rsa"


def test_closed_port_is_a_connect_error_fast(fleet: Fleet) -> None:
    started = time.monotonic()
    with pytest.raises(SshConnectError):
        run(SshTarget("127.0.0.1", closed_port(), "root"), creds(fleet), "true", timeout=5)
    assert time.monotonic() - started < 1


def test_non_ssh_server_is_a_connect_error(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    started = time.monotonic()
    with pytest.raises(SshConnectError):
        run(
            SshTarget(host.address, host.agent_port, host.ssh_user),
            creds(fleet),
            "true",
            timeout=5,
            connect_timeout=1,
        )
    assert time.monotonic() - started < 3


def test_errors_are_typed_and_targets_validated() -> None:
    for cls in (HostKeyError, SshAuthError, SshConnectError):
        assert issubclass(cls, SshError)
    for args in [("", 22, "u"), ("h", 0, "u"), ("h", 22, ""), ("a b", 22, "u"), ("h", 22, "u@x")]:
        with pytest.raises(ValidationError):
            SshTarget(*args)
    assert SshTarget("h").known_hosts_name == "h"
    assert SshTarget("h", 2222).known_hosts_name == "[h]:2222"
    assert "private_key" not in repr(SshCredentials("SECRET", ""))
    assert parse_known_hosts("garbage\nx y z\n").keys() == []
