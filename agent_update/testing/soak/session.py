"""One soak from start to end: the fleet, the driver, the faults, the observer, the report.

The main loop creates rollouts (up to ``Shape.concurrent`` unfinished at
once), gives each a runner, injects a fault at drawn intervals and heals
host faults when their time is up, until the time is up or the observer
sees a violation. Then it heals everything, resumes what is paused, waits
for every rollout to end (bounded by the latest deadline), runs the
observer's final pass over quiet hosts, and prints the report.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent_update.testing.desk_site import DeskSiteError
from agent_update.testing.fleet import Fleet
from agent_update.testing.harness import fleet_settings
from agent_update.testing.model import FleetError
from agent_update.testing.soak.desk_door import DeskDoor
from agent_update.testing.soak.driver import Driver, Rollout, Shape
from agent_update.testing.soak.faults import (
    DESK_FAULTS,
    HOST_FAULTS,
    Fault,
    FaultKind,
    Injector,
    Scheduler,
)
from agent_update.testing.soak.invariants import Violation
from agent_update.testing.soak.observer import Observer

log = logging.getLogger(__name__)
LEASE_TTL = 8.0  # short, so dead runners' rows are taken over within the soak
#: the longest a row in flight may still need after a deadline: the lock wait,
#: a command and its verification, a rollback and its verification, a takeover
DEADLINE_GRACE = 60 + 2 * (40 + 15 + 4) + 3 * LEASE_TTL + 30


@dataclass
class Options:
    minutes: float = 20.0
    seed: int = 0
    hosts: int = 40
    fault_every: float = 3.0  # mean seconds between two faults
    shape: Shape = field(default_factory=Shape)
    root: Path | None = None  # default: a fresh temporary directory
    keep: bool = False  # keep the fleet's and runners' logs when all went well
    desk_bench: Path | None = None  # the desk's door too: a built bench (desk_door.py)
    desk_hosts: float = 0.25  # the part of the fleet the desk's rollouts get
    desk_concurrent: int = 2  # desk rollouts unfinished at once
    desk_workers: int = 5  # RQ workers (lanes of every desk rollout + 1)


@dataclass
class Result:
    faults: list[Fault]
    rollouts: int
    rows: int
    violations: list[Violation]
    seed: int
    report: str
    root: Path

    @property
    def line(self) -> str:
        return (
            f"soak: {len(self.faults)} faults, {self.rollouts} rollouts, {self.rows} rows, "
            f"{len(self.violations)} violations, seed {self.seed}"
        )


def say(text: str) -> None:
    print(text, flush=True)


def run(options: Options) -> Result:
    say(f"soak: seed {options.seed} (replay with --seed {options.seed})")
    root = options.root or Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))
    began = time.monotonic()
    fleet = Fleet(options.hosts, root=root / "fleet", keep_root=True)
    fleet.start()
    say(f"soak: {options.hosts} hosts up in {time.monotonic() - began:.0f}s under {root}")
    injector = Injector(fleet)
    try:
        return _soak(options, fleet, injector, root)
    finally:
        injector.heal_all()
        fleet.stop()


def _soak(options: Options, fleet: Fleet, injector: Injector, root: Path) -> Result:
    scheduler = Scheduler(options.seed)
    settings = fleet_settings(
        fleet, root, lease_ttl=LEASE_TTL, connect_timeout=5.0, probe_timeout=3.0
    )
    driver = Driver(fleet, root / "engine", scheduler, settings, options.shape)
    bench = options.desk_bench
    door = _open_desk(options, bench, fleet, driver, scheduler, root) if bench else None
    try:
        return _loop(options, fleet, injector, root, scheduler, driver, door)
    finally:
        if door is not None:
            door.stop()


def _open_desk(
    options: Options, bench: Path, fleet: Fleet, driver: Driver, scheduler: Scheduler, root: Path
) -> DeskDoor:
    """The desk gets the fleet's last hosts; the CLI's rollouts draw from the others."""
    count = max(2, round(len(driver.hosts) * options.desk_hosts))
    mine = driver.hosts[-count:]
    driver.hosts = driver.hosts[:-count]
    began = time.monotonic()
    shape = Shape(hosts=(min(2, count), min(6, count)), concurrent=options.desk_concurrent)
    door = DeskDoor(
        fleet, mine, root / "desk", scheduler, bench, shape,
        lease_ttl=LEASE_TTL, workers=options.desk_workers,
    )  # fmt: skip
    say(
        f"soak: desk site up in {time.monotonic() - began:.0f}s ({len(mine)} hosts, "
        f"{options.desk_workers} workers, mariadb port {door.site.db.port}, "
        f"redis port {door.site.redis.port})"
    )
    return door


def _loop(
    options: Options,
    fleet: Fleet,
    injector: Injector,
    root: Path,
    scheduler: Scheduler,
    driver: Driver,
    door: DeskDoor | None,
) -> Result:
    observer = Observer(
        fleet,
        driver.db,
        driver.names,
        lambda: driver.spans() + (door.spans() if door else []),
        lambda name: (
            driver.paused_by_operator(name) or bool(door and door.paused_by_operator(name))
        ),
        lambda: _fault_windows(faults),
        lambda: driver.self_crashing() | (door.self_crashing() if door else set()),
        lease_ttl=LEASE_TTL,
        deadline_grace=DEADLINE_GRACE,
        more=door.snapshot if door else None,
        acted_at=lambda name: driver.acted_at(name) or (door.acted_at(name) if door else None),
        context=(lambda: door.state(time.time())) if door else None,
    )
    faults: list[Fault] = []
    heals: list[tuple[float, Fault]] = []
    t0 = time.time()
    end = t0 + options.minutes * 60
    next_fault = t0 + scheduler.pause_before_next(options.fault_every)
    observer.start()
    try:
        desk_step = 0.0
        while time.time() < end and not observer.failed.is_set():
            now = time.time()
            driver.step(now)
            if len(driver.unfinished()) < options.shape.concurrent:
                rollout, bad = driver.create(now)
                if bad is not None:
                    faults.append(Fault(bad, rollout.name, now, detail=rollout.commit[:12]))
            if door is not None and now - desk_step >= 1.0:
                desk_step = now
                with _answered(observer):
                    door.step(now)
                    if len(door.unfinished()) < options.desk_concurrent:
                        rollout, bad = door.create(now)
                        if bad is not None:
                            detail = rollout.commit[:12]
                            faults.append(Fault(bad, rollout.name, now, detail=detail))
            for due, fault in [h for h in heals if h[0] <= now]:
                heals.remove((due, fault))
                injector.heal(fault.kind, fault.target, fault.detail)
                fault.until = time.time()
            if now >= next_fault:
                fault = _inject(scheduler, injector, driver, fleet, observer.busy, door)
                if fault is not None:
                    faults.append(fault)
                    if fault.kind in (
                        FaultKind.PROGRAM_STOP,
                        FaultKind.SSHD_STOP,
                        FaultKind.SSHD_FREEZE,
                    ):
                        heals.append((now + scheduler.duration(2.0, 25.0), fault))
                next_fault = now + scheduler.pause_before_next(options.fault_every)
            time.sleep(0.2)
        say(f"soak: injecting stopped at +{time.time() - t0:.0f}s; healing, winding down")
        for _, fault in heals:
            injector.heal(fault.kind, fault.target, fault.detail)
            fault.until = time.time()
        injector.heal_all()
        _wind_down(driver, observer, door)
    finally:
        observer.stop()
        driver.kill_all()
    if not observer.failed.is_set():
        _settle_hosts(fleet)
        observer.observe(final=True)
        if door is not None:
            left = door.leftovers()
            if left:
                observer.record([Violation("leftovers", "", "", f"the desk left {left}")])
    violations = list(observer.violations)
    rows = sum(len(driver.service.store.get_rows(r.name)) for r in driver.rollouts.values())
    rollouts = sum(not r.dropped for r in driver.rollouts.values())
    if door is not None:
        rows += sum(len(r) for r in door.snapshot()[1].values())
        rollouts += sum(not r.dropped for r in door.rollouts.values())
    report = _report(options, driver, observer, faults, violations, t0, door)
    return Result(faults, rollouts, rows, violations, options.seed, report, root)


def _fault_windows(faults: list[Fault]) -> list[tuple[str, tuple[float, float]]]:
    """Host faults as (host, (from, to)); one not healed yet lasts until further notice."""
    found = []
    for fault in list(faults):
        if fault.kind in HOST_FAULTS:
            healed = fault.kind is FaultKind.PROGRAM_KILL
            end = fault.until or (fault.at if healed else float("inf"))
            found.append((fault.target, (fault.at, end)))
    return found


def _inject(
    scheduler: Scheduler,
    injector: Injector,
    driver: Driver,
    fleet: Fleet,
    busy: list[str],
    door: DeskDoor | None,
) -> Fault | None:
    kind = scheduler.kind(desk=door is not None)
    now = time.time()
    if door is not None:
        if kind in DESK_FAULTS:
            if kind is FaultKind.WORKER_KILL:
                target = door.kill_worker()
            else:
                target = door.restart("redis" if kind is FaultKind.REDIS_RESTART else "mariadb")
            return Fault(kind, target, now, until=time.time()) if target else None
        button = kind is not FaultKind.RUNNER_KILL and kind not in HOST_FAULTS
        if button and scheduler.rng.random() < 0.4:  # pressed on the desk
            target = door.press(kind)
            return Fault(kind, target, now, until=now) if target else None
    if kind in HOST_FAULTS:
        host = scheduler.host([h.name for h in fleet.hosts], busy)
        try:
            detail = injector.inject(kind, host, scheduler.rng)
        except (FleetError, OSError) as error:
            log.warning("could not inject %s on %s: %s", kind.value, host, error)
            return None
        return Fault(kind, host, now, detail=detail) if detail else None
    target = driver.kill_runner() if kind is FaultKind.RUNNER_KILL else driver.press(kind)
    return Fault(kind, target, now, until=now) if target else None


def _wind_down(driver: Driver, observer: Observer, door: DeskDoor | None) -> None:
    """Until every rollout has ended (or the observer objects), bounded by the deadlines."""
    rollouts = list(driver.rollouts.values()) + (list(door.rollouts.values()) if door else [])
    deadlines = [r.deadline for r in rollouts] or [time.time()]
    limit = max(max(deadlines), time.time()) + DEADLINE_GRACE + 30
    last_resume = 0.0

    def unfinished() -> list[Rollout]:
        return driver.unfinished() + (door.unfinished() if door else [])

    while time.time() < limit and not observer.failed.is_set():
        driver.step(time.time())
        if door is not None:
            with _answered(observer):
                door.step(time.time())
        plans = [p for p in driver.procs if p.alive and p.kind == "plan"]
        if not unfinished() and not plans:
            return
        if time.time() - last_resume > 10:
            driver.wind_down()
            if door is not None:
                with _answered(observer):
                    door.wind_down()
            last_resume = time.time()
        time.sleep(0.5)
    if not observer.failed.is_set():
        left = ", ".join(f"{r.name} {r.status.value}" for r in unfinished())
        observer.record([Violation("settled", "", "", f"not ended after the wind-down: {left}")])


@contextlib.contextmanager
def _answered(observer: Observer) -> Iterator[None]:
    """A desk call still failing after its retries (desk_door.CALL_RETRY) is a finding,
    e.g. a watchdog tick that fails for good (TickError): it stops the soak, not crashes it."""
    try:
        yield
    except DeskSiteError as exc:
        observer.record([Violation("desk-unanswered", "", "", str(exc)[-600:])])


def _settle_hosts(fleet: Fleet, timeout: float = 20.0) -> None:
    """Give every agent a moment to answer again after the last faults."""
    deadline = time.monotonic() + timeout
    for host in fleet.hosts:
        while time.monotonic() < deadline:
            try:
                fleet.version(host)
                break
            except FleetError:
                time.sleep(0.2)


def _report(
    options: Options,
    driver: Driver,
    observer: Observer,
    faults: list[Fault],
    violations: list[Violation],
    t0: float,
    door: DeskDoor | None = None,
) -> str:
    lines = ["faults injected by kind:"]
    for kind, count in sorted(Counter(f.kind.value for f in faults).items()):
        lines.append(f"  {kind:<24} {count}")
    lines.append("rollouts by final status:")
    for status, count in sorted(Counter(r.status.value for r in driver.rollouts.values()).items()):
        lines.append(f"  {status:<24} {count}")
    if door is not None:
        lines.append(f"desk rollouts by final status ({door.calls} calls into the site):")
        finals = Counter(r.status.value for r in door.rollouts.values() if not r.dropped)
        lines += [f"  {status:<24} {count}" for status, count in sorted(finals.items())]
    lines.append("runner processes by exit:")
    for what, count in sorted(driver.exits.items()):
        lines.append(f"  {what:<24} {count}")
    lines.append(
        f"observer: {observer.passes} passes, {len(observer.commands)} update commands seen, "
        f"{observer.restarts} program restarts, {observer.checks} host-vs-row checks"
        + (f"; {observer.error}" if observer.error else "")
    )
    if violations:
        lines.append(f"seed {options.seed}: {len(violations)} violation(s)")
        if observer.context_seen:
            lines.append(f"at the first violation: {observer.context_seen}")
        lines += _explain(driver, violations, faults, t0, door)
    return "\n".join(lines)


def _explain(
    driver: Driver,
    violations: list[Violation],
    faults: list[Fault],
    t0: float,
    door: DeskDoor | None = None,
) -> list[str]:
    """Each violation with its host's rows (status, reason, log) and the faults near it."""
    store = driver.service.store
    lines = []
    for violation in violations:
        lines.append(violation.line())
        if door is not None:
            lines += door.explain(violation.update, violation.host)
        for rollout in driver.rollouts.values():
            if violation.update and rollout.name != violation.update:
                continue
            update = store.get_update(rollout.name)
            for row in store.get_rows(rollout.name):
                if violation.host and row.server != violation.host:
                    continue
                lines.append(
                    f"  {rollout.name} ({update.status.value}, {rollout.kind} "
                    f"{rollout.commit[:12]}) #{row.idx} {row.server} {row.status.value}/"
                    f"{row.step.value} lease={row.lease_owner or '-'} reason={row.reason!r}"
                )
                lines += [f"      | {line}" for line in row.log.splitlines()[-25:]]
        for fault in faults:
            if violation.host and fault.target == violation.host:
                lines.append("  fault " + fault.line(t0))
    lines.append(f"runner logs: {driver.logs}")
    if door is not None:
        lines.append(f"desk logs: {door.site.root / 'logs'} (workers, desk-rpc, agent_update.log)")
    return lines
