"""Rollouts against the real loopback fleet: assert what the agents really run."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from agent_update.rollout.model import RowStatus, Step, UpdateStatus
from agent_update.testing.harness import fleet_service, fleet_update

pytestmark = pytest.mark.fleet
_counter = itertools.count()


@pytest.fixture
def reset(fleet):
    """Every host back on base with every program running, before each test."""
    fleet.reset()
    return fleet


def service_for(fleet, tmp_path: Path, hosts: int | None = None, **kw):
    service = fleet_service(fleet, tmp_path / f"svc{next(_counter)}", **kw)
    if hosts is not None:  # archive all but the first N hosts in the registry
        keep = {h.name for h in fleet.hosts[:hosts]}
        for server in service.store.list_servers():
            if server.name not in keep:
                service.store.save_server(replace(server, status="Archived"))
    return service


def run(service, commit, **kw):
    update = service.create(fleet_update(commit, **kw))
    planned = service.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    service.start(update.name)
    final = service.drive(update.name, timeout=240)
    return final, {r.server: r for r in service.store.get_rows(update.name)}


def on(fleet, host_name: str) -> tuple[str, str]:
    host = fleet.host(host_name)
    return fleet.reported_commit(host), fleet.running_commit(host)


class RecordingHooks:
    """Records the calls around each server (e.g. halting its job queue)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def before_update(self, update, row) -> None:
        self.calls.append(("before", row.server, row.status.value))

    def after_update(self, update, row) -> None:
        self.calls.append(("after", row.server, row.status.value))


def test_all_succeed_and_agents_run_the_new_commit(reset, tmp_path):
    fleet = reset
    hooks = RecordingHooks()
    service = service_for(fleet, tmp_path, hosts=3, hooks=hooks)
    final, rows = run(service, fleet.commits.good)
    assert final.status is UpdateStatus.SUCCESS
    for host in fleet.hosts[:3]:  # released whatever the outcome, once each
        mine = [c for c in hooks.calls if c[1] == host.name]
        assert mine == [("before", host.name, "Running"), ("after", host.name, "Success")]
    for name, row in rows.items():
        assert row.status is RowStatus.SUCCESS, row.log
        assert on(fleet, name) == (fleet.commits.good, fleet.commits.good)
        assert (
            row.reported_commit == fleet.commits.good and row.current_commit == fleet.commits.base
        )


def test_already_updated_server_is_skipped(reset, tmp_path):
    fleet = reset
    fleet.set_commit(fleet.hosts[0], fleet.commits.good)
    pid_before = fleet.program_states(fleet.hosts[0])["agent:web"][1]
    service = service_for(fleet, tmp_path, hosts=2)
    final, rows = run(service, fleet.commits.good)
    assert final.status is UpdateStatus.SUCCESS
    assert rows[fleet.hosts[0].name].status is RowStatus.SKIPPED
    assert fleet.program_states(fleet.hosts[0])["agent:web"][1] == pid_before  # untouched
    assert rows[fleet.hosts[1].name].status is RowStatus.SUCCESS
    assert on(fleet, fleet.hosts[1].name) == (fleet.commits.good, fleet.commits.good)


@pytest.mark.parametrize("bad", ["crash", "install_fail", "unhealthy"])
def test_failed_update_is_rolled_back_and_the_old_commit_runs_again(reset, tmp_path, bad):
    fleet = reset
    hooks = RecordingHooks()
    service = service_for(fleet, tmp_path, hosts=1, hooks=hooks)
    # The unhealthy commit breaks the workers: only visible once they restart.
    final, rows = run(service, getattr(fleet.commits, bad), restart_rq=bad == "unhealthy")
    row = rows[fleet.hosts[0].name]
    assert [c[0] for c in hooks.calls] == ["before", "after"]
    assert hooks.calls[-1][2] == "Rolled Back"
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert final.status is UpdateStatus.FAILURE
    assert on(fleet, fleet.hosts[0].name) == (fleet.commits.base, fleet.commits.base)
    assert all(state == "RUNNING" for state, _ in fleet.program_states(fleet.hosts[0]).values())
    assert "Failure:" in row.log and row.reason  # why it failed stays on the row


