"""`agent-update` end to end: registry, create, plan, run, status; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.fleet


def cli(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = [sys.executable, "-m", "agent_update.cli", "--db", str(tmp_path / "au.db")]
    settings = tmp_path / "settings.json"
    if settings.exists():
        base += ["--settings", str(settings)]
    return subprocess.run(
        [*base, *args], capture_output=True, text=True, timeout=180, env=env, check=False
    )


def test_a_rollout_from_the_command_line(fleet, tmp_path):
    fleet.reset()
    (tmp_path / "settings.json").write_text(
        json.dumps(
            {
                "ssh_private_key_file": str(fleet.client_key_path),
                "known_hosts_file": str(fleet.known_hosts_path),
                "default_repo": fleet.upstream_url,
                "default_branch": fleet.branch,
                "git_cache_dir": str(tmp_path / "git"),
                "poll_interval": 0.1,
            }
        )
    )
    host = fleet.hosts[0]
    env = {**os.environ, "HOST_PASSWORD": host.agent_password}
    added = cli(
        tmp_path,
        "server-add",
        host.name,
        "--host",
        host.address,
        "--ssh-port",
        str(host.ssh_port),
        "--ssh-user",
        host.ssh_user,
        "--agent-dir",
        host.agent_dir,
        "--agent-user",
        host.agent_user,
        "--agent-url",
        host.agent_url,
        "--agent-password-env",
        "HOST_PASSWORD",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    listed = cli(tmp_path, "servers")
    assert host.agent_password not in listed.stdout and '"***"' in listed.stdout

    bad = cli(tmp_path, "create", "--branch", "master; id")
    assert bad.returncode == 2 and "branch:" in bad.stderr

    created = cli(
        tmp_path,
        "create",
        "--commit",
        fleet.commits.good2,
        "--startup-timeout",
        "15",
        "--command-timeout",
        "60",
    )
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip()
    assert cli(tmp_path, "plan", name).returncode == 0
    ran = cli(tmp_path, "run", name)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "Success" in cli(tmp_path, "status", name).stdout
    assert fleet.running_commit(host) == fleet.commits.good2

    again = cli(tmp_path, "pause", name)
    assert again.returncode == 2 and "Pause needs a Running update" in again.stderr
