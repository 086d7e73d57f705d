"""Rollouts against the REAL frappe/agent, set up as a standard server runs it.

Two loopback servers (agent/testing/realagent): supervisord as root with a
root-only socket, the agent's own user with sudo, an sshd each. The engine
runs with its DEFAULT settings (status command, update template); only the
rollout's timeouts are sized per test. Every assertion reads the truth on
the host: HEAD and reflog of the checkout, pids from the root supervisord,
and the commit the running web's workers loaded. Figures are printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from agent_update.rollout.model import RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service
from agent_update.testing import procs
from agent_update.testing.harness import wait_for
from agent_update.testing.pytest_fixtures import print_figure as report
from agent_update.testing.realagent import RealAgentFleet, cleanup, locate, real_update

pytestmark = pytest.mark.real_agent

_TARBALL, _WHY = locate()
if _TARBALL is None:
    pytest.skip(f"real agent: {_WHY}", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip(
        "real agent: needs root (it creates users and sudoers files)", allow_module_level=True
    )

DRIVE_TIMEOUT = 420.0  # a rollout here takes well under a minute when the engine is right
STARTUP_TIMEOUT = 180.0
CLI = (
    sys.executable,
    "-m",
    "agent_update.cli",
)  # verify window; the fast verdicts must come long before it


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest):
    fleet = RealAgentFleet(2)
    try:
        fleet.start()
        t = fleet.timings
        report(
            request,
            f"setup {t['setup']:.1f}s (wheelhouse {t['wheelhouse']:.1f}s, "
            f"prepare {t['prepare']:.1f}s, launch {t['launch']:.1f}s)",
        )
        yield fleet
    finally:
        started = {pid: cleanup.started_at(pid) for pid in fleet.pids()}
        fleet.stop()
        if "stop" in fleet.timings:
            report(request, f"stop {fleet.timings['stop']:.1f}s")
    # Everything it started is gone: processes (by pid), users, sudoers files, files.
    left = {
        pid for pid, at in started.items() if procs.is_alive(pid) and cleanup.started_at(pid) == at
    }
    assert not left, f"processes left after stop: {sorted(left)}"
    assert fleet.leftovers() == []


@pytest.fixture
def fleet(real: RealAgentFleet) -> RealAgentFleet:
    real.reset()
    return real


class Transitions:
    """Listener: when each row entered each (status, step), and a hook to look at the host."""

    def __init__(self, on_row=None) -> None:
        self.seen: list[tuple[float, str, RowStatus, Step]] = []
        self.on_row = on_row

    def __call__(self, name, row, update) -> None:
        if row is None:
            return
        key = (row.server, row.status, row.step)
        if not self.seen or self.seen[-1][1:] != key:
            self.seen.append((time.time(), *key))
            if self.on_row is not None:
                self.on_row(row)

    def first(self, server: str, status: RowStatus, step: Step | None = None) -> float:
        for at, name, st, sp in self.seen:
            if name == server and st is status and (step is None or sp is step):
                return at
        raise AssertionError(f"{server} never reached {status.value}: {self.seen}")


def service(fleet: RealAgentFleet, tmp_path: Path, ssh_as="agent", hosts: int = 2, **kw):
    svc = fleet.service(tmp_path / f"svc-{time.monotonic_ns()}", ssh_as, **kw)
    for server in svc.store.list_servers()[hosts:]:  # keep the first N in the registry
        svc.store.save_server(replace(server, status="Archived"))
    return svc


def run(svc: Service, commit: str, **config):
    config.setdefault("startup_timeout", STARTUP_TIMEOUT)
    update = svc.create(real_update(commit, **config))
    planned = svc.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    svc.start(update.name)
    final = svc.drive(update.name, timeout=DRIVE_TIMEOUT)
    rows = {r.server: r for r in svc.store.get_rows(update.name)}
    assert final.status.is_final or final.status is UpdateStatus.PAUSED, (
        final.status,
        [(r.server, r.status, r.reason) for r in rows.values()],
    )
    return final, rows


def assert_runs(host, commit: str) -> None:
    """Checked out, reported, and loaded by the running web: all ``commit``."""
    assert host.head() == commit
    assert host.version()["commit"] == commit
    assert host.running_commit() == commit, f"{host.name}: web runs {host.running_commit()}"
    states = host.programs()
    assert all(state == "RUNNING" for state, _ in states.values()), states


@pytest.mark.parametrize("lanes", [1, 2])
def test_a_to_b_to_a_ssh_as_root_and_as_agent_user(fleet, tmp_path, request, lanes):
    # Each host is reached as root in one run and as the agent's user in the other.
    logins = ["root", "agent"] if lanes == 1 else ["agent", "root"]
    svc = service(fleet, tmp_path, logins)
    commits = fleet.commits
    for target in (commits.b, commits.a):
        before = {h.name: h.pids() for h in fleet.hosts}
        final, rows = run(svc, target, lanes=lanes)
        assert final.status is UpdateStatus.SUCCESS, [(r.server, r.reason) for r in rows.values()]
        for host in fleet.hosts:
            row = rows[host.name]
            assert row.status is RowStatus.SUCCESS, row.log
            assert row.reported_commit == target
            assert_runs(host, target)
            assert host.pids()["agent:web"] != before[host.name]["agent:web"]  # restarted
        took = [rows[h.name].ended_at - rows[h.name].started_at for h in fleet.hosts]
        wall = max(r.ended_at for r in rows.values()) - min(r.started_at for r in rows.values())
        report(
            request,
            f"{lanes} lane(s), to {'B' if target == commits.b else 'A'}: per server "
            + ", ".join(f"{t:.1f}s" for t in took)
            + f"; rollout wall {wall:.1f}s",
        )


def _verdict(transitions: Transitions, server: str) -> float:
    """Seconds from the command's end (Verifying) to the failure (Rolling Back)."""
    ended = transitions.first(server, RowStatus.VERIFYING)
    failed = transitions.first(server, RowStatus.ROLLING_BACK)
    return failed - ended


