"""The rollout's decisions as pure functions: state + observations -> next state.

No I/O and no clock: ``now`` is an input. Two levels:

* ``decide`` looks at the whole update and says which rows to start, which
  orphaned rows (dead runner, expired lease) to resume, and how the update's
  own status changes (halt, test-mode pause, end status).
* ``row_action`` + ``after_*`` walk one row: precheck, command, verification,
  rollback. Each returns a new Row; the runner stores it before acting again,
  so a runner killed between two steps is resumed at the right place.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from enum import Enum

from agent_update.rollout import verdicts
from agent_update.rollout.model import (
    FAILED_ROW_STATUSES,
    IN_FLIGHT_ROW_STATUSES,
    AgentStatus,
    Row,
    RowStatus,
    Step,
    Update,
    UpdateStatus,
    append_log,
)
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs, Programs

# ---------------------------------------------------------------- update level


@dataclass
class Decision:
    """What the runner should do next for one update."""

    start: list[int] = field(default_factory=list)  # Pending rows to claim
    resume: list[int] = field(default_factory=list)  # active rows whose lease expired
    changes: dict[str, object] = field(default_factory=dict)  # update fields to write

    @property
    def idle(self) -> bool:
        return not (self.start or self.resume or self.changes)


# The row fields ``decide`` reads: a store need not load logs to take a decision.
DECISION_FIELDS = (
    "idx",
    "server",
    "status",
    "step",
    "started_at",
    "reason",
    "lease_owner",
    "lease_expires",
)


def is_active(row: Row) -> bool:
    """A row a runner owns or must own: in flight, or claimed to start."""
    return row.status in IN_FLIGHT_ROW_STATUSES or (
        row.status is RowStatus.PENDING and row.step is Step.PRECHECK
    )


def lease_live(row: Row, now: float) -> bool:
    return bool(row.lease_owner) and row.lease_expires is not None and row.lease_expires > now


def ran(row: Row) -> bool:
    """The row went through (or is going through) an update attempt."""
    return row.started_at is not None and row.status is not RowStatus.SKIPPED


def halt_reason(update: Update, rows: list[Row]) -> str:
    """Why the rollout must start no new row, or "" to go on (DESIGN §2)."""
    for row in rows:
        if row.status is RowStatus.FATAL:
            return f"{row.server} is Fatal: {row.reason}"
        if row.status is RowStatus.ROLLED_BACK and update.stop_after_single_rollback:
            return f"{row.server} was rolled back and stop after single rollback is on"
        if row.status is RowStatus.FAILURE and not update.auto_rollback:
            return f"{row.server} failed and auto rollback is off: {row.reason}"
    failed = sum(r.status in FAILED_ROW_STATUSES for r in rows)
    if update.failure_budget and failed > update.failure_budget:
        return f"{failed} servers failed, more than the failure budget of {update.failure_budget}"
    return ""


def final_status(rows: list[Row]) -> UpdateStatus:
    """Success only with successes/skips; Partial when some of both; else Failure."""
    succeeded = any(r.status is RowStatus.SUCCESS for r in rows)
    unfinished = any(
        r.status in FAILED_ROW_STATUSES or r.status in (RowStatus.PENDING, RowStatus.DRAFT)
        for r in rows
    )
    if not unfinished:
        return UpdateStatus.SUCCESS
    return UpdateStatus.PARTIAL_SUCCESS if succeeded else UpdateStatus.FAILURE


def decide(
    update: Update, rows: list[Row], now: float, busy: Collection[str] = frozenset()
) -> Decision:
    """The update-level step: starts, resumes, halts, test-mode pause, end.

    ``busy`` names servers held by another update's row: their Pending rows
    wait (they are not started) and the lanes go to other rows.
    """
    decision = Decision()
    if update.status not in (UpdateStatus.RUNNING, UpdateStatus.PAUSED):
        return decision
    active = [r for r in rows if is_active(r)]
    decision.resume = [r.idx for r in active if not lease_live(r, now)]

    halted, reason = update.halted, update.halt_reason
    if not halted:
        reason = halt_reason(update, rows)
        if reason:
            halted = True
            decision.changes.update(halted=True, halt_reason=reason)

    pending = [r for r in rows if r.status is RowStatus.PENDING and r.step is not Step.PRECHECK]
    if not active and (halted or not pending):
        decision.changes.update(status=final_status(rows), ended_at=now)
        return decision
    if halted or update.status is UpdateStatus.PAUSED:
        return decision

    free = update.lanes - len(active)
    if update.test_mode and not update.paused_for_test_mode:
        started = sum(ran(r) or is_active(r) for r in rows)
        if started >= update.test_mode_count:
            if not active:
                decision.changes.update(status=UpdateStatus.PAUSED, paused_for_test_mode=True)
            return decision
        free = min(free, update.test_mode_count - started)
    ready = [r for r in pending if r.server not in busy]
    decision.start = [r.idx for r in sorted(ready, key=lambda r: r.idx)[: max(free, 0)]]
    return decision


# ------------------------------------------------------------------- row level


class RowAction(str, Enum):
    NONE = "none"  # the row has ended
    PRECHECK = "precheck"  # observe opt-out, programs, commit; change nothing
    COMMAND = "command"  # run the update command towards target_commit()
    REOBSERVE = "reobserve"  # a runner died mid-command: look before re-running
    PROBE = "probe"  # one health probe of the verification


def rolling_back(row: Row) -> bool:
    return row.status is RowStatus.ROLLING_BACK


def target_commit(update: Update, row: Row) -> str:
    """The commit the row's current command or verification aims at."""
    return row.rollback_commit if rolling_back(row) else update.commit


