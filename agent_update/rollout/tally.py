"""What the update-level decision reads: counts and the few rows it acts on.

Reading every row at every row's end made the engine's cost grow with the
square of the fleet. A ``Tally`` holds counts per status plus only the rows a
decision can touch: those in flight (at most the lanes, plus orphans), the
next Pending rows (at most the lanes), the first row of each halting status
(for the reason) and the next successful rows (for a rollback on abort). The
stores build it with indexed queries; ``tally_from_rows`` builds the same
from a list (the tests, and the reference the stores are checked against).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_update.rollout.model import (
    FAILED_ROW_STATUSES,
    IN_FLIGHT_ROW_STATUSES,
    Row,
    RowStatus,
    Step,
)

# The row fields a decision reads: a store need not load logs to take one.
DECISION_FIELDS = (
    "idx",
    "server",
    "status",
    "step",
    "started_at",
    "rollback_commit",
    "reason",
    "lease_owner",
    "lease_expires",
)
# Statuses whose first row names why a rollout halts.
HALTING_STATUSES = (RowStatus.FATAL, RowStatus.ROLLED_BACK, RowStatus.FAILURE)


def is_active(row: Row) -> bool:
    """A row a runner owns or must own: in flight, or claimed to start."""
    return row.status in IN_FLIGHT_ROW_STATUSES or (
        row.status is RowStatus.PENDING and row.step is Step.PRECHECK
    )


def ran(row: Row) -> bool:
    """The row went through (or is going through) an update attempt."""
    return row.started_at is not None and row.status is not RowStatus.SKIPPED


def waiting(row: Row) -> bool:
    """A Pending row nobody has claimed yet."""
    return row.status is RowStatus.PENDING and row.step is not Step.PRECHECK


def can_roll_back(row: Row) -> bool:
    """A row updated in this rollout that a rollback on abort may take back."""
    return row.status is RowStatus.SUCCESS and bool(row.rollback_commit)


@dataclass
class Tally:
    """Counts per row status and the few rows a decision may act on (by idx)."""

    counts: dict[RowStatus, int] = field(default_factory=dict)
    ran: int = 0  # rows that went through an update attempt (see ``ran``)
    planned_skips: int = 0  # Skipped by Build Plan: never part of a wave
    active: list[Row] = field(default_factory=list)
    pending: list[Row] = field(default_factory=list)  # the first ``limit`` waiting rows
    first: dict[RowStatus, Row] = field(default_factory=dict)  # of each halting status
    rollbackable: list[Row] = field(default_factory=list)  # the first ``limit`` of them

    @classmethod
    def from_counts(cls, counted: Iterable[Sequence[Any]], **rows: list[Row] | dict) -> Tally:
        """From a store's ``(status, rows, rows started)`` triples plus the rows it fetched.

        Build Plan's skips are the Skipped rows that never started.
        """
        by_status = {RowStatus(c[0]): (int(c[1]), int(c[2] or 0)) for c in counted if c[1]}
        skipped = by_status.get(RowStatus.SKIPPED, (0, 0))
        return cls(
            counts={s: n for s, (n, _) in by_status.items()},
            ran=sum(n for s, (_, n) in by_status.items() if s is not RowStatus.SKIPPED),
            planned_skips=skipped[0] - skipped[1],
            **rows,
        )

    def count(self, *statuses: RowStatus) -> int:
        return sum(self.counts.get(s, 0) for s in statuses)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def to_run(self) -> int:
        """Rows the rollout means to update: every row but Build Plan's skips."""
        return self.total - self.planned_skips

    @property
    def succeeded(self) -> int:
        return self.count(RowStatus.SUCCESS)

    @property
    def failed(self) -> int:
        return self.count(*FAILED_ROW_STATUSES)

    @property
    def started(self) -> int:
        """Rows that ran or are running, claimed ones included (test mode counts these)."""
        return self.ran + sum(1 for r in self.active if not ran(r))

    @property
    def waiting(self) -> int:
        """Pending rows not claimed yet (all of them, not only those listed)."""
        claimed = sum(1 for r in self.active if r.status is RowStatus.PENDING)
        return self.count(RowStatus.PENDING) - claimed


def tally_from_rows(rows: list[Row], limit: int | None = None) -> Tally:
    """The Tally of a full list of rows; ``limit`` caps the listed rows (None: all)."""
    ordered = sorted(rows, key=lambda r: r.idx)
    first: dict[RowStatus, Row] = {}
    for row in ordered:
        if row.status in HALTING_STATUSES:
            first.setdefault(row.status, row)
    cut = slice(None) if limit is None else slice(0, limit)
    return Tally(
        counts=dict(Counter(r.status for r in rows)),
        ran=sum(ran(r) for r in rows),
        planned_skips=sum(r.status is RowStatus.SKIPPED and r.started_at is None for r in rows),
        active=[r for r in ordered if is_active(r)],
        pending=[r for r in ordered if waiting(r)][cut],
        first=first,
        rollbackable=[r for r in ordered if can_roll_back(r)][cut],
    )


@dataclass(frozen=True)
class RowTimes:
    """When the last row ended, and the mean time of the rows that ran and ended."""

    last_end: float | None = None
    mean: float | None = None
    count: int = 0


def times_from_rows(rows: list[Row]) -> RowTimes:
    spans = [
        r.ended_at - r.started_at
        for r in rows
        if ran(r) and r.ended_at is not None and r.started_at is not None
    ]
    ends = [r.ended_at for r in rows if r.ended_at is not None]
    mean = sum(spans) / len(spans) if spans else None
    return RowTimes(max(ends) if ends else None, mean, len(spans))
