"""One rollout per server: the store's compare-and-set lease and the waiting rule."""

from __future__ import annotations

import json

from agent_update.rollout import machine, server_leases
from agent_update.rollout.model import Row, RowStatus, Server, Step, Update, UpdateStatus
from agent_update.rollout.observations import ProbeObs
from agent_update.rollout.runner import Runner
from agent_update.rollout.store import SqliteStore


def store_with(tmp_path, *updates: tuple[str, UpdateStatus, list[tuple[str, RowStatus]]]):
    store = SqliteStore(tmp_path / "s.db")
    for name, status, rows in updates:
        store.insert_update(
            Update(name=name, status=status),
            [Row(idx=i, server=s, status=st) for i, (s, st) in enumerate(rows, start=1)],
        )
    return store


def test_the_lease_is_compare_and_set_renewable_and_expires(tmp_path):
    store = store_with(tmp_path)
    assert store.claim_server("h1", "A", 1, now=100, ttl=10) == ""
    assert store.claim_server("h1", "B", 1, now=101, ttl=10) == "A"  # busy
    assert store.claim_server("h1", "A", 2, now=101, ttl=10) == "A"  # another row of A too
    assert store.claim_server("h1", "A", 1, now=105, ttl=10) == ""  # renewed to 115
    assert store.claim_server("h1", "B", 1, now=112, ttl=10) == "A"
    assert store.server_holders(["h1", "h2"], now=112) == {"h1": ("A", 1)}
    assert store.server_holders(["h1"], now=115) == {}  # expired with the row's lease
    assert store.claim_server("h1", "B", 1, now=115, ttl=10) == ""  # a dead runner frees it
    store.release_server("h1", "A", 1)  # not the holder: nothing happens
    assert store.server_holders(["h1"], now=116) == {"h1": ("B", 1)}
    store.release_server("h1", "B", 1)
    assert store.server_holders(["h1"], now=116) == {}
    assert store.claim_server("h1", "A", 1, now=117, ttl=10) == ""


def test_waiting_for_and_overlaps(tmp_path):
    store = store_with(
        tmp_path,
        ("A", UpdateStatus.RUNNING, [("h1", RowStatus.RUNNING), ("h2", RowStatus.PENDING)]),
        ("B", UpdateStatus.RUNNING, [("h1", RowStatus.PENDING), ("h3", RowStatus.SUCCESS)]),
        ("C", UpdateStatus.DRAFT, [("h2", RowStatus.DRAFT), ("h1", RowStatus.SUCCESS)]),
        ("D", UpdateStatus.SUCCESS, [("h1", RowStatus.SUCCESS)]),
        ("E", UpdateStatus.PAUSED, [("h1", RowStatus.PENDING)]),
    )
    assert store.waiting_for("h1") == ["B"]  # Running updates only (E is paused)
    assert store.claim_server("h1", "A", 1, now=0, ttl=10) == ""
    assert store.claim_server("h2", "B", 1, now=0, ttl=10) == ""
    assert store.foreign_leases("A", now=5) == {"h2": ("B", 1)}
    assert store.foreign_leases("A", now=10) == {}  # expired
    assert store.waiting_for("h2") == ["A"]
    assert [(r.idx, r.server) for r in store.pending_on("A", ["h1", "h2", "h9"])] == [(2, "h2")]
    assert store.pending_on("B", []) == []
    assert store.overlaps("A") == [  # a Draft (C) holds nothing: never named
        ("B", "Running", "h1"),
        ("E", "Paused", "h1"),
    ]
    assert store.overlaps("D") == []  # its rows have ended
    line = server_leases.overlap_warning(store.overlaps("A"))
    assert line == (
        "servers also in other unfinished updates: B (Running): h1; "
        "E (Paused): h1 (each waits until the other update is done with it)"
    )
    assert server_leases.overlap_warning([]) == ""


def test_decide_starts_no_row_on_a_busy_server_and_moves_on():
    update = Update(name="B", status=UpdateStatus.RUNNING, lanes=2, commit="b" * 40)
    rows = [Row(idx=i, server=f"h{i}", status=RowStatus.PENDING) for i in (1, 2, 3)]
    decision = machine.decide(update, rows, 0, busy={"h1"})
    assert decision.start == [2, 3]
    only_busy = machine.decide(update, rows[:1], 0, busy={"h1"})
    assert only_busy.idle  # not final: the row waits, the update stays Running
    rows[0] = rows[0].copy(status=RowStatus.SUCCESS)
    assert machine.decide(update, rows, 0, busy={"h1"}).start == [2, 3]


