"""Waves, thresholds and Abort on the loopback fleet: which hosts ran a command, which did not."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

import pytest

from agent_update.rollout.model import GateAction, RowStatus, UpdateStatus
from agent_update.testing.harness import fleet_service, fleet_update

pytestmark = pytest.mark.fleet
_counter = itertools.count()


@pytest.fixture
def reset(fleet):
    fleet.reset()
    return fleet


def untouched(fleet):
    """Per host: (web pid, checkout); equal later means no command ran there."""
    return {
        h.name: (fleet.program_states(h)["agent:web"][1], fleet.checked_out_commit(h))
        for h in fleet.hosts
    }


def runs(fleet, host) -> str:
    return fleet.running_commit(host)


def start(service, commit, **kw):
    update = service.create(fleet_update(commit, **kw))
    planned = service.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    service.start(update.name)
    return update.name


def test_wave_two_past_its_gate_halts_and_later_hosts_are_never_touched(reset, tmp_path):
    fleet = reset
    commit = fleet.add_commit(f"wave-halt-{next(_counter)}")
    fleet.sabotage(fleet.hosts[1], commit)  # the only server of wave 2 crashes on it
    before = untouched(fleet)
    service = fleet_service(fleet, tmp_path / "halt")
    name = start(service, commit, waves="1, 1", lanes=2, wave_gate_action=GateAction.HALT)
    final = service.drive(name, timeout=240)
    rows = service.store.get_rows(name)
    assert [r.status for r in rows] == [
        RowStatus.SUCCESS,
        RowStatus.ROLLED_BACK,
        RowStatus.PENDING,
        RowStatus.PENDING,
    ], [r.log for r in rows]
    assert final.status is UpdateStatus.PARTIAL_SUCCESS and final.halted
    assert "wave 2 ended with 50% success" in final.halt_reason
    h0, h1, h2, h3 = fleet.hosts
    assert runs(fleet, h0) == commit and runs(fleet, h1) == fleet.commits.base
    now = untouched(fleet)
    assert now[h2.name] == before[h2.name] and now[h3.name] == before[h3.name]
    assert now[h1.name][0] != before[h1.name][0]  # it did run (and was rolled back)


def test_a_gate_pause_waits_for_resume_then_the_next_wave_runs(reset, tmp_path):
    fleet = reset
    commit = fleet.add_commit(f"wave-pause-{next(_counter)}")
    fleet.sabotage(fleet.hosts[2], commit)
    before = untouched(fleet)
    service = fleet_service(fleet, tmp_path / "pause")
    name = start(service, commit, waves="1, 2", lanes=3, wave_success_threshold=90)
    paused = service.drive(name, timeout=240)
    assert paused.status is UpdateStatus.PAUSED, paused
    assert "wave 2 ended with 67% success so far (2 of 3)" in paused.pause_reason
    rows = service.store.get_rows(name)
    assert [r.status for r in rows][:3] == [
        RowStatus.SUCCESS,
        RowStatus.SUCCESS,
        RowStatus.ROLLED_BACK,
    ]
    last = fleet.hosts[3]
    assert untouched(fleet)[last.name] == before[last.name]  # not started by the pause
    service.resume(name)  # the operator accepts the gate: wave 3 (the rest) runs
    final = service.drive(name, timeout=240)
    assert final.status is UpdateStatus.PARTIAL_SUCCESS and final.wave == 3
    assert runs(fleet, last) == commit


def test_abort_lets_the_row_in_flight_finish_then_rolls_back_this_rollouts_servers(reset, tmp_path):
    fleet = reset
    before = untouched(fleet)
    aborted = {}

    def listener(name, row, update):
        if row is not None and row.idx == 2 and row.status is RowStatus.VERIFYING and not aborted:
            aborted["at"] = row.idx
            service.abort(name, rollback=True, reason="bad build seen elsewhere")

    service = fleet_service(fleet, tmp_path / "abort", listener=listener)
    name = start(service, fleet.commits.slow)
    final = service.drive(name, timeout=240)
    rows = service.store.get_rows(name)
    assert aborted == {"at": 2}
    assert final.status is UpdateStatus.ABORTED
    assert final.halt_reason == "bad build seen elsewhere"
    assert [r.status for r in rows] == [
        RowStatus.ROLLED_BACK,
        RowStatus.ROLLED_BACK,
        RowStatus.PENDING,
        RowStatus.PENDING,
    ], [r.log for r in rows]
    assert "command to" in rows[1].log and "Success" in rows[1].log  # finished, verified
    assert all(r.reason == "rolled back on abort" for r in rows[:2])
    h0, h1, h2, h3 = fleet.hosts
    assert runs(fleet, h0) == runs(fleet, h1) == fleet.commits.base
    now = untouched(fleet)
    assert now[h2.name] == before[h2.name] and now[h3.name] == before[h3.name]


def test_abort_without_rollback_keeps_what_was_done_and_starts_nothing(reset, tmp_path):
    fleet = reset
    before = untouched(fleet)

    def listener(name, row, update):
        if row is not None and row.idx == 1 and row.status is RowStatus.VERIFYING:
            service.abort(name)

    service = fleet_service(fleet, tmp_path / "abort-keep", listener=listener)
    name = start(service, fleet.commits.good, lanes=1)
    final = service.drive(name, timeout=240)
    rows = service.store.get_rows(name)
    assert final.status is UpdateStatus.ABORTED and final.halt_reason == "aborted by an operator"
    assert [r.status for r in rows] == [RowStatus.SUCCESS] + [RowStatus.PENDING] * 3
    assert runs(fleet, fleet.hosts[0]) == fleet.commits.good
    now = untouched(fleet)
    assert all(now[h.name] == before[h.name] for h in fleet.hosts[1:])


def test_past_the_deadline_nothing_new_starts(reset, tmp_path):
    fleet = reset
    before = untouched(fleet)
    service = fleet_service(fleet, tmp_path / "deadline")
    update = service.create(fleet_update(fleet.commits.slow))  # web takes 3 s to start
    service.build_plan(update.name)
    planned = service.store.get_update(update.name)
    service.store.save_update(planned.copy(deadline_at=time.time() + 1.0), ["deadline_at"])
    service.start(update.name)
    final = service.drive(update.name, timeout=240)
    rows = service.store.get_rows(update.name)
    assert [r.status for r in rows] == [RowStatus.SUCCESS] + [RowStatus.PENDING] * 3
    assert final.status is UpdateStatus.PARTIAL_SUCCESS and "deadline" in final.halt_reason
    assert runs(fleet, fleet.hosts[0]) == fleet.commits.slow
    now = untouched(fleet)
    assert all(now[h.name] == before[h.name] for h in fleet.hosts[1:])


def test_a_stall_is_reported_once_and_changes_nothing_on_the_servers(reset, tmp_path):
    fleet = reset
    service = fleet_service(fleet, tmp_path / "stall")
    for server in service.store.list_servers()[1:]:
        service.store.save_server(replace(server, status="Archived"))
    name = start(service, fleet.commits.slow, stall_minutes=0.02)  # 1.2 s without an end
    alerts = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        alerts += service.stalls()
        if service.store.get_update(name).status.is_final:
            break
        time.sleep(0.1)
    final = service.drive(name, timeout=120)
    assert len(alerts) == 1 and alerts[0].name == name
    assert "no server ended in" in alerts[0].message and "1 in flight" in alerts[0].message
    assert final.status is UpdateStatus.SUCCESS  # the alert did not act
    assert runs(fleet, fleet.hosts[0]) == fleet.commits.slow


def test_a_percentage_budget_waits_for_its_sample_then_halts(reset, tmp_path):
    fleet = reset
    commit = fleet.add_commit(f"budget-{next(_counter)}")
    for host in fleet.hosts[:2]:
        fleet.sabotage(host, commit)
    before = untouched(fleet)
    service = fleet_service(fleet, tmp_path / "budget")
    name = start(service, commit, failure_budget_percent=40, failure_min_sample=2)
    final = service.drive(name, timeout=240)
    rows = service.store.get_rows(name)
    assert [r.status for r in rows] == [RowStatus.ROLLED_BACK] * 2 + [RowStatus.PENDING] * 2
    assert final.status is UpdateStatus.FAILURE
    assert "2 of 2 servers failed (100%), more than the failure budget of 40%" in final.halt_reason
    assert all(runs(fleet, h) == fleet.commits.base for h in fleet.hosts)
    now = untouched(fleet)
    assert all(now[h.name] == before[h.name] for h in fleet.hosts[2:])
