"""The update-level decision: which rows start, resume or roll back; halts, waves, end.

Pure: no I/O and no clock (``now`` is an input). It reads a ``Tally`` (counts
and the few rows it may act on), never every row, so its cost does not grow
with the fleet. ``machine`` re-exports it with the row-level walk.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from agent_update.rollout import schedule, waves
from agent_update.rollout.budget import budget_reason
from agent_update.rollout.model import (
    TEST_MODE_PAUSE,
    GateAction,
    Row,
    RowStatus,
    Update,
    UpdateStatus,
    ended,
)
from agent_update.rollout.tally import Tally, tally_from_rows


@dataclass
class Decision:
    """What the runner should do next for one update."""

    start: list[int] = field(default_factory=list)  # Pending rows to claim
    resume: list[int] = field(default_factory=list)  # active rows whose lease expired
    rollback: list[int] = field(default_factory=list)  # Success rows to roll back (abort)
    changes: dict[str, object] = field(default_factory=dict)  # update fields to write

    @property
    def idle(self) -> bool:
        return not (self.start or self.resume or self.rollback or self.changes)


def lease_live(row: Row, now: float) -> bool:
    return bool(row.lease_owner) and row.lease_expires is not None and row.lease_expires > now


def as_tally(view: Tally | list[Row]) -> Tally:
    return view if isinstance(view, Tally) else tally_from_rows(view)


def halt_reason(update: Update, view: Tally | list[Row], now: float | None = None) -> str:
    """Why the rollout must start no new row, or "" to go on (docs/design.md §2)."""
    tally = as_tally(view)
    reasons = []
    for status, row in tally.first.items():
        if status is RowStatus.FATAL:
            reasons.append((row.idx, f"{row.server} is Fatal: {row.reason}"))
        elif status is RowStatus.ROLLED_BACK and update.stop_after_single_rollback:
            reasons.append(
                (row.idx, f"{row.server} was rolled back and stop after single rollback is on")
            )
        elif status is RowStatus.FAILURE and not update.auto_rollback:
            reasons.append((row.idx, f"{row.server} failed and auto rollback is off: {row.reason}"))
    if reasons:
        return min(reasons)[1]
    over = budget_reason(update, tally)
    if over:
        return over
    if update.deadline_at is not None and now is not None and now >= update.deadline_at:
        return "the rollout's deadline has passed: nothing new starts"
    return ""


def final_status(view: Tally | list[Row]) -> UpdateStatus:
    """Success only with successes/skips; Partial when some of both; else Failure."""
    tally = as_tally(view)
    unfinished = tally.failed + tally.count(RowStatus.PENDING, RowStatus.DRAFT)
    if not unfinished:
        return UpdateStatus.SUCCESS
    return UpdateStatus.PARTIAL_SUCCESS if tally.succeeded else UpdateStatus.FAILURE


def decide(
    update: Update, view: Tally | list[Row], now: float, busy: Collection[str] = frozenset()
) -> Decision:
    """The update-level step: starts, resumes, halts, waves, test-mode pause, abort, end.

    ``busy`` names servers held by another update's row: their Pending rows
    wait (they are not started) and the lanes go to other rows.
    """
    tally = as_tally(view)
    decision = Decision()
    if update.status not in (UpdateStatus.RUNNING, UpdateStatus.PAUSED):
        return decision
    active = tally.active
    decision.resume = [r.idx for r in active if not lease_live(r, now)]
    if update.aborted:
        return _abort(update, tally, decision, now)

    halted = update.halted
    if not halted:
        reason = halt_reason(update, tally, now)
        if reason:
            halted = True
            decision.changes.update(halted=True, halt_reason=reason)

    if not active and (halted or not tally.waiting):
        decision.changes.update(ended(final_status(tally), now))
        return decision
    if halted or update.status is UpdateStatus.PAUSED:
        return decision
    waiting = schedule.waiting_reason(update.window, now)
    if waiting != update.waiting_reason:  # written when it changes, not at every look
        decision.changes["waiting_reason"] = waiting
    if waiting:  # outside the maintenance window: rows in flight finish, none starts
        return decision

    free = update.lanes - len(active)
    if update.waves:
        room = _wave_room(update, tally, decision, now)
        if room is None:
            return decision
        free = min(free, room)
    if update.test_mode and not update.paused_for_test_mode:
        started = tally.started
        if started >= update.test_mode_count:
            if not active:
                decision.changes.update(
                    status=UpdateStatus.PAUSED,
                    paused_for_test_mode=True,
                    pause_reason=(
                        f"{TEST_MODE_PAUSE} {started} servers updated; Resume runs the rest"
                    ),
                )
            return decision
        free = min(free, update.test_mode_count - started)
    ready = [r for r in tally.pending if r.server not in busy]
    decision.start = [r.idx for r in ready[: max(free, 0)]]
    if decision.start and update.waves:
        before = 0 if "wave" in decision.changes else update.wave_started  # a wave just opened
        decision.changes["wave_started"] = before + len(decision.start)
    return decision


def _wave_room(update: Update, tally: Tally, decision: Decision, now: float) -> int | None:
    """Rows the open wave may still start, opening the next wave when its gate passes.

    None: nothing may start now (the wave's rows are still running, or its
    gate failed and the rollout pauses or halts: ``decision.changes`` says so).
    """
    room = waves.capacity(update, tally.to_run)
    if room is None:
        return update.lanes
    left = room - update.wave_started
    if left > 0:
        return left
    if tally.active:
        return None  # the wave's last rows are still running
    reason = "" if update.gate_override else waves.gate_reason(update, tally)
    if reason:
        if update.wave_gate_action is GateAction.HALT:
            decision.changes.update(
                ended(final_status(tally), now, halted=True, halt_reason=reason)
            )
        else:
            decision.changes.update(
                status=UpdateStatus.PAUSED, pause_reason=reason, paused_at_gate=True
            )
        return None
    opened = waves.open_next(update, tally)
    decision.changes.update(opened)
    after = waves.capacity(update.copy(**opened), tally.to_run)
    return update.lanes if after is None else after


def _abort(update: Update, tally: Tally, decision: Decision, now: float) -> Decision:
    """Nothing new starts; optionally roll back this rollout's successes; then end."""
    rollback = tally.rollbackable if update.abort_rollback else []
    free = max(update.lanes - len(tally.active), 0)
    decision.rollback = [r.idx for r in rollback[:free]]
    if not tally.active and not rollback:
        reason = update.abort_reason or "aborted"
        decision.changes.update(ended(UpdateStatus.ABORTED, now, halt_reason=reason))
    return decision
