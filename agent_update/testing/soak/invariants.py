"""What must hold at every instant of a soak: pure checks over observations.

The observer (observer.py) samples the hosts (the update commands running
under the guard, the checked-out commit, what the agent reports and runs)
and the store (updates, rows, leases); each function here takes those
samples and returns the violations it finds. No I/O, so each invariant is
unit-tested against a violation made up on purpose.

Every rollout of a soak targets a commit of its own, so a commit seen on a
host names the rollout that put it there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent_update.rollout.model import Row, RowStatus, Update, UpdateStatus, last_log_line

WAITING = "waiting: "  # server_leases.waiting_note: the row waits for its server
NOT_STARTED = (RowStatus.DRAFT, RowStatus.PENDING, RowStatus.SKIPPED)


@dataclass(frozen=True)
class Violation:
    invariant: str  # one of the names below
    host: str  # "" when the violation is the rollout's, not a host's
    update: str
    detail: str

    def line(self) -> str:
        where = " ".join(part for part in (self.host, self.update) if part)
        return f"VIOLATION {self.invariant} [{where}]: {self.detail}"


@dataclass(frozen=True)
class Command:
    """An update command seen running under the guard's lock (its ``timeout`` process)."""

    host: str
    pid: int
    commit: str  # the commit it checks out ("" when not found in its text)


@dataclass(frozen=True)
class HostView:
    """What a host itself says: the commit its agent reports and the one its web runs."""

    reported: str
    running: str


@dataclass(frozen=True)
class Span:
    """A runner process's life: ``update`` is "" for ``tick`` (it serves every update)."""

    update: str
    start: float
    end: float | None  # None: still alive


# ------------------------------------------------------------------ commands
def concurrent_commands(commands: Iterable[Command]) -> list[Violation]:
    """Never two update commands on one host at once (the guard's lock must hold)."""
    by_host: dict[str, list[Command]] = {}
    for command in commands:
        by_host.setdefault(command.host, []).append(command)
    return [
        Violation(
            "two-commands",
            host,
            "",
            "update commands running at once: "
            + ", ".join(f"pid {c.pid} (commit {c.commit[:12] or '?'})" for c in seen),
        )
        for host, seen in sorted(by_host.items())
        if len({c.pid for c in seen}) > 1
    ]


def one_rollout_per_server(rows: Mapping[str, list[Row]], now: float) -> list[Violation]:
    """No server worked on by two updates at once.

    A row in flight with a live lease works on its server, unless it says it
    is waiting for it (a row resumed after a dead runner whose server another
    update took meanwhile: it waits, see docs/soak.md).
    """
    holders: dict[str, list[str]] = {}
    for name, update_rows in rows.items():
        for row in update_rows:
            leased = row.lease_owner and row.lease_expires is not None and row.lease_expires > now
            last = last_log_line(row.log)
            if row.status.in_flight and leased and not last.startswith(WAITING):
                holders.setdefault(row.server, []).append(f"{name} #{row.idx} {row.status.value}")
    return [
        Violation("two-rollouts", server, "", "in flight in " + "; ".join(found))
        for server, found in sorted(holders.items())
        if len({entry.split(" #")[0] for entry in found}) > 1
    ]


# ------------------------------------------------------------- row vs host
def last_touch(rows: Iterable[tuple[Update, Row]]) -> tuple[Update, Row] | None:
    """The row whose outcome a host should show now, or None while one is under way.

    Only rows that ran something count (not Pending or Skipped); the one that
    ended last wins; any row in flight (or claimed for its precheck) means the
    host is not settled yet.
    """
    ended: list[tuple[float, Update, Row]] = []
    for update, row in rows:
        if row.status.in_flight or (row.status is RowStatus.PENDING and row.lease_owner):
            return None
        if row.status in NOT_STARTED or row.ended_at is None:
            continue
        ended.append((row.ended_at, update, row))
    if not ended:
        return None
    _, update, row = max(ended, key=lambda item: item[0])
    return update, row


def expected_commit(update: Update, row: Row) -> str | None:
    """What the host must run after ``row``: None when its status promises nothing."""
    if row.status is RowStatus.SUCCESS:
        return update.commit
    if row.status is RowStatus.ROLLED_BACK:
        return row.rollback_commit
    return None


def host_matches_row(update: Update, row: Row, view: HostView) -> Violation | None:
    """A row that ended says what its host really runs (reported and running commit)."""
    want = expected_commit(update, row)
    if want is None or (view.reported == want and view.running == want):
        return None
    return Violation(
        "row-vs-host",
        row.server,
        update.name,
        f"row #{row.idx} is {row.status.value} (so {want[:12]}) but the agent reports "
        f"{view.reported[:12]} and runs {view.running[:12]}",
    )