@pytest.mark.parametrize("bad", ["crash", "norestart", "fatal"])
def test_broken_commit_is_failed_fast_rolled_back_and_verified(fleet, tmp_path, request, bad):
    host = fleet.hosts[0]
    transitions = Transitions()
    svc = service(fleet, tmp_path, hosts=1, listener=transitions)
    final, rows = run(svc, getattr(fleet.commits, bad))
    row = rows[host.name]
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert final.status is UpdateStatus.FAILURE
    assert_runs(host, fleet.commits.a)  # the old commit runs again
    seconds = _verdict(transitions, host.name)
    report(request, f"{bad}: time to verdict {seconds:.1f}s after the command ended")
    # The verdict came from what was seen, not from the startup timeout running out.
    assert seconds < STARTUP_TIMEOUT / 2, row.log
    assert row.reason, row.log


def test_a_web_dying_seconds_after_each_start_is_rolled_back_by_default(fleet, tmp_path, request):
    """The master is SIGTERMed 3 s after each start; supervisor restarts it, never FATAL.

    One probe finds it healthy on the target commit: every verdict setting
    stays at its default (minimum healthy time, bake time, verdict window,
    startup timeout), as an operator would leave them.
    """
    host = fleet.hosts[0]
    transitions = Transitions()
    svc = service(fleet, tmp_path, hosts=1, listener=transitions)
    defaults = Update()
    final, rows = run(svc, fleet.commits.dieloop, startup_timeout=defaults.startup_timeout)
    row = rows[host.name]
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert final.status is UpdateStatus.FAILURE
    assert "agent:web" in row.reason, row.reason
    seconds = _verdict(transitions, host.name)
    back = row.ended_at - transitions.first(host.name, RowStatus.ROLLING_BACK)
    report(
        request,
        f"die loop: time to verdict {seconds:.1f}s after the command ended, rolled back in "
        f"{back:.1f}s more; {row.reason}",
    )
    assert seconds < defaults.min_healthy_time + defaults.verdict_window, row.log
    assert_runs(host, fleet.commits.a)
    # The web stays up: one pid, RUNNING, answering, well past the 3 s the bad code lived.
    pid = host.pids()["agent:web"]
    end = time.monotonic() + 8
    while time.monotonic() < end:
        assert host.pids()["agent:web"] == pid, "web restarted after the rollback"
        time.sleep(0.5)
    assert_runs(host, fleet.commits.a)


def test_slow_but_healthy_start_succeeds(fleet, tmp_path, request):
    host = fleet.hosts[0]
    web_before = host.pids()["agent:web"]
    svc = service(fleet, tmp_path, hosts=1)
    final, rows = run(svc, fleet.commits.slow)
    row = rows[host.name]
    assert final.status is UpdateStatus.SUCCESS, row.log
    assert_runs(host, fleet.commits.slow)
    assert host.pids()["agent:web"] != web_before
    report(request, f"slow start: Success in {row.ended_at - row.started_at:.1f}s")


def test_stopped_program_fails_the_precheck_and_changes_nothing(fleet, tmp_path):
    host = fleet.hosts[0]
    host.stop_program("agent:worker-0")
    head, reflog, pids = host.head(), host.reflog(), host.pids()
    svc = service(fleet, tmp_path, hosts=1)
    final, rows = run(svc, fleet.commits.b)
    row = rows[host.name]
    assert row.status is RowStatus.FAILURE, row.log
    assert "worker-0" in row.reason and "nothing was changed" in row.reason, row.reason
    assert final.status is UpdateStatus.FAILURE
    assert (host.head(), host.reflog(), host.pids()) == (head, reflog, pids)
    assert host.running_commit() == fleet.commits.a


