"""Operator commands (the form's buttons) as pure transitions.

Each checks that it applies to the current status and raises
``TransitionError`` with a sentence an operator understands otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent_update.rollout import targets
from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.machine import restart_set
from agent_update.rollout.model import (
    FAILED_ROW_STATUSES,
    OPERATOR_PAUSE,
    AgentStatus,
    Row,
    RowStatus,
    Server,
    Step,
    Update,
    UpdateStatus,
    append_log,
    ended,
)
from agent_update.rollout.running import RunningObs, stale_reason

# ----------------------------------------------------------------- server list


def eligible(server: Server, update: Update) -> bool:
    """Active, of a chosen type, named by the patterns, carrying the tags, not opted out."""
    if server.opted_out:
        return False
    if update.server_types and server.server_type not in update.server_types:
        return False
    if not targets.matches(server, update.server_pattern, update.server_tags):
        return False
    return not (update.exclude_self_hosted and server.self_hosted)


def rows_from_registry(update: Update, servers: Iterable[Server]) -> list[Row]:
    """The servers table as Save fills it: one Draft row per eligible server."""
    chosen = [s for s in servers if eligible(s, update)]
    return [
        Row(idx=i, server=s.name, server_type=s.server_type) for i, s in enumerate(chosen, start=1)
    ]


# -------------------------------------------------------------------- planning


def fresh(row: Row) -> Row:
    """The row with no attempt under way: timers, step, reason, log and lease reset."""
    return row.copy(
        step=Step.NONE,
        started_at=None,
        ended_at=None,
        deadline=None,
        healthy_since=None,
        reason="",
        log="",
        pids_before="",
        command_ended_at=None,
        seen_after="",
        lease_owner="",
        lease_expires=None,
    )


@dataclass(frozen=True)
class PlanOutcome:
    """What Build Plan learnt of one server."""

    commit: str | None = None
    error: str = ""
    opted_out: bool = False
    running: RunningObs | None = None  # program start times; None: not observed
    # Reached, but its commit could not be read (agent down, crash-looping, not
    # answering over HTTP; or SSH unreachable): planned anyway, the precheck judges.
    unknown: str = ""


def begin_planning(update: Update, owner: str, now: float, ttl: float) -> Update:
    """Draft/Pending (or a planner that died) -> Planning, under a lease."""
    expired = update.status is UpdateStatus.PLANNING and (
        update.lease_expires is None or update.lease_expires <= now
    )
    if update.status not in (UpdateStatus.DRAFT, UpdateStatus.PENDING) and not expired:
        raise TransitionError(
            f"Build Plan needs a Draft or Pending update, not {update.status.value}"
        )
    return update.copy(
        status=UpdateStatus.PLANNING, lease_owner=owner, lease_expires=now + ttl, why_stuck=""
    )


def apply_plan(
    update: Update, rows: list[Row], outcomes: dict[int, PlanOutcome]
) -> tuple[Update, list[Row]]:
    """Rows -> Pending / Skipped / Draft(reason); the update -> Pending or Draft."""
    planned: list[Row] = []
    for row in rows:
        out = outcomes.get(row.idx, PlanOutcome(error="not probed"))
        base = fresh(row)
        if out.opted_out:
            planned.append(base.copy(status=RowStatus.SKIPPED, reason="opted out of agent updates"))
        elif out.unknown and not out.error:
            # A broken agent is what a repair is for: never hold the plan up for it.
            reason = f"current commit unknown: {out.unknown}"
            planned.append(
                base.copy(
                    status=RowStatus.PENDING,
                    current_commit="",
                    reported_commit="",
                    rollback_commit=update.rollback_commit if update.rollback_to_specific else "",
                    agent_status=AgentStatus.INACTIVE,
                    reason=reason,
                    log=f"plan: {reason}",
                )
            )
        elif out.error or not out.commit:
            reason = out.error or "agent reported no commit"
            planned.append(base.copy(status=RowStatus.DRAFT, reason=reason))
        else:
            # Each row's own rollback commit is decided at its precheck (rollout.rollback_target).
            rollback = update.rollback_commit if update.rollback_to_specific else ""
            # /version shows the checkout: skip only when the programs run it too.
            on_target = out.commit == update.commit
            stale = ""
            if on_target and out.running is not None:
                restarted = restart_set(update, out.running.programs)
                stale = stale_reason(out.running, restarted)
            status = RowStatus.SKIPPED if on_target and not stale else RowStatus.PENDING
            reason = stale or ("already on the target commit" if on_target else "")
            planned.append(
                base.copy(
                    status=status,
                    current_commit=out.commit,
                    reported_commit=out.commit,
                    rollback_commit=rollback,
                    agent_status=AgentStatus.ACTIVE,
                    reason=reason,
                    log=f"plan: {reason}" if reason else "",
                )
            )
    stuck = [r for r in planned if r.status is RowStatus.DRAFT]
    why = "\n".join(f"{r.server}: {r.reason}" for r in stuck)
    status = UpdateStatus.DRAFT if stuck or not planned else UpdateStatus.PENDING
    if not planned:
        why = "no servers to update: the servers table is empty"
    done = update.copy(status=status, why_stuck=why, lease_owner="", lease_expires=None)
    return done, planned


# ------------------------------------------------------------------- the walk


def start(update: Update, rows: list[Row], now: float) -> Update:
    """Pending -> Running; Paused -> Running too (Resume must work)."""
    if update.status is UpdateStatus.PAUSED:
        return resume(update)
    if update.status is not UpdateStatus.PENDING:
        raise TransitionError(f"Start needs a Pending update, not {update.status.value}")
    if not rows:
        raise ValidationError("servers", "there is no server to update")
    draft = [r.server for r in rows if r.status is RowStatus.DRAFT]
    if draft:
        raise ValidationError("servers", f"not planned yet: {', '.join(draft)}; run Build Plan")
    return update.copy(
        status=UpdateStatus.RUNNING, started_at=now, ended_at=None, halted=False, halt_reason=""
    )


def pause(update: Update) -> Update:
    if update.status is not UpdateStatus.RUNNING:
        raise TransitionError(f"Pause needs a Running update, not {update.status.value}")
    return update.copy(status=UpdateStatus.PAUSED, pause_reason=OPERATOR_PAUSE)


def resume(update: Update) -> Update:
    """Paused -> Running; after a wave's gate paused it, the next wave opens anyway."""
    if update.status is not UpdateStatus.PAUSED:
        raise TransitionError(f"Resume needs a Paused update, not {update.status.value}")
    return update.copy(
        status=UpdateStatus.RUNNING,
        pause_reason="",
        paused_at_gate=False,
        gate_override=update.gate_override or update.paused_at_gate,
    )


