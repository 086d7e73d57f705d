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

from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.model import Server, Update
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs

OLD = "0" * 40
_pids = itertools.count(1000)
_lock = threading.Lock()


def _pid() -> int:
    with _lock:
        return next(_pids)


class SimLink:
    def __init__(self, command_secs: float) -> None:
        self.command_secs = command_secs
        self.commit = OLD
        self.programs = {"agent:web": ("RUNNING", _pid()), "agent:worker-0": ("RUNNING", _pid())}

    def precheck(self) -> PrecheckObs:
        return PrecheckObs(programs=dict(self.programs), commit=self.commit)

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        time.sleep(self.command_secs)
        self.commit = commit
        self.programs = {name: ("RUNNING", _pid()) for name in self.programs}
        return CommandObs(exit_code=0, duration=self.command_secs)

    def probe(self) -> ProbeObs:
        return ProbeObs(pong=True, commit=self.commit, programs=dict(self.programs))

    def close(self) -> None:
        return None


class SimConnector:
    def __init__(self, command_secs: float = 0.0, plan_latency: float = 0.0) -> None:
        self.command_secs = command_secs
        self.plan_latency = plan_latency

    def open(self, server: Server, update: Update) -> SimLink:
        return SimLink(self.command_secs)

    def plan_probe(self, server: Server) -> PlanOutcome:
        time.sleep(self.plan_latency)
        return PlanOutcome(commit=OLD)
