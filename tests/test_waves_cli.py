"""`agent-update` with waves, Abort and the stall alert, on the loopback fleet."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

from agent_update.remote import guard
from agent_update.rollout.store import SqliteStore
from agent_update.testing.harness import PASSWORD_VAR, server_add_args, write_cli_settings

pytestmark = pytest.mark.fleet


def base(tmp_path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent_update.cli",
        "--db",
        str(tmp_path / "au.db"),
        "--settings",
        str(tmp_path / "settings.json"),
    ]


def cli(tmp_path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*base(tmp_path), *args], capture_output=True, text=True, timeout=180, env=env, check=False
    )


def registry(fleet, tmp_path, hosts) -> None:
    write_cli_settings(fleet, tmp_path / "settings.json")
    assert cli(tmp_path, "init").returncode == 0
    for host in hosts:
        env = {**os.environ, PASSWORD_VAR: host.agent_password}
        added = cli(tmp_path, *server_add_args(host), env=env)
        assert added.returncode == 0, added.stderr


# Startup is bounded loosely: a good commit comes up in seconds, a loaded machine is slower.
TIMEOUTS = ("--startup-timeout", "40", "--command-timeout", "60", "--min-healthy-time", "1")


def test_waves_and_abort_from_the_command_line(fleet, tmp_path):
    fleet.reset()
    hosts = fleet.hosts[:3]
    registry(fleet, tmp_path, hosts)
    bad = cli(tmp_path, "create", "--waves", "1, lots", *TIMEOUTS)
    assert bad.returncode == 5 and "--waves: 'lots' is not a number" in bad.stderr, bad.stderr
    created = cli(
        tmp_path,
        "create",
        "--commit",
        fleet.commits.good,
        "--waves",
        "1",
        "--lanes",
        "2",
        *TIMEOUTS,
    )
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip()
    assert cli(tmp_path, "plan", name).returncode == 0
    shown = cli(tmp_path, "status", name).stdout
    assert "waves 1: now wave 1 of 1 (1 server, 1 at once)" in shown
    ran = cli(tmp_path, "run", name)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    on_good = all(fleet.running_commit(h) == fleet.commits.good for h in hosts)
    assert on_good, ran.stdout + ran.stderr

    pids = {h.name: fleet.program_states(h)["agent:web"][1] for h in hosts}
    second = cli(tmp_path, "create", "--commit", fleet.commits.good2, *TIMEOUTS).stdout.strip()
    assert cli(tmp_path, "plan", second).returncode == 0
    aborted = cli(tmp_path, "abort", second, "--reason", "wrong commit")
    assert aborted.returncode == 0, aborted.stderr
    assert f"{second}  Aborted" in aborted.stdout and "wrong commit" in aborted.stdout
    assert {h.name: fleet.program_states(h)["agent:web"][1] for h in hosts} == pids
    again = cli(tmp_path, "resume", second)
    assert again.returncode == 5 and "Resume needs a Paused update, not Aborted" in again.stderr


def test_tick_reports_a_stalled_rollout_with_a_non_zero_exit(fleet, tmp_path):
    fleet.reset()
    host = fleet.hosts[0]
    registry(fleet, tmp_path, [host])
    args = ("--commit", fleet.commits.good, "--stall-minutes", "0.01", *TIMEOUTS)
    name = cli(tmp_path, "create", *args).stdout.strip()
    assert cli(tmp_path, "plan", name).returncode == 0
    # Another command holds the server's update lock: the row's command waits for it
    # (guard.LOCK_WAIT), so the row stays in flight, without an end, however slowly
    # the ticks below come on a loaded machine; then the lock is let go.
    holder = subprocess.Popen(
        fleet.ssh_argv(
            host, f"exec 9>>{host.agent_dir}/{guard.LOCK_NAME}; flock 9; echo held; read _"
        ),
        stdin=subprocess.PIPE,  # closed below: the holder reads EOF and lets go
        stdout=subprocess.PIPE,
        text=True,
    )
    runner = None
    ticks: list[subprocess.CompletedProcess] = []
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        runner = subprocess.Popen(
            [*base(tmp_path), "run", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Tick once `run` holds the row: a tick before that would start the row
        # itself, and its own wait would hide the stall.
        store = SqliteStore(tmp_path / "au.db")
        claimed = time.monotonic() + 60
        while time.monotonic() < claimed and runner.poll() is None:
            if any(r.lease_owner for r in store.get_rows(name)):
                break
            time.sleep(0.1)
        store.close()
        deadline = time.monotonic() + guard.LOCK_WAIT - 15
        while time.monotonic() < deadline and runner.poll() is None:
            tick = cli(tmp_path, "tick")
            ticks.append(tick)
            if tick.returncode:
                break
            time.sleep(0.2)
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(timeout=30)
        if runner is not None:
            out, err = runner.communicate(timeout=150)
    stalled = [t for t in ticks if t.returncode]
    assert stalled and stalled[0].returncode == 6, [t.stdout + t.stderr for t in ticks]
    assert f"STALLED {name}: no server ended in" in stalled[0].stdout
    assert runner.returncode == 0, out + err  # the alert acted on nothing
    assert fleet.running_commit(host) == fleet.commits.good


def test_tick_resumes_the_others_and_exits_1_naming_a_rollout_it_cannot_read(fleet, tmp_path):
    fleet.reset()
    host = fleet.hosts[0]
    registry(fleet, tmp_path, [host])
    names = [cli(tmp_path, "create", "--commit", fleet.commits.good, *TIMEOUTS).stdout.strip()]
    names.append(cli(tmp_path, "create", "--commit", fleet.commits.good, *TIMEOUTS).stdout.strip())
    broken, fine = names
    with sqlite3.connect(tmp_path / "au.db") as db:  # two planners died; one record is unreadable
        db.execute("UPDATE updates SET status='Planning', lease_owner='dead', lease_expires=1.0")
        db.execute("UPDATE updates SET lanes='many' WHERE name=?", (broken,))
    tick = cli(tmp_path, "tick")
    assert tick.returncode == 1, tick.stdout + tick.stderr
    assert f"resumed: {fine}" in tick.stdout
    assert f"{broken}: TypeError" in tick.stderr and fine not in tick.stderr
    shown = cli(tmp_path, "status", fine)
    assert "Pending" in shown.stdout, shown.stdout + shown.stderr
    store = SqliteStore(tmp_path / "au.db")
    (row,) = store.get_rows(fine)
    store.close()
    assert row.current_commit == fleet.reported_commit(host)