def force_continue(update: Update, rows: list[Row]) -> tuple[Update, list[Row]]:
    """Failed rows back to Pending with timers and reasons reset, their logs kept.

    What the failed attempt did stays in the row's log, with a line saying
    the operator retried it: the next attempt's lines follow it. The open
    wave starts afresh with them: its own outcome counts from here.
    """
    if update.status not in (UpdateStatus.FAILURE, UpdateStatus.PARTIAL_SUCCESS):
        raise TransitionError(
            f"Force Continue needs a Failure or Partial Success update, not {update.status.value}"
        )
    changed = [
        fresh(r).copy(status=RowStatus.PENDING, log=append_log(r.log, retried_line(r)))
        for r in rows
        if r.status in FAILED_ROW_STATUSES
    ]
    done = update.copy(
        status=UpdateStatus.RUNNING,
        ended_at=None,
        halted=False,
        halt_reason="",
        wave_started=0,
        wave_base_succeeded=sum(r.status is RowStatus.SUCCESS for r in rows),
        wave_base_failed=0,
        gate_override=False,
        paused_at_gate=False,
        pause_reason="",
    )
    return done, changed


def retried_line(row: Row) -> str:
    """The log line Force Continue leaves between a failed attempt and the next."""
    why = f": {row.reason}" if row.reason else ""
    return f"force continue: retried after {row.status.value}{why}"


ABORTABLE = (UpdateStatus.PENDING, UpdateStatus.RUNNING, UpdateStatus.PAUSED)


def abort(update: Update, now: float, *, rollback: bool = False, reason: str = "") -> Update:
    """Stop for good: nothing new starts, rows in flight finish and are verified.

    With ``rollback``, the rows this rollout updated are rolled back (lanes at
    a time, each verified) before the update ends ``Aborted``. Unlike Pause,
    there is no Resume; Pending rows stay Pending, untouched.
    """
    if update.status not in ABORTABLE:
        raise TransitionError(
            f"Abort needs a Pending, Running or Paused update, not {update.status.value}"
        )
    why = reason.strip() or "aborted by an operator"
    changes: dict[str, object] = dict(
        aborted=True, abort_rollback=rollback, abort_reason=why, pause_reason=""
    )
    if update.status is UpdateStatus.PENDING:  # nothing ran: nothing to wait for
        changes.update(ended(UpdateStatus.ABORTED, now, halt_reason=why))
    else:  # the runner finishes rows in flight (and rolls back) before it ends
        changes.update(status=UpdateStatus.RUNNING)
    return update.copy(**changes)
