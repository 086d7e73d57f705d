"""The rollout's decisions as pure functions: state + observations -> next state.

No I/O and no clock: ``now`` is an input. Two levels:

* ``decide`` (module ``rollout.decide``) looks at the whole update and says
  which rows to start, resume or roll back on abort, and how the update's own
  status changes (halt, waves, test-mode pause, abort, end status).
* ``row_action`` + ``after_*`` walk one row: precheck, command, verification,
  rollback. Each returns a new Row; the runner stores it before acting again,
  so a runner killed between two steps is resumed at the right place.
"""

from __future__ import annotations

import json
from enum import Enum

from agent_update.rollout import min_healthy, repair, rollback_target, verdicts
from agent_update.rollout.decide import (  # noqa: F401 (re-exported)
    Decision,
    as_tally,
    decide,
    final_status,
    halt_reason,
    lease_live,
)
from agent_update.rollout.model import (
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
from agent_update.rollout.tally import (  # noqa: F401 (re-exported: the runner's vocabulary)
    DECISION_FIELDS,
    Tally,
    is_active,
    ran,
    tally_from_rows,
)

# ---------------------------------------------------------------- update level
# (see rollout.decide; re-exported here with the row-level walk)

ABORT_ROLLBACK = "rolled back on abort"


def abort_rollback(row: Row) -> Row:
    """A Success row taken back on abort: precheck (for its pids), then the rollback."""
    return row.copy(
        status=RowStatus.ROLLING_BACK,
        step=Step.PRECHECK,
        deadline=None,
        healthy_since=None,
        reason=ABORT_ROLLBACK,
        log=append_log(row.log, f"aborted: rolling back to {row.rollback_commit}"),
    )


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
    if row.step is Step.PRECHECK and row.status in (RowStatus.PENDING, RowStatus.ROLLING_BACK):
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


def held_back(update: Update, row: Row) -> Row | None:
    """A claimed row whose update no longer starts servers: back to Pending, untouched.

    Pause (or a halt) may land between the claim and the precheck; the
    server has not been touched yet, so it waits for Resume like any
    Pending row. None: go on with the precheck.
    """
    if row.status is not RowStatus.PENDING or row.step is not Step.PRECHECK:
        return None  # (a Success row prechecked for an abort's rollback goes on)
    if update.status is UpdateStatus.RUNNING and not (update.halted or update.aborted):
        return None
    why = "aborted" if update.aborted else "halted" if update.halted else update.status.value
    return row.copy(
        step=Step.NONE,
        log=append_log(row.log, f"not started: the update is {why}; back to Pending"),
    )


def resumed(row: Row, owner: str, previous: str) -> Row:
    """An orphaned row taken over by a new runner: its log says so, and by whom."""
    was = f"{previous}'s lease expired" if previous else "its runner stopped"
    return row.copy(log=append_log(row.log, f"resumed by {owner} ({was})"))


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
    if rolling_back(row):
        return _abort_precheck(row, obs, now)
    row = row.copy(started_at=now)
    if obs.opted_out:
        return _end(row, RowStatus.SKIPPED, now, obs.skip_reason or "opted out of agent updates")
    if obs.error or (obs.agent_error and not update.repair):
        return _end(row, RowStatus.FAILURE, now, f"precheck failed: {obs.error or obs.agent_error}")
    down = not_running(obs.programs)
    if not obs.programs:
        return _end(row, RowStatus.FAILURE, now, "precheck: no agent program found")
    if update.repair:  # the commit it ran before was the broken one: only a set one
        back = update.rollback_commit if update.rollback_to_specific else ""
        return repair.precheck(row, obs).copy(rollback_commit=back)
    if down:
        # The agent restarts nothing when a program is down: fail before changing anything.
        return _end(row, RowStatus.FAILURE, now, f"precheck: {down}; nothing was changed")
    # A commit reported equal to the target is no reason to skip here: /version
    # shows what is checked out, not what runs (a half-done earlier attempt).
    pids = pids_of(obs.programs)
    back, note = rollback_target.choose(update, restart_set(update, pids), obs.commit, obs.running)
    log = append_log(row.log, f"precheck ok: {len(pids)} programs running; {note}")
    before = row.current_commit
    # Another update may have changed the server since Build Plan: what it ran
    # before this row is what it runs now (the history and undo read it).
    if obs.commit and obs.commit not in (before, update.commit):
        before = obs.commit
        log = append_log(
            log, f"the server is on {obs.commit[:12]} now (planned on {row.current_commit[:12]})"
        )
    return row.copy(
        status=RowStatus.RUNNING,
        step=Step.COMMAND,
        current_commit=before,
        reported_commit=obs.commit or row.reported_commit,
        rollback_commit=back,
        pids_before=json.dumps(pids, sort_keys=True),
        attempts=row.attempts + 1,
        reason="",
        log=log,
    )


def _abort_precheck(row: Row, obs: PrecheckObs, now: float) -> Row:
    """Before a rollback on abort: record the pids it must change, or leave the server be."""
    why = obs.error or ("opted out of agent updates" if obs.opted_out else "")
    why = why or not_running(obs.programs) or ("" if obs.programs else "no agent program found")
    if why:
        return _end(row, RowStatus.FATAL, now, f"not rolled back on abort ({why}): still updated")
    return row.copy(step=Step.COMMAND, pids_before=pids_text(obs.programs))


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
    """Resume after a crash: keep what already verifies, else re-run the command.

    The command re-run must restart the programs that run now: their pids
    become the row's "before". The precheck's may be stale: another update
    may have restarted them meanwhile (its row ran while this one's runner
    was dead), and a later resume would then take that update's restart
    for this command's and call a server Success whose web runs the other
    update's code (soak seed 14295).
    """
    healthy, reason = assess(update, row, obs)
    if healthy:
        return row.copy(
            step=Step.VERIFY,
            deadline=now + update.startup_timeout,
            healthy_since=None,
            log=append_log(row.log, "resumed: agent already on target, verifying"),
        )
    again = row.copy(
        step=Step.COMMAND, log=append_log(row.log, f"resumed: {reason}; re-running the command")
    )
    return again.copy(pids_before=pids_text(obs.programs)) if obs.programs else again


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
    before = json.loads(row.pids_before or "{}")
    restart = restart_set(update, before)
    quick = ""
    history: verdicts.History = {}
    since_end = None if row.command_ended_at is None else now - row.command_ended_at
    if since_end is not None and obs.programs is not None:
        seen = verdicts.load(row.seen_after)
        history = verdicts.record(seen, obs.programs, since_end, obs.uptimes)
        row = row.copy(seen_after=verdicts.dump(history))
        if verdicts.total_deaths(history) > verdicts.total_deaths(seen):
            row = row.copy(healthy_since=None)  # a program died: the bake starts over
        quick = min_healthy.died_young(
            history, restart, update.min_healthy_time
        ) or verdicts.crash_loop(history, obs.pong, since_end)
        if not quick and not healthy:
            quick = verdicts.not_restarted(restart, before, obs.programs) or verdicts.still_down(
                history, obs.programs, since_end, update.verdict_window
            )
    if quick:
        if row.reason and not rolling_back(row):  # e.g. "command exited 1": say both
            quick = f"{quick} ({row.reason})"
        return fail(update, row, quick, now, obs.programs)
    if healthy:
        since = row.healthy_since if row.healthy_since is not None else now
        young = min_healthy.too_young(
            restart,
            obs.programs or {},
            obs.uptimes,
            history,
            since_end,
            now - since,
            update.min_healthy_time,
        )
        if not young and now - since >= update.bake_time:
            return _verified(update, row, before, obs, now)
        # Bounded: a healthy program reaches the minimum within it after the deadline.
        if young and row.deadline is not None and now >= row.deadline + update.min_healthy_time:
            return fail(update, row, f"never healthy for long enough: {young}", now, obs.programs)
        return row.copy(healthy_since=since)
    row = row.copy(healthy_since=None)
    gave_up = any(state == "FATAL" for state, _ in (obs.programs or {}).values())
    if not gave_up and row.deadline is not None and now < row.deadline:
        return row
    if gave_up:  # supervisor stopped retrying it: waiting longer is pointless
        reason = f"{not_running(obs.programs or {})} (supervisor gave up on it); {reason}"
    return fail(update, row, reason, now, obs.programs)


def _verified(update: Update, row: Row, before: dict, obs: ProbeObs, now: float) -> Row:
    """Healthy for long enough: Success (saying what still runs old code) or Rolled Back."""
    if rolling_back(row):
        why = row.reason if row.reason == ABORT_ROLLBACK else f"failed, rolled back: {row.reason}"
        return _end(row, RowStatus.ROLLED_BACK, now, why)
    old = verdicts.old_code(restart_set(update, before), before, obs.programs or {})
    return _end(row, RowStatus.SUCCESS, now, old)


def fail(
    update: Update, row: Row, reason: str, now: float, programs: Programs | None = None
) -> Row:
    """A failed attempt: roll back when asked to, else end the row.

    The rollback is verified against the pids seen at the failure, so a
    program still running the failed commit's code is not taken as rolled back.
    """
    if rolling_back(row):
        return _end(row, RowStatus.FATAL, now, f"rollback failed: {reason} (after: {row.reason})")
    if update.auto_rollback and row.rollback_commit and not repair.keeps_failed(update):
        pids = pids_text(programs) if programs else row.pids_before
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
    if update.auto_rollback:  # the precheck found only the target running here
        reason = f"{reason}; not rolled back: nothing to roll back to (see the precheck)"
    return _end(row, RowStatus.FAILURE, now, reason)


# ----------------------------------------------------------------- verification


def pids_of(programs: Programs) -> dict[str, int | None]:
    """Program name -> pid, as a row records them."""
    return {name: pid for name, (_, pid) in programs.items()}


def pids_text(programs: Programs) -> str:
    """The pids as the row's ``pids_before`` stores them."""
    return json.dumps(pids_of(programs), sort_keys=True)


def restart_set(update: Update, programs: Programs | dict) -> list[str]:
    """The agent programs the command is meant to restart (a repair restarts them all)."""
    if update.repair:
        return sorted(programs)
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
