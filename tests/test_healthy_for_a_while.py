"""Healthy means healthy for a while; rollback goes to what the server really ran.

On the loopback fleet. A web that answers /ping and /version on the target
and dies ~3 s after each start (supervisor restarts it forever, never
FATAL) was reported Success by the old code after one healthy probe; with
the DEFAULT settings it must now be rolled back. The rollback commit is
decided when the row starts, from the commit its programs run, never the
commit the row failed on.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent_update.rollout.model import Row, RowStatus, Update, UpdateStatus
from agent_update.testing.harness import fleet_service, fleet_update, wait_for

pytestmark = pytest.mark.fleet
_counter = itertools.count()
DEFAULTS = Update()
BOUND = 120.0  # seconds a rollout here may take


@pytest.fixture
def reset(fleet):
    fleet.reset()
    yield fleet
    fleet.reset()


class Clock:
    """Listener: when the row's command ended and when it first failed."""

    def __init__(self) -> None:
        self.command_ended: float | None = None
        self.failed: float | None = None

    def __call__(self, name: str, row: Row | None, update: object) -> None:
        if row is None:
            return
        if self.command_ended is None and row.command_ended_at is not None:
            self.command_ended = row.command_ended_at
        if self.failed is None and row.status in (RowStatus.ROLLING_BACK, RowStatus.FAILURE):
            self.failed = time.time()


def one_host_service(fleet, tmp_path: Path, **kw):
    service = fleet_service(fleet, tmp_path / f"svc{next(_counter)}", **kw)
    keep = fleet.hosts[0].name
    for server in service.store.list_servers():
        if server.name != keep:
            service.store.save_server(replace(server, status="Archived"))
    return service


def plan(service, update: Update) -> str:
    name = service.create(update).name
    planned = service.build_plan(name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    return name


def drive(service, name: str):
    service.start(name)
    final = service.drive(name, timeout=BOUND)
    (row,) = service.store.get_rows(name)
    return final, row


def stable_pid(fleet, host, program: str, seconds: float) -> int:
    """The program's pid, checked unchanged and RUNNING for ``seconds``."""
    first = fleet.program_states(host)[program]
    assert first[0] == "RUNNING", first
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert fleet.program_states(host)[program] == first, f"{program} restarted"
        time.sleep(0.2)
    return int(first[1])


def test_a_web_dying_seconds_after_each_start_is_rolled_back_by_default(reset, tmp_path):
    fleet = reset
    host = fleet.hosts[0]
    clock = Clock()
    service = one_host_service(fleet, tmp_path, listener=clock)
    # The update exactly as `create` makes it: every verdict setting at its default.
    final, row = drive(service, plan(service, Update(commit=fleet.commits.dieloop)))
    seconds = clock.failed - clock.command_ended if clock.failed and clock.command_ended else -1
    print(f"\ndie loop: verdict {seconds:.1f} s after the command ended; {row.reason}")
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert final.status is UpdateStatus.FAILURE
    assert "agent:web" in row.reason, row.reason
    assert 0 <= seconds < DEFAULTS.min_healthy_time + DEFAULTS.verdict_window
    # What the host runs: the old commit, and its web keeps one pid past the 3 s.
    assert fleet.checked_out_commit(host) == fleet.commits.base
    assert fleet.reported_commit(host) == fleet.commits.base
    assert fleet.running_commit(host) == fleet.commits.base
    stable_pid(fleet, host, "agent:web", 5.0)


def test_healthy_succeeds_after_the_minimum_and_names_the_old_code(reset, tmp_path):
    fleet = reset
    host = fleet.hosts[0]
    workers_before = {
        name: pid
        for name, (_, pid) in fleet.program_states(host).items()
        if name.startswith("agent:worker-")
    }
    service = one_host_service(fleet, tmp_path)
    update = fleet_update(fleet.commits.good, min_healthy_time=DEFAULTS.min_healthy_time)
    assert not update.restart_rq  # the default: workers keep running the old code
    final, row = drive(service, plan(service, update))
    assert final.status is UpdateStatus.SUCCESS, row.log
    assert row.status is RowStatus.SUCCESS, row.log
    took = row.ended_at - row.started_at
    print(f"\nhealthy: Success {took:.1f} s after the row started ({row.reason})")
    assert took >= DEFAULTS.min_healthy_time  # the web restarted after the row started
    assert fleet.running_commit(host) == fleet.commits.good
    # The workers were not asked to restart: the row says they still run the old code.
    assert workers_before
    for name, pid in workers_before.items():
        assert fleet.program_states(host)[name] == ("RUNNING", pid)
        assert f"{name} (pid {pid})" in row.reason, row.reason
    assert row.reason.startswith("still running the code from before the update")
    assert "agent:web" not in row.reason


def test_rollback_goes_to_what_an_earlier_update_installed(reset, tmp_path):
    fleet = reset
    host = fleet.hosts[0]
    service = one_host_service(fleet, tmp_path)
    # Both planned while the host ran base.
    first = plan(service, fleet_update(fleet.commits.good))
    second = plan(service, fleet_update(fleet.commits.crash))
    final, row = drive(service, first)
    assert row.status is RowStatus.SUCCESS, row.log
    final, row = drive(service, second)
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert row.rollback_commit == fleet.commits.good, row.log
    assert final.status is UpdateStatus.FAILURE
    # The first update is not undone: good is checked out and runs.
    assert fleet.checked_out_commit(host) == fleet.commits.good
    assert fleet.running_commit(host) == fleet.commits.good


def test_a_checkout_on_the_target_without_restart_rolls_back_to_what_ran(reset, tmp_path):
    fleet = reset
    host = fleet.hosts[0]
    # Programs up a while, then the checkout moves to the (failing) target, nothing restarts.
    wait_for(lambda: _web_uptime(fleet, host) >= 2, 60, "web up 2 s")
    fleet.move_checkout(host, fleet.commits.crash)
    assert fleet.running_commit(host) == fleet.commits.base
    service = one_host_service(fleet, tmp_path)
    name = plan(service, fleet_update(fleet.commits.crash))
    planned = service.store.get_rows(name)[0]
    assert planned.status is RowStatus.PENDING and planned.current_commit == fleet.commits.crash
    final, row = drive(service, name)
    assert row.rollback_commit == fleet.commits.base, row.log
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert final.status is UpdateStatus.FAILURE
    assert fleet.checked_out_commit(host) == fleet.commits.base
    assert fleet.running_commit(host) == fleet.commits.base


def _web_uptime(fleet, host) -> float:
    """Seconds the web process has run, from /proc (the fleet runs on this machine)."""
    state, pid = fleet.program_states(host)["agent:web"]
    if state != "RUNNING" or pid is None:
        return 0.0
    boot = float(Path("/proc/uptime").read_text().split()[0])
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return boot - int(after_name[19]) / os.sysconf("SC_CLK_TCK")
