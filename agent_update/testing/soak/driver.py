"""Rollouts through the front doors: the ``agent-update`` CLI as subprocesses, one SQLite store.

Each rollout is created in-process (the Service API, so it can name a
random subset of the fleet and a commit of its own), then planned, run,
paused, resumed, aborted and force-continued by ``agent-update`` processes,
each in its own process group so that one SIGKILL ends it at a random
instant. A rollout left without a live runner (its runner killed, or it
ended at a pause) gets a new ``run`` or ``tick`` after a drawn delay, as an
operator or a cron job would. Every process's life is kept: the observer's
lease invariant needs to know when a live runner was there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent_update.rollout import commands
from agent_update.rollout.model import EngineSettings, UpdateStatus
from agent_update.service import Service
from agent_update.testing.harness import fleet_update
from agent_update.testing.soak.faults import COMMIT_FAULTS, FaultKind, Scheduler
from agent_update.testing.soak.invariants import Span
from agent_update.testing.upstream import VARIANTS

if TYPE_CHECKING:
    from agent_update.testing.fleet import Fleet

log = logging.getLogger(__name__)
RUNNERS = ("run", "tick", "resume", "abort", "force-continue")  # stay until the rollout settles
TICK_PASS = 10.0  # seconds a starting tick may take to look at every rollout
PLAN_TRIES = 3
#: a button, and the statuses of a rollout where pressing it makes sense
BUTTON_STATES = {
    FaultKind.PAUSE: (UpdateStatus.RUNNING,),
    FaultKind.RESUME: (UpdateStatus.PAUSED,),
    FaultKind.ABORT: (UpdateStatus.PENDING, UpdateStatus.RUNNING, UpdateStatus.PAUSED),
    FaultKind.ABORT_ROLLBACK: (UpdateStatus.RUNNING, UpdateStatus.PAUSED),
    FaultKind.FORCE_CONTINUE: (UpdateStatus.FAILURE, UpdateStatus.PARTIAL_SUCCESS),
}


@dataclass
class Proc:
    kind: str
    update: str  # "" for tick
    popen: subprocess.Popen[bytes]
    start: float
    log: Path
    end: float | None = None
    rc: int | None = None

    @property
    def alive(self) -> bool:
        return self.end is None


@dataclass
class Rollout:
    name: str
    kind: str  # "good" or a bad kind of upstream.VARIANTS
    commit: str
    hosts: list[str]
    deadline: float
    plan_tries: int = 0
    planned: bool = False
    dropped: bool = False  # never planned: not a rollout
    operator_paused: bool = False
    acted_at: float | None = None  # an operator's last Resume / Abort / Force Continue
    next_runner_at: float | None = None
    next_plan_at: float | None = None
    status: UpdateStatus = UpdateStatus.DRAFT


@dataclass
class Shape:
    """How big and how long the soak's rollouts are."""

    hosts: tuple[int, int] = (4, 12)
    deadline: tuple[float, float] = (90.0, 240.0)
    concurrent: int = 4


class RolloutBook:
    """What a front door keeps of its rollouts, and what the observer asks of it.

    Both doors (the CLI's ``Driver``, the desk's ``DeskDoor``) give ``rollouts``,
    ``fleet``, ``hosts``, ``scheduler`` and ``shape``.
    """

    rollouts: dict[str, Rollout]
    fleet: Fleet
    hosts: list[str]
    scheduler: Scheduler
    shape: Shape

    def draw(self, prefix: str) -> tuple[str, str, list[str]]:
        """A new rollout's commit kind, its commit (pushed for it) and its hosts."""
        kind = self.scheduler.commit_kind()
        marker = f"{prefix}-{len(self.rollouts) + 1}-{kind}"
        commit = self.fleet.add_commit(marker, **VARIANTS.get(kind, {}))
        low, high = self.shape.hosts
        size = self.scheduler.rng.randint(min(low, len(self.hosts)), min(high, len(self.hosts)))
        hosts = sorted(self.scheduler.rng.sample(self.hosts, size), key=self.hosts.index)
        return kind, commit, hosts

    def names(self) -> list[str]:
        """Rollouts the observer watches: every one created (Draft ones are not judged)."""
        return list(self.rollouts)

    def self_crashing(self) -> set[str]:
        """Commits whose programs restart or die by themselves once installed."""
        kinds = ("crash", "crashloop", "unhealthy")
        return {r.commit for r in list(self.rollouts.values()) if r.kind in kinds}

    def acted_at(self, name: str) -> float | None:
        rollout = self.rollouts.get(name)
        return rollout.acted_at if rollout else None

    def paused_by_operator(self, name: str) -> bool:
        rollout = self.rollouts.get(name)
        return bool(rollout and rollout.operator_paused)

    def unfinished(self) -> list[Rollout]:
        return [r for r in self.rollouts.values() if not r.dropped and not r.status.is_final]


