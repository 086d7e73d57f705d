"""A scheduled start inside a maintenance window, approved by a second person,
for the servers a pattern and a tag select; and a rollout that waits outside
its window. Judged on the hosts: what each runs, and the pid of hosts no
rollout may touch.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timedelta

import pytest

from agent_update.rollout.store import SqliteStore
from tests.test_waves_cli import TIMEOUTS, base, cli, registry

pytestmark = pytest.mark.fleet


def web_pid(fleet, host) -> int:
    return fleet.program_states(host)["agent:web"][1]


def window_around_now(minutes_before: int, minutes_after: int) -> str:
    now = datetime.now()
    start, end = now - timedelta(minutes=minutes_before), now + timedelta(minutes=minutes_after)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_scheduled_approved_start_of_the_tagged_servers(fleet, tmp_path):
    fleet.reset()
    hosts = fleet.hosts[:3]
    registry(fleet, tmp_path, hosts)
    for host, tags in zip(hosts, ("eu, canary", "EU", "us"), strict=True):
        assert cli(tmp_path, "server-set", host.name, "--tags", tags).returncode == 0
    untouched = {h.name: web_pid(fleet, h) for h in hosts}
    start_at = datetime.now() + timedelta(hours=1)  # brought forward below: no clock race
    created = cli(
        tmp_path,
        "create",
        "--commit",
        fleet.commits.good,
        "--tag",
        "eu",
        "--servers",
        "host*",
        "--lanes",
        "2",
        "--require-approval",
        "--start-at",
        start_at.isoformat(timespec="seconds"),
        "--window",
        window_around_now(1, 30),
        *TIMEOUTS,
    )
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip()
    assert "Draft update of 2 servers" in created.stderr
    assert cli(tmp_path, "plan", name).returncode == 0

    asked = cli(tmp_path, "--user", "alice", "run", name, "--now")
    assert asked.returncode == 7 and "awaiting approval: alice asked" in asked.stderr
    own = cli(tmp_path, "--user", "alice", "approve", name)
    assert own.returncode == 5 and "another Agent Update Manager" in own.stderr
    approved = cli(tmp_path, "--user", "bob", "approve", name)
    assert approved.returncode == 0, approved.stderr
    assert "approved by bob; it starts when" in approved.stdout
    early = cli(tmp_path, "tick")
    assert early.returncode == 0 and "resumed: nothing" in early.stdout
    shown = cli(tmp_path, "status", name)
    assert "Pending" in shown.stdout.splitlines()[0] and "scheduled: starts at" in shown.stdout
    assert {h.name: web_pid(fleet, h) for h in hosts} == untouched  # nothing ran yet

    store = SqliteStore(tmp_path / "au.db")  # the hour has passed: its time has come
    store.save_update(store.get_update(name).copy(start_at=time.time() - 1), ["start_at"])
    store.close()
    ticked = cli(tmp_path, "tick")
    assert ticked.returncode == 0, ticked.stdout + ticked.stderr
    data = json.loads(cli(tmp_path, "status", name, "--json").stdout)
    assert data["status"] == "Success", data
    assert data["approved_by"] == "bob" and data["start_requested_by"] == "alice"
    assert [fleet.running_commit(h) for h in hosts[:2]] == [fleet.commits.good] * 2
    assert web_pid(fleet, hosts[2]) == untouched[hosts[2].name]  # "us": not selected


def test_outside_its_window_a_rollout_waits_saying_so(fleet, tmp_path):
    fleet.reset()
    host = fleet.hosts[0]
    registry(fleet, tmp_path, [host])
    before = web_pid(fleet, host)
    shut = window_around_now(-120, 180)  # opens in two hours
    args = ("--commit", fleet.commits.good, "--window", shut, *TIMEOUTS)
    name = cli(tmp_path, "create", *args).stdout.strip()
    assert cli(tmp_path, "plan", name).returncode == 0
    runner = subprocess.Popen(
        [*base(tmp_path), "run", name, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        shown = ""
        while time.monotonic() < deadline and "waiting: outside" not in shown:
            shown = cli(tmp_path, "status", name).stdout
            time.sleep(0.3)
        assert f"waiting: outside the maintenance window {shut}" in shown, shown
        time.sleep(2)
        assert runner.poll() is None and web_pid(fleet, host) == before  # waits, touches nothing
        store = SqliteStore(tmp_path / "au.db")  # the operator widens the window
        store.save_update(store.get_update(name).copy(window=window_around_now(1, 30)), ["window"])
        store.close()
        out, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 0, out + err
    assert fleet.running_commit(host) == fleet.commits.good
