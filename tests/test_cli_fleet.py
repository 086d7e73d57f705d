"""`agent-update run` on a real loopback fleet: it stays until the rollout settles
whoever holds the rows, and Ctrl-C (a real SIGINT) stops it cleanly.

Every test judges the end state on the hosts: the commit each agent reports
and the one its programs really run, against what its row says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from agent_update.rollout.model import RowStatus, Step, UpdateStatus
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update, wait_for

pytestmark = pytest.mark.fleet


class Setup:
    """A planned update over the whole fleet and the argv to drive it from outside."""

    def __init__(self, fleet, tmp_path, commit: str, lease_ttl: float, **update) -> None:
        fleet.reset()
        self.fleet = fleet
        self.settings = fleet_settings(fleet, tmp_path, lease_ttl=lease_ttl)
        self.service = fleet_service(fleet, tmp_path, settings=self.settings)
        self.store = self.service.store
        self.update = self.service.create(fleet_update(commit, **update))
        self.service.build_plan(self.update.name)
        self.commit = commit
        path = tmp_path / "settings.json"
        path.write_text(json.dumps(asdict(self.settings)))
        self.argv = [
            sys.executable,
            "-m",
            "agent_update.cli",
            "--db",
            str(tmp_path / "store.db"),
            "--settings",
            str(path),
        ]

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*self.argv, *args, self.update.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # signals reach this runner only
        )

    def run(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.argv, *args, self.update.name],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def rows(self):
        return self.store.get_rows(self.update.name)

    def row_in(self, status: RowStatus, step: Step):
        return next((r for r in self.rows() if r.status is status and r.step is step), None)

    def assert_hosts_match_rows(self) -> None:
        """No host half-updated: each runs exactly the commit its row says."""
        commits = self.fleet.commits
        for row in self.rows():
            host = self.fleet.host(row.server)
            expected = self.commit if row.status is RowStatus.SUCCESS else commits.base
            assert row.status in (RowStatus.SUCCESS, RowStatus.PENDING), (row.server, row.status)
            assert self.fleet.reported_commit(host) == expected, row.server
            assert self.fleet.running_commit(host) == expected, row.server
            assert not row.lease_owner, row.server


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"runner did not stop: {err}") from None
    return proc.returncode, out, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_first_ctrl_c_lets_rows_in_flight_finish_and_starts_nothing_new(fleet, tmp_path, signum):
    setup = Setup(fleet, tmp_path, fleet.commits.slow, lease_ttl=60)
    proc = setup.popen("run")
    wait_for(lambda: setup.row_in(RowStatus.RUNNING, Step.COMMAND_SENT), 60, "a command sent")
    proc.send_signal(signum)
    code, _, err = finish(proc)

    assert code == 130, err
    assert "stopping: no new server will start; waiting for the 1 in flight to finish" in err
    assert "Ctrl-C again to stop at once" in err and "Traceback" not in err
    rows = setup.rows()
    assert [r.status for r in rows].count(RowStatus.SUCCESS) == 1  # finished and verified
    assert [r.status for r in rows].count(RowStatus.PENDING) == len(rows) - 1
    assert all(r.started_at is None for r in rows if r.status is RowStatus.PENDING)
    setup.assert_hosts_match_rows()
    assert setup.store.get_update(setup.update.name).status is UpdateStatus.RUNNING

    again = setup.run("run")  # goes on at once: no lease is left to wait for
    assert again.returncode == 0, again.stderr
    assert "waiting for" not in again.stderr
    assert {r.status for r in setup.rows()} == {RowStatus.SUCCESS}
    setup.assert_hosts_match_rows()


def test_second_ctrl_c_stops_at_once_and_hands_the_rows_back(fleet, tmp_path):
    # A lease far longer than the next run may take: a lease left behind would stall it.
    setup = Setup(fleet, tmp_path, fleet.commits.slow, lease_ttl=600, lanes=2)
    proc = setup.popen("run")
    cut = wait_for(lambda: setup.row_in(RowStatus.RUNNING, Step.COMMAND_SENT), 60, "a command sent")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=30)

    assert code == 130, err
    assert "stopped at once; handed back" in err and "Traceback" not in err
    assert "run " + setup.update.name + " resumes at once" in err
    assert not any(r.lease_owner for r in setup.rows())  # handed back, not left to expire
    assert setup.store.get_row(setup.update.name, cut.idx).status.in_flight

    again = setup.run("run", timeout=150)
    assert again.returncode == 0, again.stderr
    assert "waiting for" not in again.stderr
    rows = setup.rows()
    assert {r.status for r in rows} == {RowStatus.SUCCESS}, [(r.server, r.reason) for r in rows]
    assert "resumed" in setup.store.get_row(setup.update.name, cut.idx).log
    setup.assert_hosts_match_rows()


def test_run_waits_for_a_dead_runners_rows_and_takes_them_over(fleet, tmp_path):
    # The lease outlives the next run's start even on a loaded machine (a Python
    # process with paramiko imported takes seconds there), so it must wait first.
    setup = Setup(fleet, tmp_path, fleet.commits.slow, lease_ttl=12, lanes=2, startup_timeout=40.0)
    dead = setup.popen("run")
    wait_for(lambda: setup.row_in(RowStatus.RUNNING, Step.COMMAND_SENT), 60, "a command sent")
    os.killpg(dead.pid, signal.SIGKILL)
    dead.communicate()
    held = [r for r in setup.rows() if r.lease_owner]
    assert held and setup.store.get_update(setup.update.name).status is UpdateStatus.RUNNING

    ran = setup.run("run")
    assert ran.returncode == 0, ran.stderr
    assert "waiting for host" in ran.stderr and "held by another runner" in ran.stderr
    assert "took over" in ran.stderr
    assert {r.status for r in setup.rows()} == {RowStatus.SUCCESS}
    setup.assert_hosts_match_rows()


def test_two_runs_at_once_both_follow_the_rollout_to_its_end(fleet, tmp_path):
    setup = Setup(fleet, tmp_path, fleet.commits.good, lease_ttl=20, lanes=2)
    first, second = setup.popen("run", "--json"), setup.popen("run", "--json")
    results = [finish(first), finish(second)]
    for code, out, err in results:
        assert code == 0, err
        assert json.loads(out)["status"] == "Success"
    assert {r.status for r in setup.rows()} == {RowStatus.SUCCESS}
    assert all(r.attempts == 1 for r in setup.rows())  # no server updated twice
    setup.assert_hosts_match_rows()


def test_a_rollout_that_ends_badly_exits_3_and_says_which_servers_failed(fleet, tmp_path):
    setup = Setup(fleet, tmp_path, fleet.commits.crash, lease_ttl=20, lanes=4)
    ran = setup.run("run")
    assert ran.returncode == 3, ran.stderr
    rows = setup.rows()
    assert {r.status for r in rows} == {RowStatus.ROLLED_BACK}
    for row in rows:
        assert f"{row.server} Rolled Back: failed, rolled back:" in ran.stderr
        host = fleet.host(row.server)
        assert fleet.reported_commit(host) == fleet.running_commit(host) == fleet.commits.base
    assert "Failure" in ran.stdout.splitlines()[0]
