"""Repair on the loopback fleet: a crash-looping fleet back to its last good commit in one update.

Build Plan plans servers whose agent does not answer ("current commit
unknown"), the repair's precheck accepts programs that are not RUNNING, its
command restarts every agent program, and verification is the usual one.
Each test asserts what the hosts really run afterwards, not only statuses.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from agent_update import cli
from agent_update.rollout.model import RowStatus, UpdateStatus
from agent_update.testing.harness import fleet_service, fleet_update, wait_for, write_cli_settings

pytestmark = pytest.mark.fleet
STABLE_FOR = 4.0  # seconds of unchanged pids: a crashloop web lives 1.5 s


@pytest.fixture
def reset(fleet):
    fleet.reset()
    yield fleet
    fleet.reset()


def crash_looping(fleet, host) -> None:
    """Put ``host`` on the crashloop commit; return once its web has died at least once."""
    fleet.set_commit(host, fleet.commits.crashloop, wait=False)
    seen: set[int] = set()

    def died() -> bool:
        state, pid = fleet.program_states(host)["agent:web"]
        if pid:
            seen.add(pid)
        return len(seen) >= 2 or (bool(seen) and state != "RUNNING")

    wait_for(died, 20, f"{host.name}'s web to crash")


def only(service, names: set[str]) -> None:
    """Archive every registry entry but ``names``."""
    for server in service.store.list_servers():
        if server.name not in names:
            service.store.save_server(replace(server, status="Archived"))


def test_a_crash_looping_fleet_is_repaired_in_one_update(reset, tmp_path):
    fleet = reset
    good = fleet.commits.good
    for host in fleet.hosts:
        crash_looping(fleet, host)
    service = fleet_service(fleet, tmp_path)
    update = service.create(fleet_update(good, repair=True, lanes=len(fleet.hosts)))

    planned = service.build_plan(update.name)
    rows = service.store.get_rows(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    for row in rows:
        assert row.status is RowStatus.PENDING, row.reason
        assert row.reason.startswith("current commit unknown: agent: "), row.reason

    service.start(update.name)
    final = service.drive(update.name, timeout=240)
    rows = service.store.get_rows(update.name)
    assert final.status is UpdateStatus.SUCCESS, [(r.server, r.reason) for r in rows]
    assert all(r.status is RowStatus.SUCCESS for r in rows), [(r.server, r.reason) for r in rows]
    assert all("repair precheck: " in r.log for r in rows)

    before = {host.name: fleet.program_states(host) for host in fleet.hosts}
    time.sleep(STABLE_FOR)  # an observation window: a crash loop changes the web pid in it
    for host in fleet.hosts:
        states = fleet.program_states(host)
        assert states == before[host.name], f"{host.name}: {before[host.name]} -> {states}"
        assert all(state == "RUNNING" for state, _ in states.values()), states
        assert fleet.checked_out_commit(host) == good
        assert fleet.running_commit(host) == good  # what the web process read when it started
        assert fleet.version(host)["pid"] == states["agent:web"][1]


def test_a_down_program_fails_a_plain_update_and_a_repair_starts_it(reset, tmp_path):
    fleet = reset
    host = fleet.hosts[1]
    fleet.stop_program(host, "agent:worker-0")
    web_before = fleet.program_states(host)["agent:web"]
    service = fleet_service(fleet, tmp_path)
    only(service, {host.name})

    plain = service.create(fleet_update(fleet.commits.good))
    assert service.build_plan(plain.name).status is UpdateStatus.PENDING
    service.start(plain.name)
    service.drive(plain.name, timeout=120)
    (row,) = service.store.get_rows(plain.name)
    assert row.status is RowStatus.FAILURE, row.reason
    assert row.reason == "precheck: agent:worker-0 is STOPPED; nothing was changed"
    assert fleet.checked_out_commit(host) == fleet.commits.base  # unchanged behaviour
    assert fleet.program_states(host)["agent:web"] == web_before
    assert fleet.program_states(host)["agent:worker-0"][0] == "STOPPED"

    repair = service.create(fleet_update(fleet.commits.good, repair=True))
    assert service.build_plan(repair.name).status is UpdateStatus.PENDING
    service.start(repair.name)
    assert service.drive(repair.name, timeout=120).status is UpdateStatus.SUCCESS
    (row,) = service.store.get_rows(repair.name)
    assert row.status is RowStatus.SUCCESS, row.reason
    states = fleet.program_states(host)
    assert all(state == "RUNNING" for state, _ in states.values()), states
    assert states["agent:web"][1] != web_before[1]
    assert fleet.running_commit(host) == fleet.commits.good


def test_create_repair_from_the_command_line(fleet, tmp_path, capsys, monkeypatch):
    """`create --repair` stores the flag, `status` shows it; an unusable status command fails."""
    monkeypatch.chdir(tmp_path)
    settings = write_cli_settings(fleet, tmp_path / "settings.json")
    base = ["--db", str(tmp_path / "au.db"), "--settings", str(settings)]
    assert cli.run([*base, "init"]) == 0
    capsys.readouterr()
    commit = ["--commit", fleet.commits.good]
    assert cli.run([*base, "create", *commit, "--repair", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["repair"] is True
    assert cli.run([*base, "status", created["name"]]) == 0
    assert "(repair)" in capsys.readouterr().out.splitlines()[0]
    assert cli.run([*base, "create", *commit, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["repair"] is False

    data = json.loads(settings.read_text())
    settings.write_text(json.dumps({**data, "status_command": "supervisorctl status | cat"}))
    assert cli.run([*base, "create", *commit, "--repair"]) == 5
    err = capsys.readouterr().err
    assert err.startswith("agent-update: status_command: ") and "supervisorctl" in err, err