def test_timed_out_command_is_gone_before_the_rollback_starts(fleet, tmp_path):
    host = fleet.hosts[0]
    seen: dict[str, list[str]] = {}

    def look(row) -> None:
        if row.status is RowStatus.ROLLING_BACK and "leftovers" not in seen:
            seen["leftovers"] = host.leftovers()

    transitions = Transitions(on_row=look)
    svc = service(fleet, tmp_path, hosts=1, listener=transitions)
    # The hang commit's `agent update` sleeps for an hour: the command times out (there,
    # or earlier on a busy machine: any point will do). The rollback's own command is
    # bound by the same limit: a real `agent update` on a loaded machine needs over 25 s.
    _, rows = run(svc, fleet.commits.hang, command_timeout=60.0, startup_timeout=20.0)
    row = rows[host.name]
    assert "leftovers" in seen, row.log
    assert seen["leftovers"] == [], seen["leftovers"]
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert "timed out" in row.log
    assert_runs(host, fleet.commits.a)
    assert host.leftovers() == []


def test_runner_killed_mid_command_is_resumed_without_blind_rerun(fleet, tmp_path, request):
    workdir = tmp_path / "killed"
    settings = fleet.settings(workdir, lease_ttl=5.0)
    svc = service(fleet, tmp_path, hosts=1, settings=settings)
    db = Path(svc.store.path)
    update = svc.create(real_update(fleet.commits.b, startup_timeout=STARTUP_TIMEOUT))
    assert svc.build_plan(update.name).status is UpdateStatus.PENDING
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(asdict(settings)))
    runner = subprocess.Popen(
        [*CLI, "--db", str(db), "--settings", str(settings_file), "run", update.name],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    host = fleet.hosts[0]
    try:
        wait_for(
            lambda: any(
                r.status is RowStatus.RUNNING and r.step is Step.COMMAND_SENT
                for r in svc.store.get_rows(update.name)
            ),
            90,
            "the command to be sent",
            interval=0.1,
        )
        # Kill once the command is really at work on the host (its checkout moved).
        wait_for(lambda: host.head() == fleet.commits.b, 60, "the checkout to move", 0.1)
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(10)
    killed_at = time.time()
    victim = svc.store.get_rows(update.name)[0]
    assert victim.status.in_flight and victim.lease_owner

    seen: dict[str, list[str]] = {}

    def look(row) -> None:
        if row.status is RowStatus.RUNNING and row.step is Step.COMMAND:
            seen.setdefault("leftovers at re-run", host.leftovers())

    heir = Service(SqliteStore(db), settings, listener=Transitions(on_row=look))
    wait_for(lambda: time.time() > victim.lease_expires, 30, "the dead runner's lease")
    assert heir.tick() == [update.name]
    final = heir.drive(update.name, timeout=DRIVE_TIMEOUT)
    row = svc.store.get_rows(update.name)[0]
    report(request, f"killed runner: resumed to {row.status.value} {row.ended_at - killed_at:.1f}s")
    assert final.status is UpdateStatus.SUCCESS, row.log
    assert row.status is RowStatus.SUCCESS and "resumed" in row.log, row.log
    assert row.attempts == 1, row.log
    # If the heir ran the command again, it did so only once nothing of the first was left.
    assert seen.get("leftovers at re-run", []) == [], seen
    assert_runs(host, fleet.commits.b)
    assert host.leftovers() == []


def test_a_run_whose_owner_died_is_swept_by_the_next(tmp_path):
    """A test process killed with SIGKILL never stops its fleet: the next run cleans up."""
    user = f"ausweep{os.getpid() % 100000}"
    sudoers = Path("/etc/sudoers.d") / f"agent_update_{user}"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", user], check=True)
    sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    run_dir = tmp_path / "ra-dead00-x"
    run_dir.mkdir()
    sleeper = subprocess.Popen(["sudo", "-u", user, "sleep", "300"], start_new_session=True)
    try:
        wait_for(lambda: cleanup.user_pids(user), 60, "the user's process")
        owner = subprocess.Popen(["true"])
        owner.wait()
        record = {"pid": owner.pid, "started": "0", "users": [user], "sudoers": [str(sudoers)]}
        (run_dir / cleanup.OWNER_FILE).write_text(json.dumps(record))
        assert cleanup.sweep_stale(tmp_path) == [str(run_dir)]
        sleeper.wait(60)  # its child, running as the user, was killed
        assert cleanup.user_pids(user) == set()
        assert cleanup.pwd_entry(user) is None and not sudoers.exists() and not run_dir.exists()
    finally:
        sleeper.kill()
        sleeper.wait(5)
        sudoers.unlink(missing_ok=True)
        subprocess.run(["userdel", "-f", user], capture_output=True, check=False)