def row_action(row: Row) -> RowAction:
    if row.status is RowStatus.PENDING and row.step is Step.PRECHECK:
        return RowAction.PRECHECK
    if row.status not in IN_FLIGHT_ROW_STATUSES:
        return RowAction.NONE
    if row.step is Step.COMMAND_SENT:
        return RowAction.REOBSERVE
    if row.step is Step.VERIFY:
        return RowAction.PROBE
    return RowAction.COMMAND


def claim(row: Row) -> Row:
    """A Pending row chosen to start: the precheck comes next."""
    return row.copy(step=Step.PRECHECK)


def _end(row: Row, status: RowStatus, now: float, reason: str | None = None) -> Row:
    return row.copy(
        status=status,
        step=Step.NONE,
        ended_at=now,
        deadline=None,
        healthy_since=None,
        reason=row.reason if reason is None else reason,
        log=append_log(row.log, f"{status.value}" + (f": {reason}" if reason else "")),
    )


def after_precheck(update: Update, row: Row, obs: PrecheckObs, now: float) -> Row:
    """Skip, fail before changing anything, or go to the command."""
    row = row.copy(started_at=now)
    if obs.opted_out:
        return _end(row, RowStatus.SKIPPED, now, "opted out of agent updates")
    if obs.error:
        return _end(row, RowStatus.FAILURE, now, f"precheck failed: {obs.error}")
    down = not_running(obs.programs)
    if not obs.programs:
        return _end(row, RowStatus.FAILURE, now, "precheck: no agent program found")
    if down:
        # The agent restarts nothing when a program is down: fail before changing anything.
        return _end(row, RowStatus.FAILURE, now, f"precheck: {down}; nothing was changed")
    # A commit reported equal to the target is no reason to skip here: /version
    # shows what is checked out, not what runs (a half-done earlier attempt).
    pids = {name: pid for name, (_, pid) in obs.programs.items()}
    return row.copy(
        status=RowStatus.RUNNING,
        step=Step.COMMAND,
        reported_commit=obs.commit or row.reported_commit,
        pids_before=json.dumps(pids, sort_keys=True),
        attempts=row.attempts + 1,
        reason="",
        log=append_log(row.log, f"precheck ok: {len(pids)} programs running"),
    )


