"""The runner's two stops behind Ctrl-C, on a fake fleet (no network).

``stop_starting`` (first Ctrl-C): the row in flight ends verified, no other
row starts. ``abandon`` (second): the lease is handed back at once, the cut
thread writes nothing more, and a fresh runner resumes the row without
waiting for the lease to expire.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from agent_update.rollout.model import (
    EngineSettings,
    Row,
    RowStatus,
    Server,
    Step,
    Update,
    UpdateStatus,
)
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs
from agent_update.rollout.runner import Runner
from agent_update.rollout.store import SqliteStore
from agent_update.testing.harness import wait_for

OLD, NEW = "1" * 40, "2" * 40


@dataclass
class FakeServer:
    commit: str = OLD
    pid: int = 100
    prechecks: int = 0
    gate: threading.Event = field(default_factory=threading.Event)


class FakeLink:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def precheck(self) -> PrecheckObs:
        self.server.prechecks += 1
        return PrecheckObs(programs={"agent:web": ("RUNNING", self.server.pid)}, commit=OLD)

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        assert self.server.gate.wait(10), "the test never opened the gate"
        self.server.commit, self.server.pid = commit, self.server.pid + 1
        return CommandObs(exit_code=0)

    def probe(self) -> ProbeObs:
        programs = {"agent:web": ("RUNNING", self.server.pid)}
        return ProbeObs(pong=True, commit=self.server.commit, programs=programs)

    def close(self) -> None:
        return None


class FakeConnector:
    def __init__(self, names: list[str]) -> None:
        self.servers = {name: FakeServer() for name in names}

    def open(self, server: Server, update: Update) -> FakeLink:
        return FakeLink(self.servers[server.name])


SETTINGS = EngineSettings(poll_interval=0.01, lease_ttl=600)


def running_update(tmp_path, names: list[str]) -> SqliteStore:
    store = SqliteStore(tmp_path / "au.db")
    for name in names:
        store.save_server(Server(name=name, host="127.0.0.1", agent_url="http://127.0.0.1:1"))
    rows = [
        Row(idx=i, server=name, status=RowStatus.PENDING, current_commit=OLD, rollback_commit=OLD)
        for i, name in enumerate(names, 1)
    ]
    update = Update(
        name="AU-t",
        commit=NEW,
        status=UpdateStatus.RUNNING,
        started_at=time.time(),
        min_healthy_time=0,  # the fake link shows no uptimes; not what these tests are about
    )
    store.insert_update(update, rows)
    return store


def test_stop_starting_lets_the_row_in_flight_end_and_starts_no_other(tmp_path):
    names = ["s1", "s2", "s3"]
    store, fleet = running_update(tmp_path, names), FakeConnector(names)
    runner = Runner(store, fleet, SETTINGS)
    runner.kick("AU-t")
    wait_for(lambda: store.get_row("AU-t", 1).step is Step.COMMAND_SENT, 10, "the command")
    runner.stop_starting()
    fleet.servers["s1"].gate.set()
    runner.launcher.wait(time.monotonic() + 10)  # type: ignore[attr-defined]

    rows = store.get_rows("AU-t")
    assert [r.status for r in rows] == [RowStatus.SUCCESS, RowStatus.PENDING, RowStatus.PENDING]
    assert fleet.servers["s1"].commit == NEW
    assert [fleet.servers[n].prechecks for n in names] == [1, 0, 0]  # never touched
    assert not any(r.lease_owner for r in rows) and runner.held() == []


def test_abandon_hands_the_lease_back_and_a_new_runner_resumes_at_once(tmp_path):
    store, fleet = running_update(tmp_path, ["s1"]), FakeConnector(["s1"])
    runner = Runner(store, fleet, SETTINGS)
    runner.kick("AU-t")
    wait_for(lambda: store.get_row("AU-t", 1).step is Step.COMMAND_SENT, 10, "the command")

    assert runner.abandon() == [("AU-t", 1)]
    assert store.get_row("AU-t", 1).lease_owner == ""  # at once, not after 600 s
    fleet.servers["s1"].gate.set()  # the cut command "ends" on the server anyway
    runner.launcher.wait(time.monotonic() + 10)  # type: ignore[attr-defined]
    cut = store.get_row("AU-t", 1)
    assert (cut.status, cut.step, cut.lease_owner) == (RowStatus.RUNNING, Step.COMMAND_SENT, "")
    assert runner.kick("AU-t") == []  # an abandoned runner starts nothing

    heir = Runner(store, fleet, SETTINGS)
    assert heir.kick("AU-t") == [1]
    heir.launcher.wait(time.monotonic() + 10)  # type: ignore[attr-defined]
    done = store.get_row("AU-t", 1)
    assert done.status is RowStatus.SUCCESS and done.attempts == 1
    assert "resumed: agent already on target" in done.log  # looked before re-running
    assert fleet.servers["s1"].pid == 101  # the command ran once
