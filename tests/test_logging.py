"""The engine's log: every step of a row, every exception it survives, and the CLI's switch.

Most cases run the real runner on a fake fleet (no network); the last one
runs ``agent-update run --log-level INFO`` against the loopback fleet.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from agent_update import cli
from agent_update.remote.connector import ServerLink
from agent_update.remote.ssh import SshConnectError
from agent_update.rollout import steplog
from agent_update.rollout.model import (
    EngineSettings,
    Row,
    RowStatus,
    Server,
    Step,
    Update,
    UpdateStatus,
    append_log,
)
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs
from agent_update.rollout.runner import Runner
from agent_update.rollout.store import SqliteStore
from agent_update.rollout.threads import Heartbeat
from agent_update.testing.harness import PASSWORD_VAR, server_add_args, wait_for, write_cli_settings

OLD, NEW = "1" * 40, "2" * 40
SETTINGS = EngineSettings(poll_interval=0.01, lease_ttl=600)


@dataclass
class FakeServer:
    """Runs ``commit``; a commit in ``crashes`` leaves its web program FATAL."""

    commit: str = OLD
    pid: int = 100
    crashes: tuple[str, ...] = ()

    def programs(self):
        if self.commit in self.crashes:
            return {"agent:web": ("FATAL", None)}
        return {"agent:web": ("RUNNING", self.pid)}


class FakeLink:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def precheck(self) -> PrecheckObs:
        return PrecheckObs(programs=self.server.programs(), commit=self.server.commit)

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        self.server.commit, self.server.pid = commit, self.server.pid + 1
        return CommandObs(exit_code=0)

    def probe(self) -> ProbeObs:
        up = self.server.commit not in self.server.crashes
        return ProbeObs(pong=up, commit=self.server.commit, programs=self.server.programs())

    def close(self) -> None:
        return None


class FakeConnector:
    def __init__(self, servers: dict[str, FakeServer]) -> None:
        self.servers = servers

    def open(self, server: Server, update: Update) -> FakeLink:
        return FakeLink(self.servers[server.name])


def running_update(tmp_path, names: list[str], **update: object) -> SqliteStore:
    store = SqliteStore(tmp_path / "au.db")
    for name in names:
        store.save_server(Server(name=name, host="127.0.0.1", agent_url="http://127.0.0.1:1"))
    rows = [
        Row(idx=i, server=name, status=RowStatus.PENDING, current_commit=OLD, rollback_commit=OLD)
        for i, name in enumerate(names, 1)
    ]
    fields = {"commit": NEW, "status": UpdateStatus.RUNNING, "started_at": time.time(), **update}
    store.insert_update(Update(name="AU-log", **fields), rows)  # type: ignore[arg-type]
    return store


def lines(caplog, server: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "server", None) == server]


def test_every_step_of_a_row_is_logged_with_its_update_row_and_server(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agent_update")
    servers = {"ok": FakeServer(), "bad": FakeServer(crashes=(NEW,))}
    store = running_update(tmp_path, list(servers))
    final = Runner(store, FakeConnector(servers), SETTINGS).drive("AU-log", timeout=30)

    rows = {r.server: r for r in store.get_rows("AU-log")}
    assert rows["ok"].status is RowStatus.SUCCESS and servers["ok"].commit == NEW
    assert rows["bad"].status is RowStatus.ROLLED_BACK and servers["bad"].commit == OLD
    ok = lines(caplog, "ok")
    assert ok[0].startswith("AU-log #1 ok: Pending -> Pending/precheck (lease taken by ")
    assert (
        ok[1]
        == "AU-log #1 ok: Pending/precheck -> Running/command: precheck ok: 1 programs running; "
        "rollback commit 111111111111: the checkout (program start times unknown)"
    )
    assert (
        ok[2]
        == f"AU-log #1 ok: Running/command -> Running/command_sent: command to {NEW[:12]} started"
    )
    assert ok[3] == "AU-log #1 ok: Running/command_sent -> Verifying/verify: command exited 0"
    assert ok[-1] == "AU-log #1 ok: Verifying/verify -> Success"
    bad = "\n".join(lines(caplog, "bad"))
    assert "Verifying/verify -> Rolling Back/command: Failure: agent:web is FATAL" in bad
    assert f"rolling back to {OLD}" in bad
    assert f"command to {OLD[:12]} started" in bad
    assert "Rolling Back/verify -> Rolled Back: Rolled Back: failed, rolled back:" in bad
    record = next(r for r in caplog.records if getattr(r, "server", None) == "bad")
    assert (record.update, record.row, record.levelno) == ("AU-log", 2, logging.INFO)
    assert final.status is UpdateStatus.PARTIAL_SUCCESS
    assert any(r.getMessage() == "AU-log: Running -> Partial Success" for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_failing_listener_is_logged_and_the_rollout_goes_on(tmp_path, caplog):
    def listener(name, row, update):
        raise RuntimeError("realtime is down")

    servers = {"ok": FakeServer()}
    store = running_update(tmp_path, list(servers))
    runner = Runner(store, FakeConnector(servers), SETTINGS, listener=listener)
    runner.drive("AU-log", timeout=30)
    assert store.get_row("AU-log", 1).status is RowStatus.SUCCESS and servers["ok"].commit == NEW
    failed = [r for r in caplog.records if "change listener failed" in r.getMessage()]
    assert failed and failed[0].levelno == logging.WARNING
    assert str(failed[0].exc_info[1]) == "realtime is down"


class FlakyStore:
    """A store whose lease renewal raises once (the database went away for a moment)."""

    def __init__(self, answers: list[object]) -> None:
        self.answers, self.calls = answers, 0

    def claim_row(self, name, idx, owner, now, ttl) -> bool:
        self.calls += 1
        answer = self.answers[min(self.calls, len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return bool(answer)


@dataclass
class FakeRunner:
    store: FlakyStore
    settings: EngineSettings
    clock = staticmethod(time.time)

    def __post_init__(self) -> None:
        self._held_lock = threading.Lock()
        self.abandoned = threading.Event()


def test_a_heartbeat_exception_is_logged_and_renewal_goes_on(caplog):
    store = FlakyStore([True, RuntimeError("database is locked"), True])
    beat = Heartbeat(FakeRunner(store, EngineSettings(lease_ttl=0.15)), "AU-log", 3, "me", "s3")
    beat.start()
    try:
        wait_for(lambda: store.calls >= 4, 10, "renewals after the failure")
    finally:
        beat.stop()
    failed = [r for r in caplog.records if r.name == "agent_update.rollout.threads"]
    assert failed[0].getMessage() == "AU-log #3 s3: lease renewal failed"
    assert failed[0].levelno == logging.WARNING
    assert str(failed[0].exc_info[1]) == "database is locked"
    assert not beat.lost  # the next renewal went through: the row goes on
    beat.check()


def test_a_lease_taken_over_is_logged_once(caplog):
    store = FlakyStore([True, False])
    beat = Heartbeat(FakeRunner(store, EngineSettings(lease_ttl=0.15)), "AU-log", 1, "me", "s1")
    beat.start()
    try:
        wait_for(lambda: store.calls >= 4, 10, "renewals")
    finally:
        beat.stop()
    assert beat.lost
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == ["AU-log #1 s1: its lease was taken over by another runner"]


def test_added_log_survives_the_trimmed_front():
    old = "x" * 7990 + "\nprecheck ok"
    new = append_log(old, "command to abc started")
    assert len(new) < len(old) + len("command to abc started") + 1  # trimmed at the front
    assert steplog.added_log(old, new) == "command to abc started"
    assert steplog.added_log("", "first") == "first"
    assert steplog.added_log("same", "same") == ""


def test_a_long_command_output_keeps_what_happened_and_its_last_lines():
    lines = ["command exited 1", *(f"line {i} of the output" for i in range(100)), "E: no space"]
    text = steplog.shorten(lines)
    assert len(text) <= steplog.LINE_LIMIT
    assert text.startswith("command exited 1 | … | ") and text.endswith(
        "line 99 of the output | E: no space"
    )


def test_a_row_line_needs_a_move_new_text_or_a_note():
    row = Row(idx=1, server="s1", status=RowStatus.VERIFYING, step=Step.VERIFY, log="a")
    assert steplog.row_line("AU-1", row, row.copy(healthy_since=5.0)) is None  # a quiet probe
    assert steplog.row_line("AU-1", row, row, "lease taken by me") == (
        "AU-1 #1 s1: Verifying/verify (lease taken by me)"
    )


# ------------------------------------------------------------------------ CLI
def local_repo(tmp_path) -> tuple[str, str]:
    """A one-commit repository: ``create`` checks the commit is on the branch."""
    work = tmp_path / "agent"
    work.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
    }
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    for args in (["init", "-q", "-b", "master"], ["commit", "-q", "--allow-empty", "-m", "one"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True, timeout=30)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True, check=True
    )
    return f"file://{work}", head.stdout.strip()


def in_process(tmp_path, capsys, *args: str) -> str:
    code = cli.run(["--db", str(tmp_path / "au.db"), *args])
    assert code == 0, capsys.readouterr()
    return capsys.readouterr().err


def test_the_cli_is_quiet_by_default_and_logs_at_info_when_asked(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AGENT_UPDATE_LOG", raising=False)
    repo, head = local_repo(tmp_path)
    create = ["create", "--repo", repo, "--branch", "master", "--commit", head]
    in_process(tmp_path, capsys, "init")
    assert "agent_update." not in in_process(tmp_path, capsys, *create)  # its hint only
    err = in_process(tmp_path, capsys, "--log-level", "info", *create)
    assert " INFO agent_update.service: AU-" in err
    assert f"created (0 servers, commit {head[:12]})" in err
    monkeypatch.setenv("AGENT_UPDATE_LOG", "INFO")
    assert "created" in in_process(tmp_path, capsys, *create)
    assert logging.getLogger("agent_update").level == logging.NOTSET  # put back after the run


def test_a_bad_log_level_names_the_flag_and_the_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AGENT_UPDATE_LOG", "loud")
    with pytest.raises(SystemExit) as stop:
        cli.run(["--db", str(tmp_path / "au.db"), "init"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR" in err
    assert "AGENT_UPDATE_LOG" in err


@pytest.mark.fleet
def test_run_with_log_level_info_shows_each_step_of_the_server(fleet, tmp_path):
    fleet.reset()
    host = fleet.hosts[0]
    write_cli_settings(fleet, tmp_path / "settings.json")
    base = [sys.executable, "-m", "agent_update.cli", "--db", str(tmp_path / "au.db")]
    base += ["--settings", str(tmp_path / "settings.json")]
    env = {**os.environ, PASSWORD_VAR: host.agent_password, "AGENT_UPDATE_LOG": "INFO"}

    def cli_run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=180, env=env, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    cli_run("init")
    cli_run(*server_add_args(host))
    name = cli_run("create", "--commit", fleet.commits.good, "--startup-timeout", "15").stdout
    name = name.strip()
    cli_run("plan", name)
    ran = cli_run("run", name).stderr
    assert fleet.reported_commit(host) == fleet.running_commit(host) == fleet.commits.good
    prefix = f"INFO agent_update.rollout.runner: {name} #1 {host.name}: "
    for step in (
        "Pending -> Pending/precheck (lease taken by ",
        "Pending/precheck -> Running/command: precheck ok: ",
        f"Running/command -> Running/command_sent: command to {fleet.commits.good[:12]} started",
        "Running/command_sent -> Verifying/verify: command exited 0",
        "Verifying/verify -> Success",
    ):
        assert prefix + step in ran, ran
    assert f"{name}: Running -> Success" in ran


class BrokenConnector:
    """Reaching the server raises: a bug-like error, then one of ours."""

    def __init__(self, error: Exception) -> None:
        self.settings, self.error = EngineSettings(), error

    def ssh_session(self, server: Server):
        raise self.error


@pytest.mark.parametrize(
    ("error", "level", "traceback"),
    [
        (RuntimeError("a bug"), logging.WARNING, True),
        (SshConnectError("127.0.0.2:22: connection refused"), logging.INFO, False),
    ],
)
def test_an_exception_turned_into_an_observation_is_logged(caplog, error, level, traceback):
    caplog.set_level(logging.INFO, logger="agent_update")
    server = Server(name="s1", host="127.0.0.2", agent_url="http://127.0.0.2:1")
    link = ServerLink(BrokenConnector(error), server, Update(name="AU-log"))  # type: ignore[arg-type]
    obs = link.precheck()
    assert str(error) in obs.error  # the row's reason
    said = [r for r in caplog.records if r.name == "agent_update.remote.connector"]
    assert said[-1].getMessage().startswith("s1: precheck: ")
    assert said[-1].levelno == level and bool(said[-1].exc_info) is traceback
