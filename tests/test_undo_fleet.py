"""History, undo and the exit codes of `agent-update` on the loopback fleet.

Judged on the hosts: the commit each agent's programs really run, and the
pid of a host no rollout reached.
"""

from __future__ import annotations

import json

import pytest

from tests.test_waves_cli import TIMEOUTS, cli, registry

pytestmark = pytest.mark.fleet


def test_undo_takes_every_changed_server_back_and_history_shows_it(fleet, tmp_path):
    fleet.reset()
    hosts = fleet.hosts[:2]
    registry(fleet, tmp_path, hosts)
    name = cli(tmp_path, "create", "--commit", fleet.commits.good, "--lanes", "2", *TIMEOUTS)
    name = name.stdout.strip()
    assert cli(tmp_path, "plan", name).returncode == 0
    ran = cli(tmp_path, "run", name)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert all(fleet.running_commit(h) == fleet.commits.good for h in hosts)

    undone = cli(tmp_path, "undo", name)
    assert undone.returncode == 0, undone.stderr
    back = undone.stdout.strip()
    assert back and back != name
    assert f"2 servers back to {fleet.commits.base[:12]}" in undone.stderr
    assert cli(tmp_path, "status", back).stdout.split()[1] == "Pending"  # planned, not run
    assert all(fleet.running_commit(h) == fleet.commits.good for h in hosts)
    ran = cli(tmp_path, "run", back)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert all(fleet.running_commit(h) == fleet.commits.base for h in hosts)

    shown = cli(tmp_path, "history", hosts[0].name, "--json")
    entries = json.loads(shown.stdout)
    assert [(e["update"], e["before"], e["after"], e["status"]) for e in entries] == [
        (back, fleet.commits.good, fleet.commits.base, "Success"),
        (name, fleet.commits.base, fleet.commits.good, "Success"),
    ]
    listed = cli(tmp_path, "list", "--json")
    assert [u["name"] for u in json.loads(listed.stdout)] == [back, name]
    again = cli(tmp_path, "undo", back + "x")
    assert again.returncode == 4


def test_run_exits_7_when_a_wave_gate_pauses_after_a_failure(fleet, tmp_path):
    fleet.reset()
    hosts = fleet.hosts[:2]
    registry(fleet, tmp_path, hosts)
    untouched = fleet.program_states(hosts[1])["agent:web"][1]
    args = ("--commit", fleet.commits.crash, "--waves", "1", "--lanes", "2", *TIMEOUTS)
    name = cli(tmp_path, "create", *args).stdout.strip()
    assert cli(tmp_path, "plan", name).returncode == 0
    ran = cli(tmp_path, "run", name)
    assert ran.returncode == 7, ran.stdout + ran.stderr
    assert "paused (wave 1 ended with 0% success" in ran.stderr, ran.stderr
    first, second = hosts
    rows = {
        r["server"]: r for r in json.loads(cli(tmp_path, "status", name, "--json").stdout)["rows"]
    }
    assert rows[first.name]["status"] == "Rolled Back" and rows[second.name]["status"] == "Pending"
    assert fleet.running_commit(first) == fleet.commits.base  # rolled back for real
    assert fleet.program_states(second)["agent:web"][1] == untouched  # never touched
    aborted = cli(tmp_path, "abort", name)
    assert aborted.returncode == 0, aborted.stderr  # Aborted is what abort asks for
    watched = cli(tmp_path, "status", name, "--watch")
    assert watched.returncode == 7  # an Aborted rollout did not do everything asked