@dataclass
class Driver(RolloutBook):
    fleet: Fleet
    workdir: Path
    scheduler: Scheduler
    settings: EngineSettings
    shape: Shape = field(default_factory=Shape)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    exits: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.db = self.workdir / "store.db"
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.settings_path = self.workdir / "settings.json"
        self.settings_path.write_text(json.dumps(asdict(self.settings)))
        from agent_update.rollout.store import SqliteStore
        from agent_update.testing.harness import fleet_servers

        store = SqliteStore(self.db)
        for server in fleet_servers(self.fleet):
            store.save_server(server)
        self.service = Service(store, self.settings)
        self.hosts = [host.name for host in self.fleet.hosts]
        self.count = 0

    @property
    def rng(self):
        return self.scheduler.rng

    # ----------------------------------------------------------- processes
    def spawn(self, kind: str, update: str, *args: str) -> Proc:
        self.count += 1
        path = self.logs / f"{self.count:05d}-{kind}-{update or 'all'}.log"
        argv = [sys.executable, "-m", "agent_update.cli", "--db", str(self.db)]
        argv += ["--settings", str(self.settings_path), "--log-level", "INFO", kind]
        argv += [*args, update] if update else list(args)
        with open(path, "wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a SIGKILL to its group ends it and its threads
            )
        proc = Proc(kind, update, popen, time.time(), path)
        self.procs.append(proc)
        return proc

    def reap(self) -> None:
        for proc in self.procs:
            if proc.alive and proc.popen.poll() is not None:
                proc.end, proc.rc = time.time(), proc.popen.returncode
                self.exits[f"{proc.kind} exit {proc.rc}"] += 1
                self._ended(proc)

    def _ended(self, proc: Proc) -> None:
        rollout = self.rollouts.get(proc.update)
        if rollout is None:
            return
        if proc.kind == "plan":
            if proc.rc == 0:
                rollout.planned = True
                self.spawn("run", rollout.name, "--no-progress")
            elif rollout.plan_tries >= PLAN_TRIES:
                rollout.dropped = True  # left Draft: not a rollout
            else:  # a host down for a while (a fault): plan again later, as an operator would
                rollout.next_plan_at = time.time() + self.rng.uniform(5.0, 15.0)
        elif proc.kind == "pause" and proc.rc == 0:
            rollout.operator_paused = True

    def live(self, update: str) -> list[Proc]:
        """The live runners of ``update``; a ``tick`` only while it is young.

        A tick takes over expired leases once, as it starts, then drives what
        it resumed: after that it serves no other rollout, so a rollout whose
        runner dies later needs a runner of its own.
        """
        young = time.time() - TICK_PASS
        return [
            p
            for p in self.procs
            if p.alive
            and p.kind in RUNNERS
            and (p.update == update or (p.update == "" and p.start >= young))
        ]

    def spans(self) -> list[Span]:
        return [Span(p.update, p.start, p.end) for p in self.procs if p.kind in RUNNERS]

    def kill_runner(self) -> str:
        live = [p for p in self.procs if p.alive and p.kind in RUNNERS]
        if not live:
            return ""
        proc = self.rng.choice(live)
        try:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            return ""
        proc.popen.wait(10)
        self.reap()
        return f"{proc.kind} {proc.update or 'all'} pid {proc.popen.pid}"

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait(10)
        self.reap()

    # ------------------------------------------------------------- rollouts
    def create(self, now: float) -> tuple[Rollout, FaultKind | None]:
        """A rollout of a commit of its own over a random subset of the fleet."""
        rng = self.rng
        kind, commit, hosts = self.draw("soak")
        options: dict[str, object] = {"lanes": rng.randint(1, 4)}
        if rng.random() < 0.25:
            options.update(waves="1, 2", wave_gate_action=rng.choice(["Pause", "Halt"]))
        if rng.random() < 0.1:
            options.update(test_mode=True, test_mode_count=1)
        if rng.random() < 0.2:
            options.update(failure_budget=rng.randint(1, 2))
        if rng.random() < 0.1:
            options.update(stop_after_single_rollback=True)
        deadline = now + rng.uniform(*self.shape.deadline)
        update = fleet_update(commit, deadline_at=deadline, **options)
        registry = {s.name: s for s in self.service.store.list_servers()}
        rows = commands.rows_from_registry(update, [registry[name] for name in hosts])
        created = self.service.create(update, rows)
        rollout = Rollout(created.name, kind, commit, hosts, deadline)
        self.rollouts[created.name] = rollout
        self.plan(rollout)
        return rollout, COMMIT_FAULTS.get(kind)

    def plan(self, rollout: Rollout) -> None:
        rollout.plan_tries += 1
        self.spawn("plan", rollout.name)

    def step(self, now: float) -> None:
        """Reap, read each rollout's status, give a runner to each rollout left without one."""
        self.reap()
        store = self.service.store
        for rollout in self.rollouts.values():
            if rollout.dropped:
                continue
            if rollout.next_plan_at is not None and now >= rollout.next_plan_at:
                rollout.next_plan_at = None
                self.plan(rollout)
            rollout.status = store.get_update(rollout.name).status
            if rollout.status is not UpdateStatus.PAUSED:
                rollout.operator_paused = False
            if not rollout.planned or rollout.status.is_final or self.live(rollout.name):
                rollout.next_runner_at = None
                continue
            if rollout.status is UpdateStatus.PAUSED:
                rows = store.get_rows(rollout.name, ["idx", "server", "status", "lease_owner"])
                if not any(r.status.in_flight or r.lease_owner for r in rows):
                    continue  # paused as asked: nothing to wind down
            if rollout.next_runner_at is None:
                rollout.next_runner_at = now + self.rng.uniform(1.0, 8.0)
            elif now >= rollout.next_runner_at:
                rollout.next_runner_at = None
                if rollout.status is UpdateStatus.PAUSED or self.rng.random() < 0.35:
                    self.spawn("tick", "")
                else:
                    self.spawn("run", rollout.name, "--no-progress")

    # --------------------------------------------------------------- buttons
    def press(self, kind: FaultKind) -> str:
        """Press a button on a rollout where it makes sense; "" when none does."""
        wanted = BUTTON_STATES[kind]
        choices = [r for r in self.rollouts.values() if r.planned and r.status in wanted]
        if not choices:
            return ""
        rollout = self.rng.choice(choices)
        if kind is not FaultKind.PAUSE:  # it may run again, past its deadline too
            rollout.acted_at = time.time()
        if kind is FaultKind.PAUSE:
            self.spawn("pause", rollout.name)
        elif kind is FaultKind.RESUME:
            self.spawn("resume", rollout.name, "--no-progress")
        elif kind is FaultKind.FORCE_CONTINUE:
            self.spawn("force-continue", rollout.name, "--no-progress")
        else:
            extra = ["--rollback"] if kind is FaultKind.ABORT_ROLLBACK else []
            self.spawn("abort", rollout.name, *extra, "--reason", "soak: an operator aborted")
        return f"{rollout.name} ({rollout.status.value})"

    def wind_down(self) -> None:
        """The end: resume what is paused, so every rollout can reach a final state."""
        for rollout in self.unfinished():
            if rollout.status is UpdateStatus.PAUSED and not self.live(rollout.name):
                self.spawn("resume", rollout.name, "--no-progress")
