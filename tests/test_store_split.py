"""The SQLite store (leases, O(1) writes) and Split Update's batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_update.rollout.errors import LeaseLost, TransitionError, ValidationError
from agent_update.rollout.model import Row, RowStatus, Server, Step, Update, UpdateStatus
from agent_update.rollout.split import batch_sizes, split
from agent_update.rollout.store import NotFound, SqliteStore


def rows(n: int) -> list[Row]:
    return [Row(idx=i, server=f"s{i}", status=RowStatus.PENDING) for i in range(1, n + 1)]


@pytest.fixture
def store(tmp_path):
    return SqliteStore(tmp_path / "s.db")


def test_round_trip_keeps_every_type(store):
    update = store.insert_update(
        Update(repo="/r", branch="b", server_types=("Server", "Proxy"), lanes=3, halted=True),
        rows(2),
    )
    again = store.get_update(update.name)
    assert again == update and again.server_types == ("Server", "Proxy")
    assert store.get_rows(update.name) == rows(2)
    assert store.get_row(update.name, 2).status is RowStatus.PENDING
    with pytest.raises(NotFound):
        store.get_update("nope")
    server = Server(
        name="a",
        host="127.0.0.2",
        ssh_port=2222,
        agent_url="http://127.0.0.2:8000",
        self_hosted=True,
    )
    store.save_server(server)
    assert store.get_server("a") == server and store.get_server("b") is None


def test_save_row_writes_only_named_fields_and_is_fenced_by_the_lease(store):
    update = store.insert_update(Update(), rows(3))
    assert store.claim_row(update.name, 1, "me", now=0, ttl=10)
    assert not store.claim_row(update.name, 1, "other", now=5, ttl=10)
    row = store.get_row(update.name, 1).copy(status=RowStatus.RUNNING, reason="x")
    store.save_row(update.name, row, ["status"], owner="me")
    saved = store.get_row(update.name, 1)
    assert saved.status is RowStatus.RUNNING and saved.reason == ""  # only status written
    with pytest.raises(LeaseLost):
        store.save_row(update.name, row, ["reason"], owner="other")
    assert store.claim_row(update.name, 1, "other", now=11, ttl=10)  # expired: taken over
    with pytest.raises(LeaseLost):
        store.save_row(update.name, row, ["reason"], owner="me")
    store.release_row(update.name, 1, "other")
    assert store.get_row(update.name, 1).lease_owner == ""


@pytest.mark.parametrize("size", [10, 1000])
def test_writes_per_transition_do_not_grow_with_rows(store, size):
    update = store.insert_update(Update(), rows(size))
    before = store.writes
    row = store.get_row(update.name, size // 2).copy(step=Step.PRECHECK)
    store.save_row(update.name, row, ["step"])
    store.save_update(update.copy(status=UpdateStatus.RUNNING), ["status"])
    assert store.writes - before == 2


def test_split_nine_into_four_is_three_two_two_two():
    assert batch_sizes(9, 4) == [3, 2, 2, 2]
    update = Update(name="U", status=UpdateStatus.PENDING, commit="a" * 40)
    parts = split(update, rows(9), 4)
    assert [len(r) for _, r in parts] == [3, 2, 2, 2]
    assert [r.server for _, batch in parts for r in batch] == [f"s{i}" for i in range(1, 10)]
    assert parts[0][0] is update
    assert all(
        u.split_from == "U" and u.name == "" and u.commit == update.commit for u, _ in parts[1:]
    )
    assert all([r.idx for r in batch] == list(range(1, len(batch) + 1)) for _, batch in parts)


@given(count=st.integers(2, 500), data=st.data())
def test_batches_are_balanced_and_contiguous(count, data):
    k = data.draw(st.integers(2, count))
    sizes = batch_sizes(count, k)
    assert sum(sizes) == count and len(sizes) == k
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_split_refuses_wrong_status_and_counts():
    update = Update(name="U", status=UpdateStatus.RUNNING)
    with pytest.raises(TransitionError):
        split(update, rows(4), 2)
    pending = update.copy(status=UpdateStatus.PENDING)
    for bad in (1, 5):
        with pytest.raises(ValidationError) as err:
            split(pending, rows(4), bad)
        assert err.value.field == "batches"


def test_planning_lease_outlasts_every_probe_wave():
    from agent_update.rollout.model import EngineSettings
    from agent_update.rollout.planner import planning_ttl

    s = EngineSettings(lease_ttl=60, plan_concurrency=64, connect_timeout=10, probe_timeout=5)
    assert planning_ttl(s, 10) == 60
    assert planning_ttl(s, 1000) == 16 * 20  # 16 waves of at worst 20 s each


def test_rows_can_be_read_with_only_the_decision_fields(store):
    from agent_update.rollout.machine import DECISION_FIELDS

    full = [r.copy(log="x" * 1000, reason="why", lease_owner="o") for r in rows(3)]
    update = store.insert_update(Update(), full)
    brief = store.get_rows(update.name, DECISION_FIELDS)
    assert [r.reason for r in brief] == ["why"] * 3 and all(r.lease_owner == "o" for r in brief)
    assert all(r.log == "" for r in brief)  # not loaded
    assert store.get_rows(update.name) == full
