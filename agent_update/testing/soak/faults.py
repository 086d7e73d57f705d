"""The faults a soak injects, drawn from one seeded RNG, and how each is done to a host.

Every choice (which fault, which host, for how long, which commit a rollout
targets) comes from ``Scheduler.rng``, seeded from the command line, so a
failing soak replays the same draw (the timing of the machine still varies).
Faults that leave a host broken (a stopped program, a stopped or frozen
sshd) are healed after a drawn duration; ``Injector.heal_all`` heals what
is left at the end. Processes are found by pid from the fleet's own
process tree, never by name.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from random import Random
from typing import TYPE_CHECKING

from agent_update.testing import procs, sshd
from agent_update.testing.model import FleetError, FleetHost

if TYPE_CHECKING:
    from agent_update.testing.fleet import Fleet

log = logging.getLogger(__name__)


class FaultKind(str, Enum):
    # a rollout's target: every bad kind the fleet has (drawn per rollout)
    COMMIT_CRASH = "commit:crash"
    COMMIT_CRASHLOOP = "commit:crashloop"
    COMMIT_SLOW = "commit:slow"
    COMMIT_UNHEALTHY = "commit:unhealthy"
    COMMIT_LIAR = "commit:liar"
    COMMIT_INSTALL_FAIL = "commit:install_fail"
    COMMIT_NORESTART = "commit:norestart"
    # done to a host
    PROGRAM_STOP = "program:stop"  # supervisorctl stop; started again later
    PROGRAM_KILL = "program:kill-9"  # supervisord restarts it
    SSHD_STOP = "sshd:stop"  # the listener ends; started again later
    SSHD_FREEZE = "sshd:freeze"  # SIGSTOP (a hang, not a refusal), SIGCONT later
    # done to the engine
    RUNNER_KILL = "runner:kill-9"
    PAUSE = "button:pause"
    RESUME = "button:resume"
    ABORT = "button:abort"
    ABORT_ROLLBACK = "button:abort-rollback"
    FORCE_CONTINUE = "button:force-continue"
    # done to the desk (--desk): its site's services and workers
    WORKER_KILL = "desk:worker-kill-9"  # the worker running a job, and the job's process
    REDIS_RESTART = "desk:redis-restart"  # the jobs queued in it are lost
    MARIADB_RESTART = "desk:mariadb-restart"


#: commit kind (a marker of upstream.VARIANTS, or "good") → the fault it counts as
COMMIT_FAULTS = {
    "crash": FaultKind.COMMIT_CRASH,
    "crashloop": FaultKind.COMMIT_CRASHLOOP,
    "slow": FaultKind.COMMIT_SLOW,
    "unhealthy": FaultKind.COMMIT_UNHEALTHY,
    "liar": FaultKind.COMMIT_LIAR,
    "install_fail": FaultKind.COMMIT_INSTALL_FAIL,
    "norestart": FaultKind.COMMIT_NORESTART,
}
HOST_FAULTS = (
    FaultKind.PROGRAM_STOP,
    FaultKind.PROGRAM_KILL,
    FaultKind.SSHD_STOP,
    FaultKind.SSHD_FREEZE,
)
#: relative weights of the faults injected between rollouts' creations
WEIGHTS = {
    FaultKind.PROGRAM_STOP: 3,
    FaultKind.PROGRAM_KILL: 4,
    FaultKind.SSHD_STOP: 2,
    FaultKind.SSHD_FREEZE: 3,
    FaultKind.RUNNER_KILL: 4,
    FaultKind.PAUSE: 2,
    FaultKind.RESUME: 3,
    FaultKind.ABORT: 1,
    FaultKind.ABORT_ROLLBACK: 1,
    FaultKind.FORCE_CONTINUE: 2,
}
#: drawn only with the desk's door open (so a seed without it replays as before)
DESK_WEIGHTS = {
    FaultKind.WORKER_KILL: 3,
    FaultKind.REDIS_RESTART: 1,
    FaultKind.MARIADB_RESTART: 1,
}
DESK_FAULTS = tuple(DESK_WEIGHTS)
PROGRAMS = ("agent:web", "agent:worker-0", "agent:redis")


@dataclass
class Fault:
    """One fault as injected: what, where, when, until when (host faults)."""

    kind: FaultKind
    target: str  # a host name, an update name, or a runner's description
    at: float  # time.time()
    until: float | None = None  # healed at (None: instantaneous or not yet healed)
    detail: str = ""

    def line(self, t0: float) -> str:
        span = f" for {self.until - self.at:.1f}s" if self.until else ""
        return f"+{self.at - t0:7.1f}s {self.kind.value:<22} {self.target}{span} {self.detail}"


@dataclass
class Scheduler:
    """The seeded draws: next fault, its host, its duration, a rollout's shape."""

    seed: int
    rng: Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = Random(self.seed)

    def pause_before_next(self, mean: float) -> float:
        return self.rng.expovariate(1.0 / mean)

    def kind(self, desk: bool = False) -> FaultKind:
        weights = {**WEIGHTS, **DESK_WEIGHTS} if desk else WEIGHTS
        kinds = list(weights)
        return self.rng.choices(kinds, weights=[weights[k] for k in kinds])[0]

    def host(self, hosts: list[str], busy: list[str]) -> str:
        """Mostly a host a rollout is working on right now: faults mid-command matter most."""
        if busy and self.rng.random() < 0.7:
            return self.rng.choice(sorted(busy))
        return self.rng.choice(hosts)

    def duration(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def commit_kind(self) -> str:
        """Half the rollouts are good, the rest bad in every way the fleet knows."""
        if self.rng.random() < 0.5:
            return "good"
        return self.rng.choice(sorted(COMMIT_FAULTS))


class Injector:
    """Does host faults to a fleet and heals them; thread-safe."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.lock = threading.Lock()
        self.frozen: dict[str, list[int]] = {}  # host → pids under SIGSTOP
        self.stopped_sshd: set[str] = set()
        self.stopped_programs: dict[str, set[str]] = {}

    def _sim(self, host: str):  # the SimHost: its sshd process is ours to stop and start
        return self.fleet._sim(host)

    def inject(self, kind: FaultKind, host: str, rng: Random) -> str:
        """Do ``kind`` to ``host``; return a detail line ("" when nothing could be done)."""
        with self.lock:
            if kind is FaultKind.PROGRAM_STOP:
                program = rng.choice(PROGRAMS)
                self.fleet.stop_program(host, program)
                self.stopped_programs.setdefault(host, set()).add(program)
                return program
            if kind is FaultKind.PROGRAM_KILL:
                program = rng.choice(PROGRAMS)
                _, pid = self.fleet.program_states(host).get(program, ("", None))
                if pid is None:
                    return ""
                os.kill(pid, signal.SIGKILL)
                return f"{program} pid {pid}"
            if kind is FaultKind.SSHD_STOP:
                if host in self.stopped_sshd or host in self.frozen:
                    return ""
                proc = self._sim(host).sshd_proc
                if proc is None or proc.poll() is not None:
                    return ""
                proc.terminate()
                proc.wait(10)
                self.stopped_sshd.add(host)
                return f"sshd pid {proc.pid}"
            if kind is FaultKind.SSHD_FREEZE:
                if host in self.stopped_sshd or host in self.frozen:
                    return ""
                pids = self._sshd_pids(host)
                procs.send(pids, signal.SIGSTOP)
                self.frozen[host] = sorted(pids)
                return f"sshd pids {sorted(pids)}"
        raise ValueError(f"{kind} is not a host fault")

    def _sshd_pids(self, host: str) -> set[int]:
        """The listener and every session sshd below it (not the commands they run)."""
        proc = self._sim(host).sshd_proc
        if proc is None or proc.poll() is not None:
            return set()
        below = procs.descendants([proc.pid], procs.children_map())
        return {proc.pid} | {pid for pid in below if _comm(pid) == "sshd"}

    def heal(self, kind: FaultKind, host: str, detail: str) -> None:
        """Undo what ``inject`` did (a kill -9 needs nothing: supervisord restarts)."""
        with self.lock:
            try:
                if kind is FaultKind.PROGRAM_STOP:
                    self.fleet.start_program(host, detail)
                    self.stopped_programs.get(host, set()).discard(detail)
                elif kind is FaultKind.SSHD_STOP and host in self.stopped_sshd:
                    sim = self._sim(host)
                    sim.sshd_proc = sshd.start(sim.sshd_files)
                    self.stopped_sshd.discard(host)
                    _wait_listening(sim.sshd_files)
                elif kind is FaultKind.SSHD_FREEZE and host in self.frozen:
                    procs.send(self.frozen.pop(host), signal.SIGCONT)
            except FleetError as error:  # e.g. a program that cannot start on a bad commit
                log.info("healing %s on %s: %s", kind.value, host, error)

    def heal_all(self) -> None:
        for host in list(self.frozen):
            self.heal(FaultKind.SSHD_FREEZE, host, "")
        for host in list(self.stopped_sshd):
            self.heal(FaultKind.SSHD_STOP, host, "")
        for host, programs in list(self.stopped_programs.items()):
            for program in list(programs):
                self.heal(FaultKind.PROGRAM_STOP, host, program)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _wait_listening(files: sshd.SshdFiles, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not sshd.is_listening(files) and time.monotonic() < deadline:
        time.sleep(0.05)


def host_names(hosts: list[FleetHost]) -> list[str]:
    return [host.name for host in hosts]