def command_sent(update: Update, row: Row, now: float) -> Row:
    """Recorded before the command runs, so a dead runner's heir looks first."""
    return row.copy(
        step=Step.COMMAND_SENT,
        deadline=now + update.command_timeout,
        log=append_log(row.log, f"command to {target_commit(update, row)[:12]} started"),
    )


def after_command(update: Update, row: Row, obs: CommandObs, now: float) -> Row:
    """Verify in every case: the exit code is a hint, not a verdict.

    Except when the command never began (it could not be built, or another
    command held the server's lock): nothing changed there, so there is
    nothing to verify or roll back. A rollback that cannot begin is Fatal
    through ``fail``: the failed attempt's code is still on the server.
    """
    if obs.not_started:
        what = obs.error or "the command did not start"
        if rolling_back(row):
            return fail(update, row, f"rollback command: {what}", now)
        return _end(row, RowStatus.FAILURE, now, f"{what}; nothing was changed")
    if obs.exit_code == 0 and not obs.error:
        window, note = update.startup_timeout, "command exited 0"
    else:
        window = min(update.failed_command_grace, update.startup_timeout)
        what = obs.error or ("timed out" if obs.timed_out else f"exited {obs.exit_code}")
        note = f"command {what}"
    status = RowStatus.ROLLING_BACK if rolling_back(row) else RowStatus.VERIFYING
    tail = obs.output.strip()[-2000:]
    log = append_log(row.log, note + (f"\n{tail}" if tail else ""))
    if rolling_back(row):
        reason = row.reason  # keep why the update failed
    else:
        reason = "" if obs.exit_code == 0 and not obs.error else note
    # Fast verdicts need a command known to have ended: a timed-out or cut
    # one may still be running on the server, restarting programs.
    ended = obs.exit_code is not None and not obs.timed_out and not obs.error
    return row.copy(
        status=status,
        step=Step.VERIFY,
        deadline=now + window,
        healthy_since=None,
        reason=reason,
        log=log,
        command_ended_at=now if ended else None,
        seen_after="",
    )


def after_reobserve(update: Update, row: Row, obs: ProbeObs, now: float) -> Row:
    """Resume after a crash: keep what already verifies, else re-run the command."""
    healthy, reason = assess(update, row, obs)
    if healthy:
        return row.copy(
            step=Step.VERIFY,
            deadline=now + update.startup_timeout,
            healthy_since=None,
            log=append_log(row.log, "resumed: agent already on target, verifying"),
        )
    return row.copy(
        step=Step.COMMAND, log=append_log(row.log, f"resumed: {reason}; re-running the command")
    )