def test_slow_start_and_lying_exit_code_still_succeed(reset, tmp_path):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=1)
    final, rows = run(service, fleet.commits.slow)
    assert final.status is UpdateStatus.SUCCESS
    assert on(fleet, fleet.hosts[0].name) == (fleet.commits.slow, fleet.commits.slow)
    final, rows = run(service, fleet.commits.liar)
    row = rows[fleet.hosts[0].name]
    assert final.status is UpdateStatus.SUCCESS and "exited 1" in row.log
    assert on(fleet, fleet.hosts[0].name) == (fleet.commits.liar, fleet.commits.liar)


def test_rollback_that_fails_too_is_fatal_and_halts(reset, tmp_path):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=2)
    # The update restarts nothing (its install fails), the rollback crash-loops:
    # both are judged soon after their commands end.
    final, rows = run(
        service,
        fleet.commits.install_fail,
        rollback_to_specific=True,
        rollback_commit=fleet.commits.crash,
    )
    first, second = rows[fleet.hosts[0].name], rows[fleet.hosts[1].name]
    assert first.status is RowStatus.FATAL, first.log
    assert "rollback failed: agent:web" in first.reason and "nothing restarted" in first.reason
    assert second.status is RowStatus.PENDING  # halted: never started
    assert final.status is UpdateStatus.FAILURE and final.halted
    assert on(fleet, fleet.hosts[1].name) == (fleet.commits.base, fleet.commits.base)


def test_auto_rollback_off_means_no_rollback_and_a_halt(reset, tmp_path):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=2)
    final, rows = run(service, fleet.commits.unhealthy, auto_rollback=False, restart_rq=True)
    first, second = rows[fleet.hosts[0].name], rows[fleet.hosts[1].name]
    assert first.status is RowStatus.FAILURE and "Rolling" not in first.log
    assert second.status is RowStatus.PENDING
    assert final.status is UpdateStatus.FAILURE and final.halted
    # Nothing rolled it back: the failed commit is still what runs there.
    assert on(fleet, fleet.hosts[0].name) == (fleet.commits.unhealthy, fleet.commits.unhealthy)


@pytest.mark.parametrize("stop", [True, False])
def test_stop_after_single_rollback(reset, tmp_path, stop):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=2)
    final, rows = run(service, fleet.commits.install_fail, stop_after_single_rollback=stop)
    first, second = rows[fleet.hosts[0].name], rows[fleet.hosts[1].name]
    assert first.status is RowStatus.ROLLED_BACK
    assert second.status is (RowStatus.PENDING if stop else RowStatus.ROLLED_BACK)
    assert final.status is UpdateStatus.FAILURE
    for host in fleet.hosts[:2]:
        assert on(fleet, host.name) == (fleet.commits.base, fleet.commits.base)


def test_test_mode_pauses_after_exactly_n_then_resume_finishes(reset, tmp_path):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=3)
    final, rows = run(service, fleet.commits.good, test_mode=True, test_mode_count=1, lanes=2)
    assert final.status is UpdateStatus.PAUSED and final.paused_for_test_mode
    assert [r.status for r in rows.values()].count(RowStatus.SUCCESS) == 1
    assert [on(fleet, h.name)[1] for h in fleet.hosts[:3]].count(fleet.commits.good) == 1
    service.resume(final.name)
    final = service.drive(final.name, timeout=120)
    assert final.status is UpdateStatus.SUCCESS
    for host in fleet.hosts[:3]:
        assert on(fleet, host.name) == (fleet.commits.good, fleet.commits.good)