# ------------------------------------------------------------------ leases
def stale_leases(
    rows: Mapping[str, list[Row]], runners: Iterable[Span], now: float, grace: float
) -> list[Violation]:
    """No row left leased by a dead runner once a live runner has had ``grace`` to take it.

    A row still in flight (or claimed) whose lease expired ``grace`` ago,
    while a runner of its update has been alive for at least ``grace`` and
    still is, was left behind. A ``tick`` looks for expired leases once, when
    it starts (then drives what it resumed): it counts only for a lease that
    had expired by then.
    """
    spans = list(runners)
    found = []
    for name, update_rows in rows.items():
        live = [s for s in spans if s.update in ("", name) and s.end is None]
        for row in update_rows:
            if not row.lease_owner or row.lease_expires is None:
                continue
            if not (row.status.in_flight or row.status is RowStatus.PENDING):
                continue
            for span in live:
                if span.update == "" and span.start < row.lease_expires:
                    continue  # that tick's one pass came before the lease expired
                if max(row.lease_expires, span.start) <= now - grace:
                    found.append(
                        Violation(
                            "stale-lease",
                            row.server,
                            name,
                            f"row #{row.idx} {row.status.value}/{row.step.value} still leased "
                            f"to {row.lease_owner}, expired {now - row.lease_expires:.0f}s ago, "
                            f"though a runner has been alive for {now - span.start:.0f}s",
                        )
                    )
                    break
    return found


# ----------------------------------------------------------------- rollouts
def settled(
    update: Update,
    rows: list[Row],
    now: float,
    grace: float,
    paused_by_operator: bool,
    acted_at: float | None = None,
):
    """Past its deadline (and ``grace`` for rows in flight), a rollout is final or paused
    with a reason; a final one gives a reason for every row that did not succeed.

    An operator who sets it going again after the deadline (Resume, Abort with
    rollback, at ``acted_at``) gives it ``grace`` from then: what they asked runs.
    """
    if update.status in (UpdateStatus.DRAFT, UpdateStatus.PLANNING):
        return None
    why = ""
    if update.status.is_final:
        unexplained = [
            f"#{r.idx} {r.server} {r.status.value}"
            for r in rows
            if r.status.ended and r.status is not RowStatus.SUCCESS and not r.reason.strip()
        ]
        stuck = [f"#{r.idx} {r.server} {r.status.value}" for r in rows if r.status.in_flight]
        if unexplained:
            why = "rows ended without a reason: " + ", ".join(unexplained)
        elif stuck:
            why = f"{update.status.value} with rows still in flight: " + ", ".join(stuck)
        elif update.status is not UpdateStatus.SUCCESS and not (
            update.halt_reason or any(r.reason for r in rows)
        ):
            why = f"{update.status.value} without any reason"
    elif update.deadline_at is not None and now > max(update.deadline_at, acted_at or 0) + grace:
        paused = update.status is UpdateStatus.PAUSED
        if not paused:
            why = f"still {update.status.value} {now - update.deadline_at:.0f}s past its deadline"
        elif not (update.pause_reason or paused_by_operator):
            why = "Paused with no reason (no gate, test mode or operator paused it)"
    if not why:
        return None
    return Violation("settled", "", update.name, why)


def untouched(
    update: Update, rows: list[Row], started: set[int], seen: Mapping[str, set[str]]
) -> list[Violation]:
    """Nothing a rollout never reached was touched.

    ``started``: idx of this update's rows ever seen started; ``seen``: host →
    commits ever checked out, run or commanded there. The rollout's own
    commit on a host whose row never started means it touched that host.
    """
    return [
        Violation(
            "untouched",
            row.server,
            update.name,
            f"row #{row.idx} is {row.status.value} and never started, yet the host has seen "
            f"this rollout's commit {update.commit[:12]}",
        )
        for row in rows
        if row.status in NOT_STARTED
        and row.started_at is None
        and row.idx not in started
        and update.commit in seen.get(row.server, set())
    ]


@dataclass(frozen=True)
class Restart:
    """A program whose pid changed (or that stopped) between two samples of its host."""

    host: str
    program: str
    old: int | None
    new: int | None
    after: float  # the sample that saw the old pid
    before: float  # the sample that saw the new one


Window = tuple[float, float]  # (from, to): something had a reason to restart programs


def unexplained_restarts(
    restarts: Iterable[Restart],
    windows: Mapping[str, list[Window]],
    settle: float,
    never_reached: Mapping[str, list[str]],
) -> list[Violation]:
    """Programs restart only while something is at work on their host.

    A row (of any rollout) between its start and its end, a fault on that
    host until it healed, or the host being on a commit that crashes by
    itself: each opens a window (widened by ``settle``). A restart outside
    every window touched a host nothing had reached; ``never_reached``
    names the rollouts whose row on that host never started.
    """
    found = []
    for restart in restarts:
        spans = windows.get(restart.host, [])
        if any(a - settle <= restart.before and b + settle >= restart.after for a, b in spans):
            continue
        rollouts = ", ".join(never_reached.get(restart.host, [])) or "none"
        found.append(
            Violation(
                "untouched",
                restart.host,
                "",
                f"{restart.program} went from pid {restart.old} to {restart.new} between "
                f"two samples {restart.before - restart.after:.1f}s apart with no row at work "
                f"on the host and no fault; rollouts whose row there never started: {rollouts}",
            )
        )
    return found