def after_probe(update: Update, row: Row, obs: ProbeObs, now: float) -> Row:
    """One verification probe: bake, succeed, keep waiting, or fail.

    Once the command has ended, a crash loop or a program that was not
    restarted fails at once (see rollout.verdicts), not at the deadline.
    """
    healthy, reason = assess(update, row, obs)
    row = row.copy(
        agent_status=AgentStatus.ACTIVE if obs.pong else AgentStatus.INACTIVE,
        reported_commit=obs.commit or row.reported_commit,
    )
    quick = ""
    if row.command_ended_at is not None and obs.programs is not None:
        since = now - row.command_ended_at
        seen = verdicts.load(row.seen_after)
        history = verdicts.record(seen, obs.programs, since)
        row = row.copy(seen_after=verdicts.dump(history))
        if verdicts.total_deaths(history) > verdicts.total_deaths(seen):
            row = row.copy(healthy_since=None)  # a program died: the bake starts over
        quick = verdicts.crash_loop(history, obs.pong, since)
        if not quick and not healthy:
            before = json.loads(row.pids_before or "{}")
            quick = verdicts.not_restarted(
                restart_set(update, before), before, obs.programs
            ) or verdicts.still_down(history, obs.programs, since, update.verdict_window)
    if quick:
        if row.reason and not rolling_back(row):  # e.g. "command exited 1": say both
            quick = f"{quick} ({row.reason})"
        return fail(update, row, quick, now, obs.programs)
    if healthy:
        since = row.healthy_since if row.healthy_since is not None else now
        if now - since >= update.bake_time:
            status = RowStatus.ROLLED_BACK if rolling_back(row) else RowStatus.SUCCESS
            why = f"failed, rolled back: {row.reason}" if rolling_back(row) else ""
            return _end(row, status, now, why)
        return row.copy(healthy_since=since)
    row = row.copy(healthy_since=None)
    gave_up = any(state == "FATAL" for state, _ in (obs.programs or {}).values())
    if not gave_up and row.deadline is not None and now < row.deadline:
        return row
    if gave_up:  # supervisor stopped retrying it: waiting longer is pointless
        reason = f"{not_running(obs.programs or {})} (supervisor gave up on it); {reason}"
    return fail(update, row, reason, now, obs.programs)


def fail(
    update: Update, row: Row, reason: str, now: float, programs: Programs | None = None
) -> Row:
    """A failed attempt: roll back when asked to, else end the row.

    The rollback is verified against the pids seen at the failure, so a
    program still running the failed commit's code is not taken as rolled back.
    """
    if rolling_back(row):
        return _end(row, RowStatus.FATAL, now, f"rollback failed: {reason} (after: {row.reason})")
    if update.auto_rollback and row.rollback_commit:
        pids = row.pids_before
        if programs:
            pids = json.dumps({name: pid for name, (_, pid) in programs.items()}, sort_keys=True)
        return row.copy(
            status=RowStatus.ROLLING_BACK,
            step=Step.COMMAND,
            deadline=None,  # the verify timer restarts for the rollback
            healthy_since=None,
            command_ended_at=None,
            seen_after="",
            pids_before=pids,
            reason=reason,
            log=append_log(row.log, f"Failure: {reason}; rolling back to {row.rollback_commit}"),
        )
    return _end(row, RowStatus.FAILURE, now, reason)


# ----------------------------------------------------------------- verification


def restart_set(update: Update, programs: Programs | dict) -> list[str]:
    """The agent programs the command is meant to restart."""
    chosen = []
    for name in sorted(programs):
        short = name.removeprefix("agent:")
        if (
            (update.restart_web and short == "web")
            or (update.restart_redis and short == "redis")
            or (update.restart_rq and short.startswith(("worker-", "worker_backup-")))
        ):
            chosen.append(name)
    return chosen


def not_running(programs: Programs) -> str:
    """Names the first agent program that is not RUNNING, or ""."""
    for name, (state, _) in sorted(programs.items()):
        if state != "RUNNING":
            return f"{name} is {state}"
    return ""


def assess(update: Update, row: Row, obs: ProbeObs) -> tuple[bool, str]:
    """Healthy = pong, target commit, services fine, restarted programs have new pids."""
    target = target_commit(update, row)
    if obs.error:
        return False, obs.error
    if not obs.pong:
        return False, "agent does not answer /ping"
    if obs.commit != target:
        return False, f"agent reports commit {str(obs.commit)[:12]}, expected {target[:12]}"
    if not obs.services_ok:
        return False, obs.services_reason or "agent reports unhealthy services"
    if obs.programs is None:
        return False, "program states unknown"
    down = not_running(obs.programs)
    if down:
        return False, down
    before = json.loads(row.pids_before or "{}")
    for name in restart_set(update, before):
        pid = obs.programs.get(name, ("", None))[1]
        if pid is not None and pid == before.get(name):
            return False, f"{name} was not restarted (pid {pid} unchanged)"
    return True, ""
