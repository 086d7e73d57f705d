"""Wires the engine to a loopback fleet: shared by tests, the demo, benchmarks."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from agent_update.rollout.model import EngineSettings, Server, Update
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service

if TYPE_CHECKING:
    from agent_update.testing.fleet import Fleet
    from agent_update.testing.model import FleetHost

PASSWORD_VAR = "HOST_PASSWORD"  # noqa: S105 (a variable name: `--agent-password-env` reads it)


def fleet_servers(fleet: Fleet, server_type: str = "Server") -> list[Server]:
    """One registry entry per fleet host, with its SSH and agent details."""
    return [
        Server(
            name=host.name,
            host=host.address,
            server_type=server_type,
            ssh_port=host.ssh_port,
            ssh_user=host.ssh_user,
            agent_user=host.agent_user,
            agent_dir=host.agent_dir,
            agent_url=host.agent_url,
            agent_password=host.agent_password,
        )
        for host in fleet.hosts
    ]


def fleet_settings(fleet: Fleet, workdir: Path, **overrides: object) -> EngineSettings:
    """Settings that trust exactly the fleet's host keys, with quick polling."""
    values: dict[str, object] = {
        "ssh_private_key": fleet.client_key,
        "known_hosts": fleet.known_hosts,
        "git_cache_dir": str(workdir / "git-cache"),
        "poll_interval": 0.1,
        "probe_timeout": 3.0,
        "connect_timeout": 5.0,
        "lease_ttl": 20.0,
        "default_repo": fleet.upstream_url,
        "default_branch": fleet.branch,
    }
    values.update(overrides)
    return EngineSettings(**values)  # type: ignore[arg-type]


FLEET_MIN_HEALTHY = 1.0  # seconds: the rule still holds, without 10 s per row in every test


def fleet_update(commit: str = "", **overrides: object) -> Update:
    """An update with timeouts sized for the loopback fleet (seconds, not minutes).

    Tests about the minimum healthy time pass ``min_healthy_time`` (the
    default: ``Update().min_healthy_time``) themselves.
    """
    values: dict[str, object] = {
        "commit": commit,
        "startup_timeout": 15.0,
        "command_timeout": 60.0,
        "failed_command_grace": 4.0,
        "min_healthy_time": FLEET_MIN_HEALTHY,
    }
    values.update(overrides)
    return Update(**values)  # type: ignore[arg-type]


def fleet_service(
    fleet: Fleet, workdir: Path, *, settings: EngineSettings | None = None, **kwargs: object
) -> Service:
    """A Service over a fresh SQLite store whose registry lists the fleet."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(workdir / "store.db")
    for server in fleet_servers(fleet):
        store.save_server(server)
    return Service(store, settings or fleet_settings(fleet, workdir), **kwargs)  # type: ignore[arg-type]


def write_cli_settings(fleet: Fleet, path: Path) -> Path:
    """A settings file for `agent-update` that trusts exactly the fleet's host keys."""
    settings = {
        "ssh_private_key_file": str(fleet.client_key_path),
        "known_hosts_file": str(fleet.known_hosts_path),
        "default_repo": fleet.upstream_url,
        "default_branch": fleet.branch,
        "git_cache_dir": str(path.parent / "git"),
        "poll_interval": 0.1,
    }
    path.write_text(json.dumps(settings))
    return path


def server_add_args(host: FleetHost) -> list[str]:
    """`server-add` for one fleet host; its password comes from ``PASSWORD_VAR``."""
    return [
        "server-add",
        host.name,
        "--host",
        host.address,
        "--ssh-port",
        str(host.ssh_port),
        "--ssh-user",
        host.ssh_user,
        "--agent-user",
        host.agent_user,
        "--agent-dir",
        host.agent_dir,
        "--agent-url",
        host.agent_url,
        "--agent-password-env",
        PASSWORD_VAR,
    ]


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll until ``predicate`` returns something true (returned), bounded in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
