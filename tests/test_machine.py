"""The pure decisions: every rule of docs/design.md §2, examples and properties."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_update.rollout import commands, machine
from agent_update.rollout.machine import RowAction
from agent_update.rollout.model import Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs

OLD, NEW, BACK = "a" * 40, "b" * 40, "c" * 40
PROGRAMS = {"agent:web": ("RUNNING", 10), "agent:worker-0": ("RUNNING", 11)}


def upd(**kw) -> Update:
    base = dict(
        name="U",
        repo="/r",
        branch="master",
        commit=NEW,
        status=UpdateStatus.RUNNING,
        startup_timeout=10,
        command_timeout=20,
        failed_command_grace=2,
        min_healthy_time=0,  # these tests are not about it (see test_verdicts.py)
    )
    base.update(kw)
    return Update(**base)


def pending(n: int) -> list[Row]:
    return [
        Row(
            idx=i, server=f"s{i}", status=RowStatus.PENDING, current_commit=OLD, rollback_commit=OLD
        )
        for i in range(1, n + 1)
    ]


def healthy(commit: str = NEW, web_pid: int = 20) -> ProbeObs:
    programs = {"agent:web": ("RUNNING", web_pid), "agent:worker-0": ("RUNNING", 11)}
    return ProbeObs(pong=True, commit=commit, programs=programs)


def to_verifying(u: Update, row: Row, exit_code: int = 0, now: float = 0) -> Row:
    row = machine.after_precheck(
        u, machine.claim(row), PrecheckObs(programs=PROGRAMS, commit=OLD), now
    )
    assert row.status is RowStatus.RUNNING and row.step is Step.COMMAND
    row = machine.command_sent(u, row, now)
    return machine.after_command(u, row, CommandObs(exit_code=exit_code), now)


# ------------------------------------------------------------------ row level


def test_success_path_needs_commit_and_new_pid_and_bake():
    u = upd(bake_time=2)
    row = to_verifying(u, pending(1)[0])
    assert row.status is RowStatus.VERIFYING and row.deadline == 10
    same_pid = machine.after_probe(u, row.copy(command_ended_at=None), healthy(web_pid=10), 1)
    assert same_pid.status is RowStatus.VERIFYING and same_pid.healthy_since is None
    # Once the command is known to have ended, an unchanged pid never changes: fail now.
    stale = machine.after_probe(u, row, healthy(web_pid=10), 1)
    assert stale.status is RowStatus.ROLLING_BACK and "nothing restarted" in stale.reason
    old_commit = machine.after_probe(u, row, healthy(commit=OLD), 1)
    assert old_commit.healthy_since is None
    baking = machine.after_probe(u, row, healthy(), 1)
    assert baking.status is RowStatus.VERIFYING and baking.healthy_since == 1
    glitch = machine.after_probe(u, baking, ProbeObs(pong=False), 2)
    assert glitch.healthy_since is None  # the bake restarts after any bad probe
    done = machine.after_probe(u, machine.after_probe(u, glitch, healthy(), 3), healthy(), 5)
    assert done.status is RowStatus.SUCCESS and done.step is Step.NONE and done.ended_at == 5


def test_timeout_rolls_back_with_a_fresh_timer_then_rolled_back():
    u = upd()
    row = to_verifying(u, pending(1)[0])
    failed = machine.after_probe(u, row, ProbeObs(pong=False), 10)
    assert failed.status is RowStatus.ROLLING_BACK and failed.step is Step.COMMAND
    assert failed.deadline is None and "ping" in failed.reason
    assert machine.target_commit(u, failed) == OLD
    sent = machine.command_sent(u, failed, 11)
    verifying = machine.after_command(u, sent, CommandObs(exit_code=0), 11)
    assert verifying.deadline == 21  # the verify timer restarts for the rollback
    done = machine.after_probe(u, verifying, healthy(commit=OLD), 12)
    assert done.status is RowStatus.ROLLED_BACK and "ping" in done.reason


def test_rollback_failure_is_fatal():
    u = upd()
    row = machine.after_probe(u, to_verifying(u, pending(1)[0]), ProbeObs(pong=False), 10)
    row = machine.after_command(u, machine.command_sent(u, row, 10), CommandObs(exit_code=0), 10)
    fatal = machine.after_probe(u, row, ProbeObs(pong=False), 30)
    assert fatal.status is RowStatus.FATAL


def test_auto_rollback_off_ends_in_failure_and_halts():
    u = upd(auto_rollback=False)
    rows = pending(3)
    rows[0] = machine.after_probe(u, to_verifying(u, rows[0]), ProbeObs(pong=False), 10)
    assert rows[0].status is RowStatus.FAILURE
    d = machine.decide(u, rows, 11)
    assert d.changes["status"] is UpdateStatus.FAILURE and d.changes["halted"]
    assert not d.start


def test_nonzero_exit_gets_a_short_grace_not_a_verdict():
    u = upd()
    row = to_verifying(u, pending(1)[0], exit_code=1)
    assert row.deadline == 2 and "exited 1" in row.reason
    ok = machine.after_probe(u, row, healthy(), 1)  # the exit code lied
    assert ok.status is RowStatus.SUCCESS


def test_precheck_outcomes():
    u = upd()
    row = machine.claim(pending(1)[0])
    down = {"agent:web": ("RUNNING", 1), "agent:worker-0": ("BACKOFF", None)}
    failed = machine.after_precheck(u, row, PrecheckObs(programs=down, commit=OLD), 0)
    assert failed.status is RowStatus.FAILURE and "worker-0 is BACKOFF" in failed.reason
    out = machine.after_precheck(u, row, PrecheckObs(opted_out=True), 0)
    assert out.status is RowStatus.SKIPPED
    # Reported on the target at precheck: update anyway (/version shows the checkout).
    there = machine.after_precheck(u, row, PrecheckObs(programs=PROGRAMS, commit=NEW), 0)
    assert there.status is RowStatus.RUNNING
    err = machine.after_precheck(u, row, PrecheckObs(error="ssh: refused"), 0)
    assert err.status is RowStatus.FAILURE and err.attempts == 0
    ok = machine.after_precheck(u, row, PrecheckObs(programs=PROGRAMS, commit=OLD), 0)
    assert json.loads(ok.pids_before) == {"agent:web": 10, "agent:worker-0": 11}


def test_reobserve_after_a_dead_runner():
    u = upd()
    row = machine.after_precheck(
        u, machine.claim(pending(1)[0]), PrecheckObs(programs=PROGRAMS, commit=OLD), 0
    )
    sent = machine.command_sent(u, row, 0)
    assert machine.row_action(sent) is RowAction.REOBSERVE
    again = machine.after_reobserve(u, sent, ProbeObs(pong=True, commit=OLD, programs=PROGRAMS), 1)
    assert machine.row_action(again) is RowAction.COMMAND
    kept = machine.after_reobserve(u, sent, healthy(), 1)
    assert machine.row_action(kept) is RowAction.PROBE


def test_a_restart_by_another_update_is_never_taken_for_this_commands():
    """Soak seed 14295: killed mid-command twice, another update ran between the two."""
    u = upd()
    row = machine.after_precheck(
        u, machine.claim(pending(1)[0]), PrecheckObs(programs=PROGRAMS, commit=OLD), 0
    )
    sent = machine.command_sent(u, row, 0)  # its runner dies; another update restarts web (20)
    other = {"agent:web": ("RUNNING", 20), "agent:worker-0": ("RUNNING", 11)}
    again = machine.after_reobserve(u, sent, ProbeObs(pong=True, commit=BACK, programs=other), 1)
    assert machine.row_action(again) is RowAction.COMMAND
    assert json.loads(again.pids_before) == {"agent:web": 20, "agent:worker-0": 11}
    # The re-run is killed after the checkout moved, before any restart: web still runs 20.
    resent = machine.command_sent(u, again, 2)
    checked_out = ProbeObs(pong=True, commit=NEW, programs=other)
    third = machine.after_reobserve(u, resent, checked_out, 3)
    assert machine.row_action(third) is RowAction.COMMAND, third.log  # not "already on target"
    assert "agent:web was not restarted" in third.log
    done = machine.after_reobserve(u, machine.command_sent(u, third, 4), healthy(web_pid=30), 5)
    assert machine.row_action(done) is RowAction.PROBE


def test_restart_set_follows_the_flags():
    progs = {"agent:web": 1, "agent:redis": 2, "agent:worker-0": 3, "agent:worker_backup-0": 4}
    assert machine.restart_set(upd(), progs) == ["agent:web"]
    rq = machine.restart_set(upd(restart_web=False, restart_rq=True), progs)
    assert rq == ["agent:worker-0", "agent:worker_backup-0"]
    assert len(machine.restart_set(upd(restart_rq=True, restart_redis=True), progs)) == 4


# --------------------------------------------------------------- update level


def test_lanes_limit_starts():
    u = upd(lanes=3)
    d = machine.decide(u, pending(5), 0)
    assert d.start == [1, 2, 3]
    rows = pending(5)
    rows[0] = rows[0].copy(status=RowStatus.VERIFYING, lease_owner="x", lease_expires=100)
    assert machine.decide(u, rows, 0).start == [2, 3]


def test_orphans_are_resumed_only_when_their_lease_expired():
    rows = pending(2)
    rows[0] = rows[0].copy(
        status=RowStatus.RUNNING, step=Step.COMMAND_SENT, lease_owner="x", lease_expires=50
    )
    assert machine.decide(upd(), rows, 10).resume == []
    assert machine.decide(upd(), rows, 60).resume == [1]


def test_pause_starts_nothing_but_ends_when_all_done():
    rows = pending(2)
    assert machine.decide(upd(status=UpdateStatus.PAUSED), rows, 0).idle
    done = [r.copy(status=RowStatus.SUCCESS) for r in rows]
    d = machine.decide(upd(status=UpdateStatus.PAUSED), done, 0)
    assert d.changes["status"] is UpdateStatus.SUCCESS


def test_an_ended_update_drops_its_overlap_warning():
    """A finished update holds no server: a warning of overlap would mislead."""
    warned = dict(overlap_warning="servers also in other unfinished updates: B (s1)")
    done = [r.copy(status=RowStatus.SUCCESS) for r in pending(2)]
    d = machine.decide(upd(**warned), done, 5)
    assert d.changes["status"] is UpdateStatus.SUCCESS and d.changes["overlap_warning"] == ""
    aborted = machine.decide(upd(aborted=True, **warned), pending(2), 5)
    assert aborted.changes["status"] is UpdateStatus.ABORTED
    assert aborted.changes["overlap_warning"] == ""
    pending_abort = commands.abort(upd(status=UpdateStatus.PENDING, **warned), now=5)
    assert pending_abort.status is UpdateStatus.ABORTED and pending_abort.overlap_warning == ""


def test_test_mode_pauses_once_after_exactly_n():
    u = upd(test_mode=True, test_mode_count=2, lanes=5)
    rows = pending(5)
    assert machine.decide(u, rows, 0).start == [1, 2]
    rows[0] = rows[0].copy(status=RowStatus.SUCCESS, started_at=0)
    rows[1] = rows[1].copy(
        status=RowStatus.VERIFYING, started_at=0, lease_owner="x", lease_expires=9
    )
    assert machine.decide(u, rows, 1).idle
    rows[1] = rows[1].copy(status=RowStatus.SUCCESS)
    d = machine.decide(u, rows, 2)
    assert d.changes["status"] is UpdateStatus.PAUSED and d.changes["paused_for_test_mode"]
    assert "test mode" in d.changes["pause_reason"]
    resumed = commands.resume(u.copy(**d.changes))
    assert machine.decide(resumed, rows, 3).start == [3, 4, 5]


def test_halting_rules_and_end_statuses():
    rows = pending(3)
    rows[0] = rows[0].copy(status=RowStatus.ROLLED_BACK)
    assert machine.decide(upd(), rows, 0).start == [2]
    stop = machine.decide(upd(stop_after_single_rollback=True), rows, 0)
    assert stop.changes["status"] is UpdateStatus.FAILURE and not stop.start
    rows[1] = rows[1].copy(status=RowStatus.SUCCESS)
    stop = machine.decide(upd(stop_after_single_rollback=True), rows, 0)
    assert stop.changes["status"] is UpdateStatus.PARTIAL_SUCCESS
    rows[2] = rows[2].copy(status=RowStatus.FATAL)
    assert machine.decide(upd(), rows, 0).changes["halted"]
    assert (
        machine.final_status([r.copy(status=RowStatus.SKIPPED) for r in rows])
        is UpdateStatus.SUCCESS
    )


def test_failure_budget():
    rows = pending(4)
    rows[0] = rows[0].copy(status=RowStatus.ROLLED_BACK)
    assert not machine.decide(upd(failure_budget=1), rows, 0).changes
    rows[1] = rows[1].copy(status=RowStatus.ROLLED_BACK)
    assert machine.decide(upd(failure_budget=1), rows, 0).changes["halted"]


# ------------------------------------------------------------------ properties

observations = st.sampled_from(["ok", "down", "old", "samepid", "cmdfail"])


def simulate(u: Update, rows: list[Row], draw, max_steps: int = 2000):
    """Drive the pure functions like a runner would; return the history."""
    now = 0.0
    peak = 0
    starts: list[int] = []
    for _ in range(max_steps):
        d = machine.decide(u, rows, now)
        if d.changes:
            u = u.copy(**d.changes)
        for idx in d.start:
            rows[idx - 1] = machine.claim(rows[idx - 1]).copy(lease_owner="r", lease_expires=1e9)
            starts.append(idx)
        peak = max(peak, sum(machine.is_active(r) for r in rows))
        if u.status.is_final or (
            u.status is UpdateStatus.PAUSED and not any(map(machine.is_active, rows))
        ):
            return u, rows, peak, starts
        for i, row in enumerate(rows):
            action = machine.row_action(row)
            kind = draw()
            target = machine.target_commit(u, row)
            if action is RowAction.PRECHECK:
                row = machine.after_precheck(
                    u, row, PrecheckObs(programs=PROGRAMS, commit=OLD), now
                )
            elif action is RowAction.COMMAND:
                row = machine.command_sent(u, row, now)
                row = machine.after_command(
                    u, row, CommandObs(exit_code=1 if kind == "cmdfail" else 0), now
                )
            elif action is RowAction.PROBE:
                obs = {
                    "ok": healthy(commit=target),
                    "down": ProbeObs(pong=False),
                    "old": healthy(commit="d" * 40),
                    "samepid": healthy(commit=target, web_pid=10),
                    "cmdfail": healthy(commit=target),
                }[kind]
                row = machine.after_probe(u, row, obs, now)
            if row.status.ended and machine.row_action(row) is RowAction.NONE:
                row = row.copy(lease_owner="", lease_expires=None)
            rows[i] = row
        now += 1.0
    raise AssertionError("the rollout never settled")


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 8),
    lanes=st.integers(1, 4),
    auto_rollback=st.booleans(),
    stop_single=st.booleans(),
    test_mode=st.integers(0, 4),
    seq=st.lists(observations, min_size=1, max_size=50),
)
def test_any_rollout_settles_within_the_rules(n, lanes, auto_rollback, stop_single, test_mode, seq):
    it = iter(seq * 1000)
    u = upd(
        lanes=lanes,
        auto_rollback=auto_rollback,
        stop_after_single_rollback=stop_single,
        test_mode=bool(test_mode),
        test_mode_count=max(test_mode, 1),
    )
    u, rows, peak, starts = simulate(u, pending(n), lambda: next(it))
    assert peak <= lanes
    assert len(starts) == len(set(starts))  # nothing started twice
    assert not any(machine.is_active(r) for r in rows)  # never left half-done
    if not auto_rollback:
        assert not any(r.status in (RowStatus.ROLLED_BACK, RowStatus.FATAL) for r in rows)
    if u.status is UpdateStatus.PAUSED:
        assert test_mode and len(starts) == test_mode
        return
    assert u.status is machine.final_status(rows)
    if u.status is UpdateStatus.SUCCESS:
        assert all(r.status is RowStatus.SUCCESS for r in rows)
    if not u.halted:
        assert all(r.status is not RowStatus.PENDING for r in rows)


def test_a_program_supervisor_gave_up_on_fails_at_once():
    u = upd()
    row = to_verifying(u, pending(1)[0])
    fatal = {"agent:web": ("FATAL", None), "agent:worker-0": ("RUNNING", 11)}
    out = machine.after_probe(u, row, ProbeObs(pong=False, programs=fatal), 1)
    assert out.status is RowStatus.ROLLING_BACK and "FATAL" in out.reason
    backoff = {"agent:web": ("BACKOFF", None), "agent:worker-0": ("RUNNING", 11)}
    waiting = machine.after_probe(u, row, ProbeObs(pong=True, commit=NEW, programs=backoff), 1)
    assert waiting.status is RowStatus.VERIFYING  # still retrying: keep waiting


def test_a_claimed_row_is_held_back_when_the_update_stopped_before_its_precheck():
    row = machine.claim(pending(1)[0])
    assert machine.held_back(upd(), row) is None  # Running: the precheck goes on
    for stopped in (upd(status=UpdateStatus.PAUSED), upd(halted=True, halt_reason="x")):
        back = machine.held_back(stopped, row)
        assert back is not None
        assert (back.status, back.step, back.started_at, back.attempts) == (
            RowStatus.PENDING,
            Step.NONE,
            None,
            0,
        )
        assert "back to Pending" in back.log
        assert machine.row_action(back) is RowAction.NONE
        assert machine.decide(upd(), [back], 0).start == [1]  # Resume starts it again
    in_flight = to_verifying(upd(), row)
    assert machine.held_back(upd(status=UpdateStatus.PAUSED), in_flight) is None  # finishes


def test_a_resumed_row_says_so_and_by_whom():
    row = pending(1)[0].copy(status=RowStatus.RUNNING, step=Step.COMMAND_SENT, log="x")
    assert machine.resumed(row, "h:2:b", "h:1:a").log.endswith(
        "resumed by h:2:b (h:1:a's lease expired)"
    )


def test_a_command_that_never_started_fails_the_row_with_nothing_changed():
    """Could not be built or the lock was held: no verification, no rollback, no Fatal."""
    u = upd()
    row = machine.after_precheck(
        u, machine.claim(pending(1)[0]), PrecheckObs(programs=PROGRAMS, commit=OLD), 0
    )
    row = machine.command_sent(u, row, 1)
    obs = CommandObs(exit_code=None, not_started=True, error="cannot build the update command: x")
    ended = machine.after_command(u, row, obs, 2)
    assert ended.status is RowStatus.FAILURE and ended.step is Step.NONE
    assert ended.reason == "cannot build the update command: x; nothing was changed"
    assert machine.row_action(ended) is RowAction.NONE
    assert not machine.halt_reason(u, [ended])  # auto rollback on: not a halting failure


def test_a_rollback_that_never_started_is_fatal():
    u = upd()
    row = to_verifying(u, pending(1)[0])
    row = machine.fail(u, row, "agent:web is FATAL", 5)
    assert row.status is RowStatus.ROLLING_BACK
    row = machine.command_sent(u, row, 6)
    obs = CommandObs(exit_code=75, not_started=True, error="another update is running")
    ended = machine.after_command(u, row, obs, 7)
    assert ended.status is RowStatus.FATAL
    assert "another update is running" in ended.reason and "agent:web is FATAL" in ended.reason


def test_precheck_rolls_back_to_what_the_server_runs_now_not_what_it_ran_when_planned():
    """Another update changed the server after Build Plan (found by the fault soak)."""
    u = upd()
    row = machine.claim(pending(1)[0])  # planned on OLD
    moved = machine.after_precheck(u, row, PrecheckObs(programs=PROGRAMS, commit=BACK), 0)
    assert moved.current_commit == BACK and moved.rollback_commit == BACK
    assert "on cccccccccccc now (planned on aaaaaaaaaaaa)" in moved.log
    same = machine.after_precheck(u, row, PrecheckObs(programs=PROGRAMS, commit=OLD), 0)
    assert same.rollback_commit == OLD and "now (planned" not in same.log
    half_done = machine.after_precheck(u, row, PrecheckObs(programs=PROGRAMS, commit=NEW), 0)
    assert half_done.rollback_commit == ""  # never the target; no reflog to say more
    specific = upd(rollback_to_specific=True, rollback_commit="d" * 40)
    pinned = machine.after_precheck(
        specific, row.copy(rollback_commit="d" * 40), PrecheckObs(programs=PROGRAMS, commit=BACK), 0
    )
    assert pinned.rollback_commit == "d" * 40 and pinned.current_commit == BACK
