"""Healthy means healthy for a while: the minimum healthy time (pure decisions).

Each case failed on the old code, which ended a row Success on the first
healthy probe when the bake time was 0: a web whose master dies ~3 s after
each start (never FATAL) was reported updated.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_update.rollout import machine, min_healthy, rules, verdicts
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs

OLD, NEW = "a" * 40, "b" * 40
BEFORE = {
    "agent:redis": ("RUNNING", 9),
    "agent:web": ("RUNNING", 10),
    "agent:worker-0": ("RUNNING", 11),
}


def upd(**kw) -> Update:
    values = dict(
        name="U",
        repo="/r",
        branch="master",
        commit=NEW,
        status=UpdateStatus.RUNNING,
        startup_timeout=600,
        command_timeout=1800,
    )
    values.update(kw)
    return Update(**values)


def verifying(u: Update, ended: bool = True) -> Row:
    row = Row(idx=1, server="s1", status=RowStatus.PENDING)
    row = machine.after_precheck(u, machine.claim(row), PrecheckObs(programs=BEFORE, commit=OLD), 0)
    row = machine.command_sent(u, row, 0)
    obs = CommandObs(exit_code=0) if ended else CommandObs(exit_code=None, timed_out=True)
    return machine.after_command(u, row, obs, 0)


def probe(web=("RUNNING", 20), up: float | None = None, pong=True, commit=NEW) -> ProbeObs:
    programs = {"agent:redis": ("RUNNING", 9), "agent:web": web, "agent:worker-0": ("RUNNING", 11)}
    uptimes = {"agent:redis": 5000.0, "agent:worker-0": 5000.0}
    if up is not None:
        uptimes["agent:web"] = up
    return ProbeObs(pong=pong, commit=commit if pong else None, programs=programs, uptimes=uptimes)


def walk(u: Update, row: Row, probes) -> Row:
    for at, obs in probes:
        row = machine.after_probe(u, row, obs, at)
        if row.step is not Step.VERIFY:
            return row
    return row


def test_the_default_is_ten_seconds():
    assert Update().min_healthy_time == 10.0


def test_one_healthy_probe_is_not_a_success_until_the_program_is_up_long_enough():
    u = upd()  # the defaults: bake 0, minimum healthy time 10 s
    row = walk(u, verifying(u), [(0.5, probe(up=1))])
    assert row.status is RowStatus.VERIFYING  # the old code said Success here
    assert row.healthy_since == 0.5
    row = walk(u, row, [(5, probe(up=5)), (9.4, probe(up=9))])
    assert row.status is RowStatus.VERIFYING
    done = walk(u, row, [(10.5, probe(up=10))])
    assert done.status is RowStatus.SUCCESS and done.ended_at == 10.5


def test_a_web_dying_three_seconds_after_each_start_fails_with_what_was_seen():
    u = upd()
    probes = [
        (0.5, probe(web=("RUNNING", 20), up=1)),  # restarted by the command: healthy
        (2.6, probe(web=("STARTING", None), pong=False)),  # it died; may predate the checkout
        (3.7, probe(web=("RUNNING", 21), up=1)),  # spawned after the command: healthy again
        (5.8, probe(web=("STARTING", None), pong=False)),  # ... and dead 3 s after its start
    ]
    row = walk(u, verifying(u), probes[:3])
    assert row.status is RowStatus.VERIFYING
    row = walk(u, row, probes[3:])
    assert row.status is RowStatus.ROLLING_BACK, row.log
    assert row.reason.startswith("agent:web died 3 s after it started (pid 21, 5.8 s after")
    assert "inside the 10 s minimum healthy time; seen: pid 20 → 21" in row.reason


def test_a_death_after_the_minimum_healthy_time_is_left_to_the_usual_rules():
    u = upd(min_healthy_time=2, bake_time=30)
    probes = [
        (0.5, probe(web=("RUNNING", 20), up=1)),
        (1, probe(web=("STARTING", None), pong=False)),
        (2, probe(web=("RUNNING", 21), up=1)),
        (9, probe(web=("RUNNING", 22), up=0)),  # 21 lived 7 s > 2 s
    ]
    row = walk(u, verifying(u), probes)
    assert row.status is RowStatus.VERIFYING, row.reason
    assert row.healthy_since == 9  # the bake starts over, as before


def test_the_rollback_is_not_failed_by_a_process_spawned_before_its_checkout():
    """Rolling back a crash loop: the first web seen still runs the bad code and dies."""
    u = upd()
    row = verifying(u).copy(status=RowStatus.ROLLING_BACK, rollback_commit=OLD, reason="x")
    probes = [
        (0.2, probe(web=("RUNNING", 30), up=2, commit=OLD)),  # spawned during the rollback
        (1.5, probe(web=("STARTING", None), pong=False)),  # the bad code dies
        (2.6, probe(web=("RUNNING", 31), up=1, commit=OLD)),  # the old good code
        (8, probe(web=("RUNNING", 31), up=6, commit=OLD)),
    ]
    row = walk(u, row, probes)
    assert row.status is RowStatus.ROLLING_BACK and row.step is Step.VERIFY, row.reason
    done = walk(u, row, [(12.5, probe(web=("RUNNING", 31), up=10, commit=OLD))])
    assert done.status is RowStatus.ROLLED_BACK, done.log


def test_without_uptimes_the_age_counts_from_when_the_pid_was_first_seen():
    u = upd()
    bare = ProbeObs(pong=True, commit=NEW, programs=dict(probe().programs))  # no uptimes
    row = walk(u, verifying(u), [(1, bare), (10.9, bare)])
    assert row.status is RowStatus.VERIFYING
    assert walk(u, row, [(11, bare)]).status is RowStatus.SUCCESS


def test_without_a_known_command_end_the_age_counts_from_the_first_healthy_probe():
    u = upd()
    bare = ProbeObs(pong=True, commit=NEW, programs=dict(probe().programs))
    row = walk(u, verifying(u, ended=False), [(3, bare), (12.9, bare)])
    assert row.status is RowStatus.VERIFYING and row.healthy_since == 3
    assert walk(u, row, [(13, bare)]).status is RowStatus.SUCCESS


def test_both_the_bake_time_and_the_minimum_must_hold():
    u = upd(bake_time=20)
    row = walk(u, verifying(u), [(1, probe(up=50)), (20, probe(up=69))])
    assert row.status is RowStatus.VERIFYING  # up long enough, baked only 19 s
    assert walk(u, row, [(21, probe(up=70))]).status is RowStatus.SUCCESS


def test_a_program_never_up_long_enough_fails_once_past_the_deadline():
    u = upd(startup_timeout=30)
    row = verifying(u, ended=False)  # no history: pids are not judged, ages are
    assert row.deadline == u.failed_command_grace  # a timed-out command's window: 20 s
    probes = [(t, probe(web=("RUNNING", 100 + t), up=1)) for t in range(1, 41)]
    row = walk(u, row, probes)
    assert row.status is RowStatus.ROLLING_BACK
    # at the deadline plus the minimum: any healthy program would have made it by then
    assert row.reason.startswith("never healthy for long enough: agent:web (pid 130) up 1 s")


def test_zero_turns_it_off():
    u = upd(min_healthy_time=0)
    assert walk(u, verifying(u), [(0.5, probe(up=0))]).status is RowStatus.SUCCESS


def test_a_success_names_the_programs_left_on_the_old_code():
    u = upd()  # restart_rq off, restart_redis off
    done = walk(u, verifying(u), [(11, probe(up=10))])
    assert done.status is RowStatus.SUCCESS
    assert done.reason == (
        "still running the code from before the update (not asked to restart; pid unchanged "
        "since the precheck): agent:redis (pid 9), agent:worker-0 (pid 11)"
    )
    assert "agent:worker-0 (pid 11)" in done.log
    every = upd(restart_rq=True, restart_redis=True, min_healthy_time=0)
    programs = {"agent:redis": ("RUNNING", 90), "agent:web": ("RUNNING", 20)}
    programs["agent:worker-0"] = ("RUNNING", 91)
    all_new = ProbeObs(pong=True, commit=NEW, programs=programs)
    done = walk(every, verifying(every), [(1, all_new)])
    assert done.status is RowStatus.SUCCESS and done.reason == ""


@pytest.mark.parametrize("bad", [-1, 3601, 601])
def test_the_minimum_healthy_time_is_validated(bad):
    rules.validate_config(upd(min_healthy_time=0))
    rules.validate_config(upd(min_healthy_time=600))
    with pytest.raises(ValidationError) as error:
        rules.validate_config(upd(min_healthy_time=bad))
    assert error.value.field == "min_healthy_time"


def test_history_keeps_each_process_start_and_older_rows_still_load():
    history = verdicts.record({}, {"agent:web": ("RUNNING", 7)}, 4.0, {"agent:web": 6.0})
    assert history["agent:web"][0].start == -2.0
    assert verdicts.load(verdicts.dump(history)) == history
    old = json.dumps({"agent:web": [["RUNNING", 7, 1.5]]})
    assert verdicts.load(old)["agent:web"][0].start is None


states = st.sampled_from(["RUNNING", "RUNNING", "STARTING", "BACKOFF"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.1, 3), states, st.integers(0, 3), st.booleans(), st.booleans()),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([0.0, 5.0, 10.0]),
)
def test_success_only_when_every_restarted_program_was_up_the_minimum(steps, minimum):
    u = upd(min_healthy_time=minimum)
    row, now, started = verifying(u), 0.0, {}
    for gap, state, pid_index, pong, show_uptime in steps:
        now += gap
        pid = 20 + pid_index if state == "RUNNING" else None
        start = started.setdefault(pid, now - 0.5) if pid else None
        up = float(int(now - start)) if pid and show_uptime else None
        obs = probe(web=(state, pid), up=up, pong=pong)
        row = machine.after_probe(u, row, obs, now)
        if row.status is RowStatus.SUCCESS:
            assert state == "RUNNING" and pong
            age = (
                up
                if up is not None
                else min_healthy.age(
                    "agent:web", obs.programs, obs.uptimes, verdicts.load(row.seen_after), now, 0
                )
            )
            assert age >= minimum or up is None
            # whatever the evidence, the real process had lived the minimum
            assert now - start >= minimum
            return
        if row.step is not Step.VERIFY:
            return
