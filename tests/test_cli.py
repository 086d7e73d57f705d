"""`agent-update` end to end: registry, create, plan, run, status; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agent_update.testing.harness import PASSWORD_VAR, server_add_args, write_cli_settings

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
    write_cli_settings(fleet, tmp_path / "settings.json")
    host = fleet.hosts[0]
    env = {**os.environ, PASSWORD_VAR: host.agent_password}
    assert cli(tmp_path, "init").returncode == 0
    added = cli(tmp_path, *server_add_args(host), env=env)
    assert added.returncode == 0, added.stderr
    listed = cli(tmp_path, "server-list", "--json")
    assert host.agent_password not in listed.stdout
    assert json.loads(listed.stdout)[0]["agent_password"] is True  # set, not shown

    bad = cli(tmp_path, "create", "--branch", "master; id")
    assert bad.returncode == 5 and bad.stderr.startswith("agent-update: --branch:"), bad.stderr

    created = cli(
        tmp_path,
        "create",
        "--commit",
        fleet.commits.good2,
        "--startup-timeout",
        "15",
        "--command-timeout",
        "60",
        "--min-healthy-time",
        "2",
    )
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip()
    planned = cli(tmp_path, "plan", name, "--json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["status"] == "Pending"
    assert json.loads(planned.stdout)["min_healthy_time"] == 2
    ran = cli(tmp_path, "run", name, "--json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    assert result["status"] == "Success" and result["counts"] == {"Success": 1}
    assert result["rows"][0]["reported_commit"] == fleet.commits.good2
    assert "Success" in cli(tmp_path, "status", name).stdout
    assert fleet.running_commit(host) == fleet.commits.good2
    watched = cli(tmp_path, "status", name, "--watch", "--interval", "0.2")
    assert watched.returncode == 0 and "Success" in watched.stdout  # settled: returns at once

    again = cli(tmp_path, "pause", name)
    assert again.returncode == 5 and "Pause needs a Running update" in again.stderr
    assert again.stderr.count("\n") == 1
