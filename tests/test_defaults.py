"""Defaults that work on a standard server, and nothing runs that could not be built.

On the loopback fleet run as root, each host is set up as a standard server
is: the agent runs as its own user, supervisord as root with a root-only
socket. Every rollout here uses the engine's DEFAULT status command and
update template unless the test is about another one.
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent_update.remote import guard
from agent_update.remote.connector import SshConnector
from agent_update.rollout.model import RowStatus, Update, UpdateStatus
from agent_update.testing import procs, users
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update

pytestmark = pytest.mark.fleet
_counter = itertools.count()
root_only = pytest.mark.skipif(
    not users.production_like(), reason="needs root: the fleet is production-like only as root"
)


@pytest.fixture
def reset(fleet):
    fleet.reset()
    yield fleet
    fleet.reset()


def service_for(fleet, tmp_path: Path, only: str, **kw):
    """A service whose registry lists the fleet, every host but ``only`` archived."""
    service = fleet_service(fleet, tmp_path / f"svc{next(_counter)}", **kw)
    for server in service.store.list_servers():
        if server.name != only:
            service.store.save_server(replace(server, status="Archived"))
    return service


def rollout(service, commit: str, **kw):
    update = service.create(fleet_update(commit, **kw))
    planned = service.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    service.start(update.name)
    final = service.drive(update.name, timeout=240)
    (row,) = service.store.get_rows(update.name)
    return final, row


def truth(fleet, host) -> tuple[str, dict[str, int | None], list[str]]:
    """HEAD of the checkout, the supervisor pids, the HEAD reflog: what the host really has."""
    agent = Path(host.agent_dir)
    pids = {name: pid for name, (_, pid) in fleet.program_states(host).items()}
    reflog = subprocess.run(
        ["git", "-c", "safe.directory=*", "-C", str(agent / "repo"), "reflog", "--format=%H"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return fleet.checked_out_commit(host), pids, reflog


def marked(marker: str) -> set[int]:
    """Live processes whose command line carries ``marker``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and procs.is_alive(int(entry)):
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in raw and b"pytest" not in raw:
                found.add(int(entry))
    return found


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ------------------------------------------------------------- the defaults


@root_only
def test_default_settings_update_a_standard_server(reset, tmp_path):
    """sudo supervisorctl for status and start, the steps as the agent user."""
    fleet, host = reset, reset.hosts[0]
    service = service_for(fleet, tmp_path, host.name)
    assert service.settings.status_command == "sudo -n supervisorctl status"
    assert not service.settings.update_command_template
    _, before, _ = truth(fleet, host)
    final, row = rollout(service, fleet.commits.good)
    assert final.status is UpdateStatus.SUCCESS, row.reason
    assert fleet.running_commit(host) == fleet.commits.good
    head, after, _ = truth(fleet, host)
    assert head == fleet.commits.good and after["agent:web"] != before["agent:web"]
    owner = Path(host.agent_dir, "repo", ".git", "index").stat().st_uid
    assert owner == users.pwd.getpwnam(host.agent_user).pw_uid  # written by the agent user


@root_only
def test_ssh_as_root_runs_the_steps_as_the_agent_user(reset, tmp_path):
    """Root login, what the tool we replace does: git would refuse a checkout it does not own."""
    fleet, host = reset, reset.hosts[1]
    service = service_for(fleet, tmp_path, host.name)
    server = service.store.get_server(host.name)
    service.store.save_server(replace(server, ssh_user="root"))
    as_root = fleet.ssh_argv(host, f"cd {host.agent_dir}/repo && id -un && git status")
    as_root[as_root.index(f"{host.ssh_user}@{host.address}")] = f"root@{host.address}"
    refused = subprocess.run(as_root, capture_output=True, text=True, timeout=30)
    assert refused.stdout.startswith("root") and "dubious ownership" in refused.stderr
    final, row = rollout(service, fleet.commits.good2)
    assert final.status is UpdateStatus.SUCCESS, row.reason
    assert fleet.running_commit(host) == fleet.commits.good2
    uid = users.pwd.getpwnam(host.agent_user).pw_uid
    repo = Path(host.agent_dir, "repo")
    assert {p.stat().st_uid for p in repo.rglob("*")} == {uid}  # nothing root-owned left


