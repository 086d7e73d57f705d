"""Fast verdicts after the command ended: crash loops and programs not restarted.

Each case failed on the old code, which waited for the startup timeout
(600 s here) before failing a crash-looping or never-restarted server.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_update.rollout import machine, rules, verdicts
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs

OLD, NEW = "a" * 40, "b" * 40
BEFORE = {"agent:web": ("RUNNING", 10), "agent:worker-0": ("RUNNING", 11)}
TIMEOUT = 600.0


def upd(**kw) -> Update:
    values = dict(
        name="U",
        repo="/r",
        branch="master",
        commit=NEW,
        status=UpdateStatus.RUNNING,
        startup_timeout=TIMEOUT,
        command_timeout=1800,
        failed_command_grace=20,
        bake_time=0,
        min_healthy_time=0,  # the minimum healthy time's own tests set it
    )
    values.update(kw)
    return Update(**values)


def verifying(u: Update, obs: CommandObs | None = None, at: float = 0.0) -> Row:
    row = Row(idx=1, server="s1", status=RowStatus.PENDING, current_commit=OLD, rollback_commit=OLD)
    row = machine.after_precheck(u, machine.claim(row), PrecheckObs(programs=BEFORE, commit=OLD), 0)
    row = machine.command_sent(u, row, 0)
    return machine.after_command(u, row, obs or CommandObs(exit_code=0), at)


def probe(web=("RUNNING", 20), worker=("RUNNING", 11), pong=True, commit=NEW) -> ProbeObs:
    programs = {"agent:web": web, "agent:worker-0": worker}
    return ProbeObs(pong=pong, commit=commit if pong else None, programs=programs)


def walk(u: Update, row: Row, probes: list[tuple[float, ProbeObs]]) -> Row:
    for at, obs in probes:
        row = machine.after_probe(u, row, obs, at)
        if row.step is not Step.VERIFY:
            return row
    return row


# ------------------------------------------------------------------ crash loop


def test_pid_changing_again_after_the_command_is_a_crash_loop_with_what_was_seen():
    u = upd()
    pids = [(1, 812), (4, 845), (9, 873)]
    row = walk(u, verifying(u), [(t, probe(web=("RUNNING", p), pong=False)) for t, p in pids])
    assert row.status is RowStatus.ROLLING_BACK  # failed at 9 s, not at 600 s
    assert row.reason == (
        "agent:web crash-looping: pid 812 → 845 → 873 in 9 s after the command ended "
        "while /ping is refused"
    )
    assert json.loads(row.pids_before)["agent:web"] == 873  # the rollback must replace it


def test_a_process_started_after_the_command_dying_while_ping_is_refused_fails_at_once():
    u = upd()
    states = [("RUNNING", 812), ("STARTING", None), ("RUNNING", 845), ("STARTING", None)]
    probes = [(t, probe(web=st, pong=False)) for t, st in enumerate(states, start=1)]
    row = walk(u, verifying(u), probes[:2])
    # The first process seen may predate the checkout: its death alone proves nothing.
    assert row.status is RowStatus.VERIFYING
    row = walk(u, row, probes[2:])
    assert row.status is RowStatus.ROLLING_BACK
    assert "agent:web crash-looping" in row.reason and "while /ping is refused" in row.reason
    assert "pid 812 → 845 in 4 s after the command ended" in row.reason


def test_a_leftover_backoff_then_a_healthy_start_succeeds():
    """Supervisor still retrying the old crash when the command ends (a rollback)."""
    u = upd()
    probes = [
        (0.1, probe(web=("BACKOFF", None), pong=False)),
        (1, probe(web=("STARTING", None), pong=False)),
        (2, probe(web=("RUNNING", 30))),
    ]
    assert walk(u, verifying(u), probes).status is RowStatus.SUCCESS


def test_backoff_after_the_command_with_ping_refused_is_a_crash():
    u = upd()
    states = ["STARTING", "BACKOFF", "STARTING", "BACKOFF"]
    probes = [(t, probe(web=(st, None), pong=False)) for t, st in enumerate(states, start=1)]
    row = walk(u, verifying(u), probes[:2])
    assert row.status is RowStatus.VERIFYING  # that start may have begun before the checkout
    row = walk(u, row, probes[2:])
    assert row.status is RowStatus.ROLLING_BACK and "BACKOFF at 4 s" in row.reason


def test_one_death_with_the_agent_answering_is_not_yet_a_loop():
    u = upd(bake_time=5)
    pids = [(1, 812), (2, 845), (3, 870)]
    row = walk(u, verifying(u), [(t, probe(web=("RUNNING", pid))) for t, pid in pids])
    assert row.status is RowStatus.VERIFYING and row.healthy_since == 3  # the bake restarted
    done = walk(u, row, [(8, probe(web=("RUNNING", 870)))])
    assert done.status is RowStatus.SUCCESS


def test_a_worker_crash_loop_fails_even_when_a_probe_looks_healthy():
    u = upd(restart_rq=True, bake_time=30)
    pids = ((1, 30), (2, 31), (3, 32), (4, 33))
    row = walk(u, verifying(u), [(t, probe(worker=("RUNNING", pid))) for t, pid in pids])
    assert row.status is RowStatus.ROLLING_BACK
    assert row.reason.startswith("agent:worker-0 crash-looping: pid 30 → 31 → 32 → 33 in 4 s")


def test_a_crash_loop_during_the_rollback_is_fatal_fast():
    u = upd(bake_time=10)
    row = walk(
        u,
        verifying(u),
        [
            (t, probe(pong=False, web=(st, None)))
            for t, st in ((1, "STARTING"), (2, "BACKOFF"), (3, "STARTING"), (4, "BACKOFF"))
        ],
    )
    assert row.status is RowStatus.ROLLING_BACK
    assert row.command_ended_at is None and row.seen_after == ""  # fresh for the rollback
    row = machine.after_command(u, machine.command_sent(u, row, 5), CommandObs(exit_code=0), 6)
    loop = [
        (t, probe(web=("RUNNING", pid), commit=OLD))
        for t, pid in ((7, 50), (8, 51), (9, 52), (10, 53))
    ]
    fatal = walk(u, row, loop)
    assert fatal.status is RowStatus.FATAL
    assert "crash-looping: pid 50 → 51 → 52 → 53" in fatal.reason


# ------------------------------------------------------------- not restarted


def test_nothing_restarted_fails_at_the_first_probe_after_the_command():
    u = upd()
    row = walk(u, verifying(u, at=100), [(100.4, probe(web=("RUNNING", 10)))])
    assert row.status is RowStatus.ROLLING_BACK
    assert row.reason == (
        "nothing restarted after the command ended: agent:web still runs pid 10 from before "
        "the command"
    )


def test_after_a_failed_command_nothing_restarted_fails_before_the_grace_ends():
    u = upd()
    row = verifying(u, CommandObs(exit_code=1, output="pip failed"))
    assert row.deadline == 20
    failed = walk(u, row, [(0.5, probe(web=("RUNNING", 10), pong=True, commit=NEW))])
    assert failed.status is RowStatus.ROLLING_BACK
    assert failed.reason.startswith("nothing restarted after the command ended")
    assert failed.reason.endswith("(command exited 1)")


def test_some_programs_not_restarted():
    u = upd(restart_rq=True)
    row = walk(u, verifying(u), [(1, probe(web=("RUNNING", 20), worker=("RUNNING", 11)))])
    assert row.status is RowStatus.ROLLING_BACK
    assert row.reason.startswith("not restarted after the command ended: agent:worker-0 still runs")


def test_rq_workers_restarted_during_the_command_succeed():
    u = upd(restart_rq=True)
    row = walk(u, verifying(u), [(1, probe(web=("RUNNING", 20), worker=("RUNNING", 40)))])
    assert row.status is RowStatus.SUCCESS


@pytest.mark.parametrize(
    "obs",
    [
        CommandObs(exit_code=None, timed_out=True),
        CommandObs(exit_code=None, error="ssh: connection reset"),
    ],
)
def test_a_command_whose_end_is_unknown_gets_no_fast_verdict(obs):
    u = upd()
    row = verifying(u, obs)
    assert row.command_ended_at is None
    waiting = walk(u, row, [(1, probe(web=("RUNNING", 10))), (2, probe(web=("RUNNING", 10)))])
    assert waiting.status is RowStatus.VERIFYING  # the command may still run there
    assert walk(u, waiting, [(3, probe(web=("RUNNING", 12)))]).status is RowStatus.SUCCESS


# ------------------------------------------------------- slow start and window


def test_a_slow_but_healthy_start_succeeds_inside_the_timeout():
    u = upd()
    row = verifying(u)
    slow = [(t, probe(web=("RUNNING", 20), pong=False)) for t in range(1, 400, 7)]
    row = walk(u, row, [(0.5, probe(web=("STARTING", None), pong=False)), *slow])
    assert row.status is RowStatus.VERIFYING  # 400 s without /ping, pids stable: keep waiting
    done = walk(u, row, [(401, probe(web=("RUNNING", 20)))])
    assert done.status is RowStatus.SUCCESS


def test_still_starting_after_the_window_fails_then_not_before():
    u = upd(verdict_window=30)
    row = verifying(u)
    early = walk(u, row, [(t, probe(web=("STARTING", None), pong=False)) for t in (1, 10, 29)])
    assert early.status is RowStatus.VERIFYING
    late = walk(u, early, [(30, probe(web=("STARTING", None), pong=False))])
    assert late.status is RowStatus.ROLLING_BACK
    assert late.reason.startswith("agent:web is still STARTING 30 s after the command ended")


def test_a_program_left_stopped_fails_once_the_window_has_passed():
    u = upd(verdict_window=10)
    row = walk(u, verifying(u), [(1, probe(worker=("STOPPED", None)))])
    assert row.status is RowStatus.VERIFYING
    late = walk(u, row, [(10, probe(worker=("STOPPED", None)))])
    assert late.status is RowStatus.ROLLING_BACK
    assert late.reason.startswith("agent:worker-0 is still STOPPED 10 s after the command ended")


def test_the_verdict_window_is_validated():
    rules.validate_config(upd(verdict_window=30))
    for bad in (0, -1, 1, 4.9, 3601):
        with pytest.raises(ValidationError) as error:
            rules.validate_config(upd(verdict_window=bad))
        assert error.value.field == "verdict_window"


# --------------------------------------------------------------- the history


def test_history_keeps_changes_only_and_is_bounded():
    history: verdicts.History = {}
    for t in range(100):
        history = verdicts.record(history, {"agent:web": ("RUNNING", 7)}, t)
    assert len(history["agent:web"]) == 1
    for pid in range(100):
        history = verdicts.record(history, {"agent:web": ("RUNNING", pid)}, pid)
    assert len(history["agent:web"]) == verdicts.HISTORY_LIMIT
    assert verdicts.load(verdicts.dump(history)) == history
    assert verdicts.load("") == {} and verdicts.dump({}) == ""


# ---------------------------------------------------------------- properties

states = st.sampled_from(["RUNNING", "STARTING"])


@settings(max_examples=300, deadline=None)
@given(
    pongs=st.lists(st.booleans(), min_size=1, max_size=60),
    commit_ok=st.booleans(),
    gaps=st.lists(st.floats(0.1, 30), min_size=60, max_size=60),
)
def test_stable_new_pids_never_fail_before_the_deadline(pongs, commit_ok, gaps):
    """A slow start (pids stable, RUNNING) is judged by the timeout alone."""
    u = upd(bake_time=5)
    row = verifying(u)
    now = 0.0
    for pong, gap in zip(pongs, gaps, strict=False):
        now += gap
        if now >= TIMEOUT:
            break
        obs = probe(web=("RUNNING", 20), pong=pong, commit=NEW if commit_ok else OLD)
        row = machine.after_probe(u, row, obs, now)
        assert row.status in (RowStatus.VERIFYING, RowStatus.SUCCESS), row.reason
        if row.status is RowStatus.SUCCESS:
            break


@settings(max_examples=300, deadline=None)
@given(
    pids=st.lists(st.integers(100, 110), min_size=1, max_size=30),
    pongs=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_three_pid_changes_after_the_command_always_fail_by_then(pids, pongs):
    """Never Success on a program that changed pid three times after the command ended."""
    u = upd(bake_time=3)
    row = verifying(u)
    changes = 0
    last = None
    for t, (pid, pong) in enumerate(zip(pids, pongs, strict=False), start=1):
        if last is not None and pid != last:
            changes += 1
        last = pid
        row = machine.after_probe(u, row, probe(web=("RUNNING", pid), pong=pong), t)
        if row.step is not Step.VERIFY:
            break
    if changes >= 3:
        assert row.status is RowStatus.ROLLING_BACK and "crash-looping" in row.reason
    assert row.status is not RowStatus.SUCCESS or changes <= 2
