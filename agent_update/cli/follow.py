"""`run` stays until the rollout settles, whoever runs its rows, and stops cleanly.

It follows the stored state, not only this process's threads: rows held by
another live runner are waited for (and named), rows whose lease expired are
taken over, new rows are started as the machine decides. Signals only set
flags here; the loop acts on them: the first Ctrl-C (or SIGTERM) starts
nothing new and lets rows in flight finish their step and verification, a
second one hands this process's leases back and stops at once.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from agent_update.cli.output import LiveView, progress_lines
from agent_update.rollout import machine
from agent_update.rollout.model import FAILED_ROW_STATUSES, Row, RowStatus, Update, UpdateStatus
from agent_update.rollout.runner import Runner, ThreadLauncher
from agent_update.service import Service

FOLLOW_FIELDS = (
    *machine.DECISION_FIELDS,
    "ended_at",
    "current_commit",
    "reported_commit",
)
TICK = 0.1  # seconds between two looks at the signal flags
REFRESH = 0.5  # seconds between two reads of the stored state


class Abandoned(Exception):
    """The second Ctrl-C: this process stopped at once; ``released`` rows were handed back."""

    def __init__(self, released: list[tuple[str, int]]) -> None:
        super().__init__(f"{len(released)} rows handed back")
        self.released = released


@dataclass
class Interrupts:
    """Counts SIGINT/SIGTERM; the handler only records, the loops act."""

    count: int = 0
    _previous: dict[int, object] = field(default_factory=dict)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1

    @contextmanager
    def installed(self) -> Iterator[Interrupts]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]


def settled(update: Update, rows: list[Row]) -> bool:
    """Nothing more will happen without an operator: ended, or paused with nothing in flight."""
    if update.status.is_final:
        return True
    if update.status is UpdateStatus.PAUSED:
        return not any(machine.is_active(r) for r in rows)
    return update.status is not UpdateStatus.RUNNING


def waiting_note(rows: list[Row], mine: set[int], now: float) -> str:
    """Names the rows another runner holds, and when their leases end."""
    theirs = [
        r for r in rows if machine.is_active(r) and r.idx not in mine and machine.lease_live(r, now)
    ]
    if not theirs:
        return ""
    names = ", ".join(f"{r.server} ({r.status.value})" for r in theirs[:5])
    more = f" and {len(theirs) - 5} more" if len(theirs) > 5 else ""
    ends = max(0.0, max(r.lease_expires or now for r in theirs) - now)
    return (
        f"waiting for {names}{more}: held by another runner; taken over if its lease "
        f"is not renewed within {ends:.0f}s"
    )


def failures(seen: dict[int, RowStatus], rows: list[Row]) -> list[str]:
    """A line for each row that has newly ended badly (``seen`` is updated)."""
    lines = []
    for row in rows:
        if row.status in FAILED_ROW_STATUSES and seen.get(row.idx) is not row.status:
            lines.append(f"{row.server} {row.status.value}: {row.reason}")
        seen[row.idx] = row.status
    return lines


class Follower:
    """Drives and watches one update until it settles or the operator stops it."""

    def __init__(self, service: Service, name: str, view: LiveView, interrupts: Interrupts):
        self.service, self.name, self.view, self.interrupts = service, name, view, interrupts
        self.runner = service.runner
        self._seen = 0
        self._note = ""
        self._statuses: dict[int, RowStatus] | None = None  # failures already there are not news

    def follow(self) -> Update:
        """The update as it stands when settled, or when interrupted (then ``stopped``)."""
        store, runner = self.service.store, self.runner
        while True:
            began = time.perf_counter()
            self._check_signals()
            update = store.get_update(self.name)
            rows = store.get_rows(self.name, FOLLOW_FIELDS)
            now = self.service.clock()
            if self._statuses is None:
                self._statuses = {r.idx: r.status for r in rows}
            for line in failures(self._statuses, rows):
                self.view.say(line)
            if not runner.stopping.is_set():
                decision = machine.decide(update, rows, now)
                if not decision.idle:  # something to start, take over or record
                    claimed = runner.kick(self.name)
                    taken = [r.server for r in rows if r.idx in set(decision.resume) & set(claimed)]
                    if taken:
                        self.view.say(
                            f"took over {', '.join(taken)}: left by a runner that stopped or died"
                        )
                    if claimed or decision.changes:
                        continue
            mine = {idx for name, idx in runner.held() if name == self.name}
            if (
                not mine
                and (settled(update, rows) or runner.stopping.is_set())
                and threads_done(runner)
            ):
                self.view.clear()
                return update
            self._say_once(waiting_note(rows, mine, now))
            self.view.draw(progress_lines(update, rows, now))
            # Watching must not slow the rows this process runs: at most ~10% of a core.
            self._pause(max(REFRESH, 10 * (time.perf_counter() - began)))

    @property
    def stopped(self) -> bool:
        return self.runner.stopping.is_set()

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_signals()
            time.sleep(TICK)

    def _check_signals(self) -> None:
        count = self.interrupts.count
        if count == self._seen:
            return
        self._seen = count
        if count >= 2:
            released = self.runner.abandon()
            self.view.clear()
            raise Abandoned(released)
        self.runner.stop_starting()
        mine = len(self.runner.held())
        self.view.say(
            f"stopping: no new server will start; waiting for the {mine} in flight to finish "
            "their step and verification. Press Ctrl-C again to stop at once (their leases "
            "are handed back, so the next run resumes them at once)."
        )

    def _say_once(self, note: str) -> None:
        if note and note != self._note:
            self.view.say(note)
        self._note = note


def threads_done(runner: Runner) -> bool:
    """Whether this process's row threads have all ended (their errors are raised)."""
    launcher = runner.launcher
    if not isinstance(launcher, ThreadLauncher):
        return True
    try:
        launcher.wait(time.monotonic())
    except TimeoutError:
        return False
    return True


def wait_for_rows(service: Service, view: LiveView, interrupts: Interrupts) -> None:
    """Until this process's row threads are done (``tick``), under the same Ctrl-C rules."""
    runner = service.runner
    seen = 0
    while not threads_done(runner):
        if interrupts.count != seen:
            seen = interrupts.count
            if seen >= 2:
                raise Abandoned(runner.abandon())
            runner.stop_starting()
            view.say("stopping: no new server will start; press Ctrl-C again to stop at once")
        time.sleep(TICK)


def sleep_unless_interrupted(interrupts: Interrupts, seconds: float) -> bool:
    """Sleep ``seconds`` in short steps; True as soon as Ctrl-C or SIGTERM came."""
    end = time.monotonic() + seconds
    while not interrupts.count and time.monotonic() < end:
        time.sleep(0.1)
    return bool(interrupts.count)
