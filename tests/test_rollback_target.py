"""The rollback commit is decided at the row's precheck, from what the programs run.

The old code recorded it at Build Plan from ``/version``: a second update
planned before a first one ran "rolled back" to the commit the first had
replaced, and a server whose checkout was already on the target without a
restart "rolled back" to the very commit that had just failed.
"""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from agent_update.remote import runtime
from agent_update.rollout import commands, machine, rollback_target
from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.model import Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs
from agent_update.rollout.running import RunningObs, commit_at

BASE, GOOD, BAD = "a" * 40, "b" * 40, "c" * 40
NOW = 1_700_001_000.0
PIDS = {"agent:web": ("RUNNING", 10), "agent:worker-0": ("RUNNING", 11)}


def upd(**kw) -> Update:
    values = dict(name="U", repo="/r", branch="m", commit=BAD, status=UpdateStatus.RUNNING)
    values.update(kw)
    return Update(**values)


def running(web_up: float, moves, worker_up: float | None = None) -> RunningObs:
    worker = web_up if worker_up is None else worker_up
    return RunningObs(
        now=NOW,
        head_moved_at=max((m[0] for m in moves), default=None),
        programs={"agent:web": ("RUNNING", web_up), "agent:worker-0": ("RUNNING", worker)},
        reflog=tuple(moves),
    )


def precheck(u: Update, checkout: str, seen: RunningObs | None) -> Row:
    row = machine.claim(Row(idx=1, server="s1", status=RowStatus.PENDING))
    return machine.after_precheck(
        u, row, PrecheckObs(programs=PIDS, commit=checkout, running=seen), 0
    )


def test_a_server_moved_by_an_earlier_update_rolls_back_to_that_update():
    # Planned on base; another update took it to good (and restarted) before this row started.
    moves = [(NOW - 600, BASE, GOOD), (NOW - 600, GOOD, GOOD)]
    row = precheck(upd(), GOOD, running(590, moves))
    assert row.status is RowStatus.RUNNING and row.rollback_commit == GOOD
    assert "rollback commit bbbbbbbbbbbb: what agent:web runs" in row.log


def test_a_checkout_on_the_target_without_restart_rolls_back_to_what_runs():
    moves = [(NOW - 3600, BASE, BASE), (NOW - 60, BASE, BAD), (NOW - 60, BAD, BAD)]
    row = precheck(upd(), BAD, running(7200, moves))
    assert row.rollback_commit == BASE
    assert "checkout moved since it started" in row.log


def test_nothing_but_the_target_ran_there_means_no_rollback_and_a_plain_failure():
    moves = [(NOW - 600, BASE, BAD)]
    u = upd()
    row = precheck(u, BAD, running(500, moves))  # restarted after the checkout: runs BAD
    assert row.rollback_commit == ""
    assert "nothing to roll back to: what agent:web runs is already cccccccccccc" in row.log
    row = machine.command_sent(u, row, 1)
    row = machine.after_command(u, row, CommandObs(exit_code=0), 2)
    failed = machine.after_probe(u, row, ProbeObs(pong=False, programs=None), 2 + 9999)
    assert failed.status is RowStatus.FAILURE and failed.step is Step.NONE
    assert "not rolled back: nothing to roll back to" in failed.reason


def test_the_operators_rollback_commit_wins():
    u = upd(rollback_to_specific=True, rollback_commit=BASE)
    row = precheck(u, GOOD, running(590, [(NOW - 600, BASE, GOOD)]))
    assert row.rollback_commit == BASE


def test_without_start_times_the_checkout_is_the_rollback_commit():
    assert precheck(upd(), GOOD, None).rollback_commit == GOOD
    assert precheck(upd(), BAD, None).rollback_commit == ""  # never the target


def test_programs_on_different_commits_prefer_one_that_is_not_the_target():
    moves = [(NOW - 600, BASE, BAD)]
    # web restarted after the move (runs BAD), the worker did not (runs BASE)
    u = upd(restart_rq=True)
    row = precheck(u, BAD, running(500, moves, worker_up=5000))
    assert row.rollback_commit == BASE and "what agent:worker-0 runs" in row.log


def test_build_plan_no_longer_fixes_a_rollback_commit():
    rows = [Row(idx=1, server="s1")]
    _, (planned,) = commands.apply_plan(upd(), rows, {1: PlanOutcome(commit=BASE)})
    assert planned.status is RowStatus.PENDING and planned.rollback_commit == ""
    u = upd(rollback_to_specific=True, rollback_commit=GOOD)
    _, (planned,) = commands.apply_plan(u, rows, {1: PlanOutcome(commit=BASE)})
    assert planned.rollback_commit == GOOD


@given(
    st.lists(st.tuples(st.integers(0, 1000), st.sampled_from([BASE, GOOD, BAD])), max_size=8),
    st.integers(0, 1000),
    st.sampled_from([BASE, GOOD, BAD]),
)
def test_never_the_target(moves, started, target):
    moves = sorted(moves)
    chain, head = [], BASE
    for when, new in moves:
        chain.append((float(when), head, new))
        head = new
    seen = RunningObs(
        now=1000.0,
        head_moved_at=chain[-1][0] if chain else None,
        programs={"agent:web": ("RUNNING", float(1000 - started))},
        reflog=tuple(chain),
    )
    back, note = rollback_target.choose(upd(commit=target), ["agent:web"], head, seen)
    assert back != target and (back or "nothing to roll back to" in note)
    # what ran at the start: HEAD's value then (a move in that second counts as before)
    expected = head
    for when, old, _ in chain:
        if when > started:
            expected = old
            break
    assert commit_at(seen, head, float(started)) == expected
    if expected != target:
        assert back == expected


def test_the_look_reads_the_reflog_moves_and_the_status():
    reflog = "\n".join(
        f"@agent-update reflog {old} {new} A <a@b> {int(t)} +0000\tcheckout: moving"
        for t, old, new in [(NOW - 60, BASE, BAD), (NOW - 59, BAD, BAD)]
    )
    up = timedelta(seconds=7200)
    output = (
        f"@agent-update head {int(NOW - 59)}\n{reflog}\n"
        f"agent:web   RUNNING   pid 41, uptime {up}\n"
        f"agent:worker-0   RUNNING   pid 42, uptime {up}\n@agent-update now {int(NOW)}\n"
    )
    seen = runtime.parse(output)
    assert seen.reflog == ((NOW - 60, BASE, BAD), (NOW - 59, BAD, BAD))
    assert seen.head_moved_at == NOW - 59
    assert runtime.status_text(output).splitlines()[0].startswith("agent:web")
    assert rollback_target.choose(upd(), ["agent:web"], BAD, seen)[0] == BASE
    assert "| sed 's/^/@agent-update reflog /'" in runtime.command(
        "/home/a/agent", "supervisorctl status"
    )
