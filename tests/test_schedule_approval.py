"""Schedule, maintenance windows, approval and server selection: the pure rules."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_update.rollout import approval, commands, schedule, targets
from agent_update.rollout.decide import decide
from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import Row, RowStatus, Server, Update, UpdateStatus


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


MONDAY = 1733097600.0  # 2024-12-02 00:00 UTC, a Monday


def at(day: int, hh: int, mm: int = 0) -> float:
    return MONDAY + day * 86400 + hh * 3600 + mm * 60


@pytest.mark.parametrize(
    ("text", "moment", "inside"),
    [
        ("22:00-04:00", at(0, 23), True),
        ("22:00-04:00", at(1, 3, 59), True),
        ("22:00-04:00", at(1, 4), False),
        ("22:00-04:00", at(1, 12), False),
        ("Mon-Fri 22:00-04:00", at(5, 2), True),  # Saturday morning: Friday's window
        ("Mon-Fri 22:00-04:00", at(5, 23), False),  # Saturday evening
        ("Mon-Fri 22:00-04:00", at(0, 2), False),  # Monday morning: Sunday had none
        ("Sat,Sun 01:00-05:00", at(6, 1), True),
        ("sat, sun 01:00-05:00", at(0, 1), False),
        ("Fri-Mon 10:00-11:00", at(0, 10, 30), True),  # wraps past Sunday
        ("Fri-Mon 10:00-11:00", at(2, 10, 30), False),
    ],
)
def test_windows(text, moment, inside):
    assert schedule.inside(schedule.parse_window(text), moment) is inside


@pytest.mark.parametrize("text", ["25:00-01:00", "10:00-10:00", "Mon-Funday 1:00-2:00", "noon"])
def test_bad_windows_name_the_field(text):
    with pytest.raises(ValidationError) as caught:
        schedule.parse_window(text)
    assert caught.value.field == "window"


@given(
    st.sampled_from(["22:00-04:00", "Mon-Fri 09:00-17:00", "Sun 23:30-00:30", "Wed 00:00-00:01"]),
    st.floats(0, 14 * 86400),
)
def test_the_next_opening_is_inside_and_nothing_before_it_is(text, offset):
    window = schedule.parse_window(text)
    now = MONDAY + offset
    opens = schedule.next_opening(window, now)
    assert opens >= now and schedule.inside(window, opens)
    for minute in range(int((opens - now) // 60)):
        assert not schedule.inside(window, now + minute * 60)


def test_outside_the_window_nothing_starts_and_the_rollout_says_why():
    update = Update(name="AU", status=UpdateStatus.RUNNING, lanes=2, window="22:00-04:00")
    rows = [Row(1, "a", status=RowStatus.PENDING), Row(2, "b", status=RowStatus.PENDING)]
    out = decide(update, rows, at(0, 12))
    assert out.start == [] and "outside the maintenance window 22:00-04:00" in str(
        out.changes["waiting_reason"]
    )
    assert "22:00" in str(out.changes["waiting_reason"])
    waiting = update.copy(waiting_reason=out.changes["waiting_reason"])
    assert decide(waiting, rows, at(0, 12, 5)).changes == {}  # not rewritten every look
    inside = decide(waiting, rows, at(0, 22, 30))
    assert inside.start == [1, 2] and inside.changes["waiting_reason"] == ""


def test_approval_needs_two_people():
    update = Update(name="AU", status=UpdateStatus.PENDING, approval_required=True)
    assert approval.waiting(update)
    asked = approval.request_start(update, "alice")
    with pytest.raises(TransitionError, match="another Agent Update Manager"):
        approval.approve(asked, "Alice ", 1.0)
    done = approval.approve(asked, "bob", 1.0)
    assert done.approved_by == "bob" and not approval.waiting(done)
    with pytest.raises(TransitionError, match="already approved"):
        approval.approve(done, "carol", 2.0)
    first = approval.approve(update, "bob", 1.0)  # approved before anyone asked
    with pytest.raises(TransitionError, match="from someone else"):
        approval.check_start(first, "bob")
    approval.check_start(first, "alice")
    with pytest.raises(TransitionError, match="needs no approval"):
        approval.approve(Update(name="X", status=UpdateStatus.PENDING), "bob", 1.0)


def test_patterns_and_tags_select_servers():
    servers = [
        Server("web-eu-1", "h1", tags="eu, canary"),
        Server("web-us-1", "h2", tags="us"),
        Server("DB-eu-1", "h3", tags="EU"),
    ]

    def chosen(**kw):
        return [r.server for r in commands.rows_from_registry(Update(**kw), servers)]

    assert chosen(server_pattern="web-*") == ["web-eu-1", "web-us-1"]
    assert chosen(server_pattern="db-*, *-us-*") == ["web-us-1", "DB-eu-1"]
    assert chosen(server_tags="eu") == ["web-eu-1", "DB-eu-1"]
    assert chosen(server_tags="eu, canary") == ["web-eu-1"]
    assert chosen(server_pattern="web-*", server_tags="eu") == ["web-eu-1"]
    with pytest.raises(ValidationError, match="server_tags"):
        targets.tags_of("good, not a tag", "server_tags")
