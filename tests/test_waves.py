"""Waves, failure thresholds and abort in the pure machine: examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_update.rollout import budget, commands, machine, rules, waves
from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import GateAction, Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.tally import tally_from_rows

OLD, NEW = "a" * 40, "b" * 40


def upd(**kw) -> Update:
    base = dict(name="U", repo="/r", branch="master", commit=NEW, status=UpdateStatus.RUNNING)
    base.update(kw)
    return Update(**base)


def pending(n: int) -> list[Row]:
    return [
        Row(idx=i, server=f"s{i}", status=RowStatus.PENDING, rollback_commit=OLD)
        for i in range(1, n + 1)
    ]


# ----------------------------------------------------------------- the definition


def test_wave_text_parses_to_counts_and_percentages():
    sizes = waves.parse_waves(" 1, 5 ,20% ")
    assert [str(s) for s in sizes] == ["1", "5", "20%"]
    assert [s.size(500) for s in sizes] == [1, 5, 100]
    assert waves.parse_waves("1%")[0].size(7) == 1  # rounded up, never empty
    assert waves.parse_waves("") == ()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("waves", "1, x", "not a number"),
        ("waves", "0", "at least one"),
        ("waves", "150%", "percentage"),
        ("waves", "0%", "percentage"),
        ("waves", "-1", "not a number"),
        ("waves", ",".join(["1"] * 21), "at most"),
        ("wave_success_threshold", 101.0, "percentage"),
        ("failure_budget_percent", 100.0, "percentage"),
        ("failure_budget_percent", -1.0, "percentage"),
        ("failure_min_sample", 0, "at least 1"),
        ("stall_minutes", -1.0, "negative"),
    ],
)
def test_bad_wave_and_budget_settings_name_their_field(field, value, words):
    with pytest.raises(ValidationError) as err:
        rules.validate_config(upd(**{field: value}))
    assert err.value.field == field and words in err.value.message


# --------------------------------------------------------------------- examples


def finish(rows: list[Row], idxs: list[int], status=RowStatus.SUCCESS) -> None:
    for i in idxs:
        rows[i - 1] = rows[i - 1].copy(status=status, step=Step.NONE, started_at=1.0)


def claim(rows: list[Row], idxs: list[int]) -> None:
    for i in idxs:
        rows[i - 1] = machine.claim(rows[i - 1]).copy(lease_owner="r", lease_expires=1e9)


def test_waves_ramp_up_then_run_up_to_the_lanes():
    u = upd(waves="1, 5, 20%", lanes=20)
    rows = pending(50)
    d = machine.decide(u, rows, 0)
    assert d.start == [1] and d.changes == {"wave_started": 1}
    u = u.copy(**d.changes)
    claim(rows, d.start)
    assert machine.decide(u, rows, 1).start == []  # wave 1 is full
    finish(rows, [1])
    d = machine.decide(u, rows, 2)
    assert d.changes["wave"] == 2 and d.start == [2, 3, 4, 5, 6]
    u = u.copy(**d.changes)
    claim(rows, d.start)
    finish(rows, [2, 3, 4, 5])
    assert machine.decide(u, rows, 3).start == []  # row 6 still runs: wave 3 waits
    finish(rows, [6])
    d = machine.decide(u, rows, 4)
    assert d.changes["wave"] == 3 and d.start == list(range(7, 17))  # 20% of 50
    u = u.copy(**d.changes)
    claim(rows, d.start)
    finish(rows, d.start)
    d = machine.decide(u, rows, 5)
    assert d.changes["wave"] == 4 and d.start == list(range(17, 37))  # the rest: 20 lanes


def test_a_failed_gate_pauses_with_the_reason_and_resume_accepts_it_once():
    u = upd(waves="1, 5", lanes=10, wave_success_threshold=90)
    rows = pending(20)
    u = u.copy(**machine.decide(u, rows, 0).changes)
    claim(rows, [1])
    finish(rows, [1], RowStatus.ROLLED_BACK)
    d = machine.decide(u, rows, 1)
    assert d.start == [] and d.changes["status"] is UpdateStatus.PAUSED
    assert "wave 1 ended with 0% success" in d.changes["pause_reason"]
    paused = u.copy(**d.changes)
    assert machine.decide(paused, rows, 2).idle  # stays paused
    resumed = commands.resume(paused)
    d = machine.decide(resumed, rows, 3)
    assert d.changes["wave"] == 2 and d.start == [2, 3, 4, 5, 6]
    assert d.changes["gate_override"] is False  # accepted once, not for good
    halting = upd(waves="1, 5", wave_gate_action=GateAction.HALT, wave=1, wave_started=1)
    d = machine.decide(halting, rows, 4)
    assert d.changes["halted"] and d.changes["status"] is UpdateStatus.FAILURE
    assert "below the 95% needed to open wave 2" in d.changes["halt_reason"]


def test_test_mode_composes_with_waves():
    u = upd(waves="5", lanes=5, test_mode=True, test_mode_count=2)
    rows = pending(10)
    d = machine.decide(u, rows, 0)
    assert d.start == [1, 2]
    u = u.copy(**d.changes)
    claim(rows, d.start)
    finish(rows, [1, 2])
    d = machine.decide(u, rows, 1)
    assert d.changes["status"] is UpdateStatus.PAUSED and d.changes["paused_for_test_mode"]
    u = commands.resume(u.copy(**d.changes))
    assert not u.gate_override  # a test-mode pause accepts no gate
    assert machine.decide(u, rows, 2).start == [3, 4, 5]  # the rest of wave 1


def test_a_percentage_budget_waits_for_its_sample_then_trips_overall_and_per_wave():
    u = upd(failure_budget_percent=20, failure_min_sample=5, lanes=10)
    rows = pending(20)
    finish(rows, [1, 2], RowStatus.ROLLED_BACK)  # 100% of 2: sample too small
    assert not machine.decide(u, rows, 0).changes.get("halted")
    finish(rows, [3, 4, 5])  # 2 of 5 = 40% > 20%
    d = machine.decide(u, rows, 0)
    assert d.changes["halted"] and "2 of 5 servers failed (40%)" in d.changes["halt_reason"]
    finish(rows, range(6, 12))  # 2 of 11 = 18%: under budget overall
    assert not machine.decide(u, rows, 0).changes.get("halted")


def test_a_percentage_budget_trips_on_one_bad_wave_alone():
    rows = pending(20)
    finish(rows, range(1, 11))  # waves 1 and 2: ten successes
    finish(rows, [11, 12, 13])
    finish(rows, [14, 15], RowStatus.FATAL)  # wave 3: 2 of 5 failed; overall 2 of 15 (13%)
    u = upd(waves="1, 9", wave=3, wave_base_succeeded=10, failure_budget_percent=20)
    u = u.copy(failure_min_sample=5)
    why = budget.budget_reason(u, tally_from_rows(rows))
    assert why == "2 of 5 servers of wave 3 failed (40%), more than the failure budget of 20%"
    assert not budget.budget_reason(u.copy(waves=""), tally_from_rows(rows))  # overall only


def test_abort_starts_nothing_then_rolls_back_this_rollouts_successes():
    u = upd(lanes=2)
    rows = pending(6)
    claim(rows, [1, 2])
    finish(rows, [1])
    aborted = commands.abort(u, 5, rollback=True, reason="bad build")
    assert aborted.status is UpdateStatus.RUNNING and aborted.aborted
    d = machine.decide(aborted, rows, 6)
    assert d.start == [] and d.rollback == [1]  # one lane left: row 2 still runs
    rows[0] = machine.abort_rollback(rows[0]).copy(lease_owner="r", lease_expires=1e9)
    assert rows[0].status is RowStatus.ROLLING_BACK
    assert machine.row_action(rows[0]) is machine.RowAction.PRECHECK
    finish(rows, [2])
    d = machine.decide(aborted, rows, 7)
    assert d.start == [] and d.rollback == [2] and "status" not in d.changes
    finish(rows, [1, 2], RowStatus.ROLLED_BACK)
    d = machine.decide(aborted, rows, 8)
    assert d.changes["status"] is UpdateStatus.ABORTED and d.changes["halt_reason"] == "bad build"
    assert [r.status for r in rows[2:]] == [RowStatus.PENDING] * 4  # never touched
    assert commands.abort(upd(status=UpdateStatus.PENDING), 1).status is UpdateStatus.ABORTED
    with pytest.raises(TransitionError):
        commands.abort(upd(status=UpdateStatus.SUCCESS), 1)
    with pytest.raises(TransitionError):
        commands.resume(upd(status=UpdateStatus.ABORTED))


def test_abort_without_rollback_ends_when_in_flight_rows_end():
    rows = pending(3)
    claim(rows, [1])
    aborted = commands.abort(upd(status=UpdateStatus.PAUSED), 0)
    assert machine.decide(aborted, rows, 1).idle
    finish(rows, [1])
    d = machine.decide(aborted, rows, 2)
    assert d.changes["status"] is UpdateStatus.ABORTED and d.rollback == []


def test_the_deadline_starts_nothing_new_and_ends_with_its_reason():
    u = upd(deadline_at=100.0, lanes=2)
    rows = pending(4)
    assert machine.decide(u, rows, 99).start == [1, 2]
    d = machine.decide(u, rows, 100)
    assert d.start == [] and "deadline" in d.changes["halt_reason"]
    assert d.changes["status"] is UpdateStatus.FAILURE


# ------------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
def growing(items: list[str]) -> list[str]:
    """Wave sizes as the rules accept them: counts, and shares, each non-decreasing."""
    counts = iter(sorted(int(i) for i in items if not i.endswith("%")))
    shares = iter(sorted(int(i[:-1]) for i in items if i.endswith("%")))
    return [f"{next(shares)}%" if i.endswith("%") else str(next(counts)) for i in items]


@given(
    n=st.integers(1, 30),
    lanes=st.integers(1, 6),
    wave_text=st.lists(
        st.one_of(st.integers(1, 6).map(str), st.integers(1, 60).map(lambda p: f"{p}%")),
        max_size=4,
    ).map(growing),
    threshold=st.sampled_from([0.0, 50.0, 95.0, 100.0]),
    action=st.sampled_from(list(GateAction)),
    fails=st.sets(st.integers(1, 30)),
    durations=st.lists(st.integers(0, 3), min_size=1, max_size=30),
    test_mode=st.integers(0, 5),
    abort_at=st.one_of(st.none(), st.integers(0, 40)),
    rollback=st.booleans(),
)
def test_any_waved_rollout_keeps_its_limits(
    n, lanes, wave_text, threshold, action, fails, durations, test_mode, abort_at, rollback
):
    u = upd(
        lanes=lanes,
        waves=", ".join(wave_text),
        wave_success_threshold=threshold,
        wave_gate_action=action,
        test_mode=bool(test_mode),
        test_mode_count=max(test_mode, 1),
    )
    rules.validate_config(u.copy(startup_timeout=10, command_timeout=20))
    sizes = waves.parse_waves(u.waves)
    rows = pending(n)
    left: dict[int, int] = {}  # idx -> ticks until it ends
    started: list[int] = []
    started_in: dict[int, int] = {}  # wave -> rows started in it
    for now in range(400):
        if abort_at is not None and now == abort_at and u.status in commands.ABORTABLE:
            u = commands.abort(u, now, rollback=rollback)
        before = u
        d = machine.decide(u, rows, now)
        u = u.copy(**d.changes)
        if u.wave != before.wave:  # a wave opened: never early
            assert u.wave == before.wave + 1
            assert not any(machine.is_active(r) for r in rows)
            assert started_in.get(before.wave, 0) == sizes[before.wave - 1].size(n)
            done = tally_from_rows(rows)
            ok = done.succeeded * 100 >= threshold * (done.succeeded + done.failed)
            assert ok or before.gate_override or not (done.succeeded + done.failed)
        if before.aborted:
            assert d.start == []  # abort starts nothing new
        for idx in d.start:
            assert rows[idx - 1].status is RowStatus.PENDING
            started.append(idx)
            started_in[u.wave] = started_in.get(u.wave, 0) + 1
            rows[idx - 1] = machine.claim(rows[idx - 1]).copy(lease_owner="r", lease_expires=1e9)
            left[idx] = durations[idx % len(durations)]
        for idx in d.rollback:
            assert before.aborted and rows[idx - 1].status is RowStatus.SUCCESS
            rows[idx - 1] = machine.abort_rollback(rows[idx - 1])
            left[idx] = 1
        active = [r for r in rows if machine.is_active(r)]
        cap = waves.capacity(u, n) if not u.aborted else None
        assert len(active) <= lanes
        if cap is not None:
            assert started_in.get(u.wave, 0) <= cap  # never more than the wave holds
        if u.status.is_final or (u.status is UpdateStatus.PAUSED and not active):
            if u.status is UpdateStatus.PAUSED and (u.paused_at_gate or u.paused_for_test_mode):
                u = commands.resume(u)
                continue
            break
        for row in active:
            left[row.idx] -= 1
            if left[row.idx] < 0:
                if row.status is RowStatus.ROLLING_BACK:
                    end = RowStatus.ROLLED_BACK
                else:
                    end = RowStatus.ROLLED_BACK if row.idx in fails else RowStatus.SUCCESS
                rows[row.idx - 1] = row.copy(status=end, step=Step.NONE, started_at=float(now))
    else:
        raise AssertionError("the rollout never settled")
    assert len(started) == len(set(started))
    assert not any(machine.is_active(r) for r in rows)
    if u.status is UpdateStatus.ABORTED and rollback:
        assert not any(r.status is RowStatus.SUCCESS for r in rows)
    if u.aborted:
        assert u.status is UpdateStatus.ABORTED


@given(
    succeeded=st.integers(0, 200),
    failed=st.integers(0, 200),
    absolute=st.integers(0, 50),
    pct=st.integers(0, 99),
    sample=st.integers(1, 50),
)
def test_failure_thresholds_trip_exactly(succeeded, failed, absolute, pct, sample):
    rows = [Row(idx=i, server="s", status=RowStatus.SUCCESS) for i in range(succeeded)]
    rows += [Row(idx=1000 + i, server="s", status=RowStatus.ROLLED_BACK) for i in range(failed)]
    u = upd(failure_budget=absolute, failure_budget_percent=float(pct), failure_min_sample=sample)
    ended = succeeded + failed
    expected = (absolute > 0 and failed > absolute) or (
        pct > 0 and ended >= sample and failed * 100 > pct * ended
    )
    assert bool(budget.budget_reason(u, tally_from_rows(rows))) is expected
