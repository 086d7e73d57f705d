"""ETA and the stall alert: pure rules, and the SQLite store's row times."""

from __future__ import annotations

import pytest

from agent_update.rollout import eta, stall
from agent_update.rollout.model import Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.store import SqliteStore
from agent_update.rollout.tally import RowTimes, tally_from_rows, times_from_rows


def rows(n: int, done: int = 0, running: int = 0) -> list[Row]:
    out = []
    for i in range(1, n + 1):
        if i <= done:
            row = Row(idx=i, server=f"s{i}", status=RowStatus.SUCCESS, started_at=10.0 * i)
            row = row.copy(ended_at=10.0 * i + 60)
        elif i <= done + running:
            row = Row(idx=i, server=f"s{i}", status=RowStatus.RUNNING, step=Step.COMMAND)
        else:
            row = Row(idx=i, server=f"s{i}", status=RowStatus.PENDING)
        out.append(row)
    return out


def running(**kw) -> Update:
    return Update(name="U", status=UpdateStatus.RUNNING, **kw)


@pytest.mark.parametrize(
    ("config", "n", "done", "active", "expected"),
    [
        (dict(lanes=1), 10, 0, 0, 10),
        (dict(lanes=20, waves="1, 5, 20%"), 500, 0, 0, 1 + 1 + 5 + 20),
        (dict(lanes=20, waves="1, 5, 20%", wave=4, wave_started=10), 500, 106, 20, 19.5),
        (dict(lanes=4, waves="1, 5", wave=2, wave_started=5), 20, 1, 5, 1.5 + 4),
        (dict(lanes=3), 6, 6, 0, 0),
    ],
)
def test_rounds_left_follow_the_waves_to_come(config, n, done, active, expected):
    tally = tally_from_rows(rows(n, done, active))
    assert eta.rounds_left(running(**config), tally) == expected


def test_eta_uses_the_mean_of_servers_that_ran():
    made = rows(10, done=2)
    times = times_from_rows(made)
    assert times == RowTimes(last_end=80.0, mean=60.0, count=2)
    found = eta.estimate(running(lanes=2), tally_from_rows(made), times)
    assert found.seconds_left == 4 * 60 and "about 4 min left" in found.text(0)
    unknown = eta.estimate(running(lanes=2), tally_from_rows(rows(4)), times_from_rows(rows(4)))
    assert unknown.seconds_left is None and "unknown" in unknown.text(0)


def test_the_store_times_match_the_reference(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    skipped = Row(idx=7, server="x", status=RowStatus.SKIPPED, started_at=1.0, ended_at=500.0)
    made = [*rows(6, done=3, running=1), skipped]
    update = store.insert_update(Update(), made)
    assert store.row_times(update.name) == times_from_rows(made)


def test_a_stall_is_told_once_per_quiet_spell_and_only_while_running():
    u = running(stall_minutes=10, started_at=0.0)
    assert stall.check(u, None, 2, 599) is None
    alert = stall.check(u, None, 2, 600)
    assert alert is not None and "no server ended in 10 min" in alert.message
    assert "2 in flight" in alert.message
    told = u.copy(stall_notified_at=600.0)
    assert stall.check(told, None, 2, 900) is None  # already told
    assert stall.check(told, 650.0, 2, 1249) is None  # a row ended: a new spell
    assert stall.check(told, 650.0, 2, 1250) is not None
    assert stall.check(u.copy(status=UpdateStatus.PAUSED), None, 2, 9999) is None
    assert stall.check(u.copy(stall_minutes=0), None, 2, 9999) is None
