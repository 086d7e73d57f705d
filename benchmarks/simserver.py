"""A simulated server for engine benchmarks: the engine's own cost, no network.

Each link answers like a healthy agent: the command "takes" ``command_secs``
(sleeping), then the agent reports the target commit with new pids. Used to
measure scheduling, store writes and lane packing at sizes no loopback fleet
of this machine could hold (hundreds of servers).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.model import Row, RowStatus, Server, Update, UpdateStatus
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs
from agent_update.rollout.store import SqliteStore

OLD = "0" * 40
TARGET = "f" * 40
_pids = itertools.count(1000)
_lock = threading.Lock()


def _pid() -> int:
    with _lock:
        return next(_pids)


class SimLink:
    def __init__(self, command_secs: float, broken: bool = False) -> None:
        self.command_secs = command_secs
        self.broken = broken  # any commit but OLD makes web FATAL here
        self.commit = OLD
        self.commands: list[str] = []
        self.programs = {"agent:web": ("RUNNING", _pid()), "agent:worker-0": ("RUNNING", _pid())}

    def precheck(self) -> PrecheckObs:
        return PrecheckObs(programs=dict(self.programs), commit=self.commit)

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        time.sleep(self.command_secs)
        self.commands.append(commit)
        self.commit = commit
        self.programs = {name: ("RUNNING", _pid()) for name in self.programs}
        if self.broken and commit != OLD:
            self.programs["agent:web"] = ("FATAL", None)
        return CommandObs(exit_code=0, duration=self.command_secs)

    def probe(self) -> ProbeObs:
        return ProbeObs(pong=True, commit=self.commit, programs=dict(self.programs))

    def close(self) -> None:
        return None


class SimConnector:
    """Links to simulated servers; ``broken`` names those whose update crashes."""

    def __init__(
        self, command_secs: float = 0.0, plan_latency: float = 0.0, broken: frozenset = frozenset()
    ) -> None:
        self.command_secs = command_secs
        self.plan_latency = plan_latency
        self.broken = broken
        self.links: dict[str, SimLink] = {}  # per server: what ran there

    def open(self, server: Server, update: Update) -> SimLink:
        link = self.links.get(server.name)
        if link is None:
            link = self.links[server.name] = SimLink(self.command_secs, server.name in self.broken)
        return link

    def plan_probe(self, server: Server) -> PlanOutcome:
        time.sleep(self.plan_latency)
        return PlanOutcome(commit=OLD)


def server_name(i: int) -> str:
    """The name of simulated server ``i`` (0-based), as planned_store registers it."""
    return f"s{i:05d}"


def planned_store(path: Path, count: int, **update: object) -> tuple[SqliteStore, str]:
    """A store with ``count`` simulated servers and one Pending update over them all."""
    store = SqliteStore(path)
    names = [server_name(i) for i in range(count)]
    for name in names:
        # One agent directory each: one machine per server (a shared one would share a lease).
        store.save_server(
            Server(
                name=name,
                host="127.0.0.1",
                agent_dir=f"/srv/{name}/agent",
                agent_url="http://127.0.0.1",
            )
        )
    rows = [
        Row(idx=i, server=n, status=RowStatus.PENDING, current_commit=OLD, rollback_commit=OLD)
        for i, n in enumerate(names, start=1)
    ]
    # A simulated pid has no supervisor uptime to be healthy for: with the default
    # minimum healthy time every row would wait it out, measuring only the wait.
    values: dict[str, object] = dict(
        repo="/srv/agent.git",
        branch="master",
        commit=TARGET,
        status=UpdateStatus.PENDING,
        min_healthy_time=0,
    )
    values.update(update)
    return store, store.insert_update(Update(**values), rows).name  # type: ignore[arg-type]