def test_a_claimed_row_on_a_busy_server_goes_back_to_pending(tmp_path):
    """The runner's side, without servers: the race lost after decide."""

    class NoConnector:
        def open(self, server, update):
            raise AssertionError("a row waiting for its server must not touch it")

    store = store_with(tmp_path, ("B", UpdateStatus.RUNNING, [("h1", RowStatus.PENDING)]))
    launched: list[int] = []
    runner = Runner(store, NoConnector(), launcher=lambda n, i, o: launched.append(i))
    now = runner.clock()
    assert store.claim_server("h1", "A", 1, now, 60) == ""
    assert runner.kick("B") == [] and launched == []
    (row,) = store.get_rows("B")
    assert row.status is RowStatus.PENDING and row.step is Step.NONE
    assert row.reason == "waiting: h1 busy in A"
    assert store.get_update("B").status is UpdateStatus.RUNNING
    store.release_server("h1", "A", 1)
    assert runner.kick("B") == [1] and launched == [1]
    assert store.get_row("B", 1).reason == "waiting: h1 busy in A"  # until its precheck


def test_the_runner_that_frees_a_server_clears_the_note_and_kicks_the_waiting_update(tmp_path):
    store = store_with(
        tmp_path,
        ("A", UpdateStatus.RUNNING, [("h1", RowStatus.SUCCESS)]),
        ("B", UpdateStatus.RUNNING, [("h1", RowStatus.PENDING), ("h2", RowStatus.PENDING)]),
    )
    launched: list[tuple[str, int]] = []
    runner = Runner(store, object(), launcher=lambda n, i, o: launched.append((n, i)))
    store.save_row("B", Row(idx=1, server="h1", reason="waiting: h1 busy in A"), ["reason"])
    runner._server_freed("A", "h1")
    assert store.get_row("B", 1).reason == ""
    assert launched == [("B", 1)]  # one lane
    assert store.server_holders(["h1"], runner.clock()) == {"h1": ("B", 1)}


def test_a_resumed_row_whose_server_was_taken_waits_without_touching_it(tmp_path):
    """A dead runner's row, resumed after another update took its server."""

    target = "b" * 40
    store = store_with(tmp_path)
    store.insert_update(
        Update(name="B", status=UpdateStatus.RUNNING, commit=target, startup_timeout=60),
        [
            Row(
                idx=1,
                server="h1",
                status=RowStatus.RUNNING,
                step=Step.COMMAND_SENT,
                rollback_commit="a" * 40,
                pids_before=json.dumps({"agent:web": 1}),
            )
        ],
    )
    events: list[str] = []

    class Link:
        def probe(self):
            events.append("probe")
            return ProbeObs(pong=True, commit=target, programs={"agent:web": ("RUNNING", 2)})

        def close(self):
            return None

    class Connector:
        def open(self, server, update):
            return Link()

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()

    def sleep(seconds: float) -> None:
        events.append("sleep")
        clock.now += seconds
        if events.count("sleep") == 3:
            store.release_server("h1", "A", 1)  # the other update is done with it

    store.save_server(Server(name="h1", host="127.0.0.1", agent_url="http://127.0.0.1:9"))
    assert store.claim_server("h1", "A", 1, clock.now, 600) == ""
    runner = Runner(store, Connector(), launcher=lambda *a: None, clock=clock, sleep=sleep)
    assert runner.kick("B") == [1]  # resumed: its lease was free
    resumed = store.get_row("B", 1)
    # Said in the resume's own write: no moment where both rows look at work on h1.
    assert resumed.log.splitlines()[-2:][0].startswith("resumed by ")
    assert resumed.log.splitlines()[-1] == "waiting: h1 busy in A"
    row = runner.run_row("B", 1, resumed.lease_owner)
    assert events[:4] == ["sleep", "sleep", "sleep", "probe"]  # no probe while busy
    assert row.status is RowStatus.SUCCESS
    assert store.get_row("B", 1).log.count("waiting: h1 busy in A") == 1  # said once
    assert store.server_holders(["h1"], clock.now) == {}  # released when the row ended