def test_pause_mid_rollout_finishes_the_row_in_flight(reset, tmp_path):
    fleet = reset
    paused = {}

    def listener(name, row, update):
        if row is not None and row.status is RowStatus.VERIFYING and not paused:
            paused["at"] = row.idx
            service.pause(name)

    service = service_for(fleet, tmp_path, hosts=3, listener=listener)
    update = service.create(fleet_update(fleet.commits.slow))
    service.build_plan(update.name)
    service.start(update.name)
    final = service.drive(update.name, timeout=120)
    rows = service.store.get_rows(update.name)
    assert final.status is UpdateStatus.PAUSED and paused["at"] == 1
    assert [r.status for r in rows] == [RowStatus.SUCCESS, RowStatus.PENDING, RowStatus.PENDING]
    assert not any(r.status.in_flight for r in rows)
    assert on(fleet, fleet.hosts[0].name)[1] == fleet.commits.slow
    assert on(fleet, fleet.hosts[1].name)[1] == fleet.commits.base
    service.resume(update.name)
    assert service.drive(update.name, timeout=120).status is UpdateStatus.SUCCESS
    for host in fleet.hosts[:3]:
        assert on(fleet, host.name)[1] == fleet.commits.slow


def test_a_row_claimed_before_pause_goes_back_to_pending_untouched(reset, tmp_path):
    fleet = reset
    claims = []
    service = service_for(fleet, tmp_path, hosts=2, launcher=lambda *a: claims.append(a))
    update = service.create(fleet_update(fleet.commits.good))
    service.build_plan(update.name)
    service.start(update.name)  # claims row 1; its job has not run yet
    assert [idx for _, idx, _ in claims] == [1]
    service.pause(update.name)
    name, idx, owner = claims[0]
    row = service.runner.run_row(name, idx, owner)
    assert (row.status, row.step, row.started_at, row.attempts) == (
        RowStatus.PENDING,
        Step.NONE,
        None,
        0,
    )
    stored = service.store.get_row(name, idx)
    assert stored == row and not stored.lease_owner
    assert on(fleet, fleet.hosts[0].name) == (fleet.commits.base, fleet.commits.base)
    assert len(claims) == 1  # the kick after it started nothing while Paused
    assert service.store.get_update(name).status is UpdateStatus.PAUSED


def test_precheck_fails_when_a_program_is_down_then_force_continue(reset, tmp_path):
    fleet = reset
    host = fleet.hosts[0]
    fleet.stop_program(host, "agent:worker-0")
    service = service_for(fleet, tmp_path, hosts=2)
    final, rows = run(service, fleet.commits.good)
    first = rows[host.name]
    assert first.status is RowStatus.FAILURE and "worker-0" in first.reason
    assert "nothing was changed" in first.reason
    assert fleet.reported_commit(host) == fleet.commits.base  # untouched
    assert final.status is UpdateStatus.PARTIAL_SUCCESS
    fleet.start_program(host, "agent:worker-0")
    service.force_continue(final.name)
    final = service.drive(final.name, timeout=120)
    assert final.status is UpdateStatus.SUCCESS
    assert on(fleet, host.name) == (fleet.commits.good, fleet.commits.good)
    # The failed attempt's log is kept, then the retry's own lines follow it.
    log = service.store.get_row(final.name, first.idx).log
    assert log.startswith(first.log)
    retried = log.index("force continue: retried after Failure: precheck")
    assert "Success" in log[retried:]


def test_lanes_run_servers_at_once(reset, tmp_path):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=4)
    final, rows = run(service, fleet.commits.good, lanes=3)
    assert final.status is UpdateStatus.SUCCESS
    spans = sorted((r.started_at, r.ended_at) for r in rows.values())
    peak = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert peak == 3
    for host in fleet.hosts:
        assert on(fleet, host.name) == (fleet.commits.good, fleet.commits.good)


def test_split_batches_run_in_parallel_to_the_end(reset, tmp_path):
    fleet = reset
    service = service_for(fleet, tmp_path, hosts=4)
    update = service.create(fleet_update(fleet.commits.good2))
    service.build_plan(update.name)
    names = service.split(update.name, 2)
    assert len(names) == 2
    assert [len(service.store.get_rows(n)) for n in names] == [2, 2]
    assert service.store.get_update(names[1]).split_from == update.name
    for name in names:
        service.start(name)
    for name in names:
        assert service.drive(name, timeout=120).status is UpdateStatus.SUCCESS
    spans = [(r.started_at, r.ended_at) for n in names for r in service.store.get_rows(n)]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2  # both ran at once
    for host in fleet.hosts:
        assert on(fleet, host.name) == (fleet.commits.good2, fleet.commits.good2)