@root_only
def test_precheck_logs_what_the_status_command_said(reset, tmp_path):
    """The old default without sudo meets the root-only socket: the real error is the reason."""
    fleet, host = reset, reset.hosts[2]
    settings = fleet_settings(fleet, tmp_path, status_command="supervisorctl status")
    service = service_for(fleet, tmp_path, host.name, settings=settings)
    head, pids, reflog = truth(fleet, host)
    _final, row = rollout(service, fleet.commits.good)
    assert row.status is RowStatus.FAILURE
    assert "Permission denied" in row.reason and "xmlrpc.py" in row.reason, row.reason
    assert truth(fleet, host) == (head, pids, reflog)  # nothing changed there


# ------------------------------------------------------- lock, limit, cut


def _link(fleet, tmp_path, host, template: str):
    settings = fleet_settings(fleet, tmp_path, update_command_template=template)
    service = service_for(fleet, tmp_path, host.name, settings=settings)
    server = service.store.get_server(host.name)
    update = Update(repo=fleet.upstream_url, branch="master", commit=fleet.commits.base)
    return SshConnector(settings).open(server, update)


def test_two_commands_on_one_server_never_overlap(reset, tmp_path):
    fleet, host = reset, reset.hosts[0]
    log = Path(host.agent_dir) / "overlap.log"
    template = "echo start >> $agent_dir/overlap.log; sleep 1.5; echo end >> $agent_dir/overlap.log"
    links = [_link(fleet, tmp_path, host, template) for _ in range(2)]
    results: list = [None, None]

    def run(i: int) -> None:
        results[i] = links[i].run_command(fleet.commits.base, 60)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        for link in links:
            link.close()
    assert all(r is not None and r.exit_code == 0 for r in results), results
    assert log.read_text().split() == ["start", "end", "start", "end"]  # one after the other
    log.unlink()


def test_a_busy_server_refuses_with_nothing_changed(reset, tmp_path, monkeypatch):
    fleet, host = reset, reset.hosts[0]
    monkeypatch.setattr(guard, "LOCK_WAIT", 1)
    holder = subprocess.Popen(  # another update holds this server's lock
        fleet.ssh_argv(
            host, f"exec 9>>{host.agent_dir}/{guard.LOCK_NAME}; flock 9; echo held; read _"
        ),
        stdin=subprocess.PIPE,  # closed at the end: the holder reads EOF and lets go
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        service = service_for(fleet, tmp_path, host.name)
        head, pids, reflog = truth(fleet, host)
        _final, row = rollout(service, fleet.commits.good)
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.kill()
        holder.wait(timeout=30)
    assert row.status is RowStatus.FAILURE
    assert "another update is running on this server" in row.reason
    assert "nothing was changed" in row.reason and "rolling back" not in row.log
    assert truth(fleet, host) == (head, pids, reflog)


def test_the_server_side_time_limit_stops_the_command(reset, tmp_path):
    fleet, host = reset, reset.hosts[1]
    marker = f"sleep 7{next(_counter)}{os.getpid()}.5"
    link = _link(fleet, tmp_path, host, f"{marker} & {marker}")
    try:
        obs = link.run_command(fleet.commits.base, 2)
    finally:
        link.close()
    assert obs.timed_out and obs.exit_code == 124, obs
    assert guard.TIME_LIMIT in obs.output
    assert procs.wait_dead(marked(marker), 15) == set()


@pytest.mark.parametrize("how", ["client timeout", "client killed"])
def test_a_cut_session_leaves_nothing_running(reset, tmp_path, how):
    """What timed out or lost its session client-side stops on the server too."""
    fleet, host = reset, reset.hosts[1]
    marker = f"sleep 8{next(_counter)}{os.getpid()}.5"
    link = _link(fleet, tmp_path, host, f"{marker} & {marker}")
    command = link.build_command(fleet.commits.base, 600)  # the server would wait 10 min
    link.close()
    if how == "client timeout":
        settings = fleet_settings(fleet, tmp_path)
        server = service_for(fleet, tmp_path, host.name).store.get_server(host.name)
        with SshConnector(settings).ssh_session(server) as ssh:
            result = ssh.run(command, timeout=2)
        assert result.timed_out
    else:
        client = subprocess.Popen(  # its input open, as a live session's is
            fleet.ssh_argv(host, command), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        wait_until(lambda: len(marked(marker)) >= 2, 20, "the command to start")
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
        client.stdin.close()  # type: ignore[union-attr]
    began = time.monotonic()
    left = procs.wait_dead(marked(marker), 20)
    print(f"\n{how}: the command was gone {time.monotonic() - began:.1f} s after the cut")
    assert left == set(), f"still running on the host: {left}"


# ------------------------------------------------------------ crash loop


def test_the_crashloop_commit_restarts_forever_without_fatal(reset):
    """As the real gunicorn does with an app that raises at import (docs/design.md §9)."""
    fleet, host = reset, reset.hosts[3]
    fleet.set_commit(host, fleet.commits.crashloop, wait=False)
    seen: list[int] = []
    states: set[str] = set()

    def three_pids() -> bool:
        state, pid = fleet.program_states(host)["agent:web"]
        states.add(state)
        if pid and pid not in seen:
            seen.append(pid)
        return len(seen) >= 3

    wait_until(three_pids, 20, "three web pids")
    assert "RUNNING" in states and "FATAL" not in states, states
    assert fleet.program_states(host)["agent:web"][0] != "FATAL"


def test_a_crashloop_update_is_rolled_back(reset, tmp_path):
    fleet, host = reset, reset.hosts[3]
    service = service_for(fleet, tmp_path, host.name)
    _final, row = rollout(service, fleet.commits.crashloop)
    assert row.status is RowStatus.ROLLED_BACK, row.reason
    assert fleet.running_commit(host) == fleet.commits.base


# ------------------------------------------------- nothing that cannot be built


def test_a_command_that_cannot_be_built_fails_with_nothing_changed(reset, tmp_path):
    """A hostile value written behind the rules' back: caught when the command is built."""
    fleet, host = reset, reset.hosts[2]
    service = service_for(fleet, tmp_path, host.name)
    hostile = f"{host.agent_dir}; touch {tmp_path}/pwned"

    def corrupt() -> None:
        with sqlite3.connect(service.store.path) as db:
            db.execute('UPDATE servers SET agent_dir=? WHERE "name"=?', [hostile, host.name])

    # Written before Build Plan: the plan names the field and the row stays Draft.
    corrupt()
    update = service.create(fleet_update(fleet.commits.good))
    planned = service.build_plan(update.name)
    (row,) = service.store.get_rows(update.name)
    assert planned.status is UpdateStatus.DRAFT and row.status is RowStatus.DRAFT
    assert "agent_dir" in row.reason, row.reason

    # Written after Build Plan: the row fails at its precheck, the first step that
    # puts the agent directory in a command (it reads HEAD's reflog there).
    server = service.store.get_server(host.name)
    service.store.save_server(replace(server, agent_dir=host.agent_dir))
    update = service.create(fleet_update(fleet.commits.good))
    assert service.build_plan(update.name).status is UpdateStatus.PENDING
    corrupt()
    head, pids, reflog = truth(fleet, host)
    service.start(update.name)
    final = service.drive(update.name, timeout=240)
    (row,) = service.store.get_rows(update.name)
    assert row.status is RowStatus.FAILURE, row.reason
    assert row.reason.startswith("precheck failed: agent_dir:"), row.reason
    assert "command to" not in row.log  # no command was sent
    assert "rolling back" not in row.log and final.status is UpdateStatus.FAILURE
    assert truth(fleet, host) == (head, pids, reflog)
    assert not (tmp_path / "pwned").exists()


@root_only
def test_a_missing_sudo_right_fails_fast_and_says_so(reset, tmp_path):
    """sudo -n: no password prompt to hang on; the precheck reason quotes sudo."""
    fleet, host = reset, reset.hosts[2]
    sudoers = users.SUDOERS_DIR / f"agent-update-fleet-{host.agent_user}"
    aside = sudoers.with_name(f".{sudoers.name}.aside")  # names with a dot are ignored
    service = service_for(fleet, tmp_path, host.name)
    head, pids, reflog = truth(fleet, host)
    sudoers.rename(aside)
    try:
        began = time.monotonic()
        _final, row = rollout(service, fleet.commits.good)
        took = time.monotonic() - began
    finally:
        aside.rename(sudoers)
    print(f"\nmissing sudo right: row failed in {took:.1f} s")
    assert row.status is RowStatus.FAILURE
    assert "sudo: a password is required" in row.reason, row.reason
    assert truth(fleet, host) == (head, pids, reflog)
