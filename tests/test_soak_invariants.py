"""The soak's invariants: each one quiet on a healthy picture and catching a made-up violation.

Pure functions over made-up observations (no fleet, no store); the last two
tests run real processes to show the observer's command scan sees them.
"""

from __future__ import annotations

import subprocess
import time
from random import Random

from agent_update.remote import guard
from agent_update.rollout.model import Row, RowStatus, Step, Update, UpdateStatus
from agent_update.testing.soak import invariants as inv
from agent_update.testing.soak.faults import COMMIT_FAULTS, DESK_FAULTS, FaultKind, Scheduler
from agent_update.testing.soak.observer import CHECKOUT, scan_commands

A, B, C = "a" * 40, "b" * 40, "c" * 40
NOW = 1_000_000.0


def update(name: str = "AU-1", commit: str = A, **changes) -> Update:
    changes.setdefault("status", UpdateStatus.RUNNING)
    return Update(name=name, commit=commit, **changes)


def row(idx: int = 1, server: str = "host2", status=RowStatus.PENDING, **changes) -> Row:
    return Row(idx=idx, server=server, status=status, **changes)


# ------------------------------------------------------------- two commands
def test_one_command_per_host_is_fine_and_two_on_one_host_are_caught():
    assert inv.concurrent_commands([inv.Command("host2", 10, A), inv.Command("host3", 11, B)]) == []
    found = inv.concurrent_commands([inv.Command("host2", 10, A), inv.Command("host2", 12, B)])
    assert [(v.invariant, v.host) for v in found] == [("two-commands", "host2")]
    assert "pid 10" in found[0].detail and "pid 12" in found[0].detail


def test_the_checkout_pattern_finds_the_commit_in_a_rendered_command():
    text = "timeout -k 10 40 sh -c set -e\ncd /x/agent/repo\ngit checkout --force " + A
    assert CHECKOUT.search(text).group(1) == A
    assert CHECKOUT.search(text.replace(A, f"'{A}'")).group(1) == A


# ------------------------------------------------------------ two rollouts
def leased(**changes) -> Row:
    return row(lease_owner="vm:1:x", lease_expires=NOW + 5, **changes)


def test_two_updates_working_on_one_server_are_caught():
    rows = {
        "AU-1": [leased(status=RowStatus.RUNNING, step=Step.COMMAND_SENT)],
        "AU-2": [leased(status=RowStatus.VERIFYING, step=Step.VERIFY)],
    }
    found = inv.one_rollout_per_server(rows, NOW)
    assert [(v.invariant, v.host) for v in found] == [("two-rollouts", "host2")]


def test_a_row_waiting_for_its_server_or_with_an_expired_lease_does_not_count():
    waiting = leased(status=RowStatus.RUNNING, log="command sent\nwaiting: host2 busy in AU-2")
    expired = row(status=RowStatus.RUNNING, lease_owner="vm:1:x", lease_expires=NOW - 1)
    working = leased(status=RowStatus.VERIFYING)
    assert inv.one_rollout_per_server({"AU-1": [waiting], "AU-2": [working]}, NOW) == []
    assert inv.one_rollout_per_server({"AU-1": [expired], "AU-2": [working]}, NOW) == []


# ---------------------------------------------------------- row vs host
def test_the_last_row_that_ended_is_judged_and_a_row_in_flight_defers_judgement():
    first = (update("AU-1", A), row(status=RowStatus.SUCCESS, ended_at=10.0))
    second = (update("AU-2", B), row(status=RowStatus.ROLLED_BACK, ended_at=20.0))
    skipped = (update("AU-3", C), row(status=RowStatus.SKIPPED, ended_at=30.0))
    assert inv.last_touch([first, second, skipped]) == second
    flying = (update("AU-4", C), leased(status=RowStatus.RUNNING))
    claimed = (update("AU-4", C), leased(status=RowStatus.PENDING, step=Step.PRECHECK))
    assert inv.last_touch([first, flying]) is None
    assert inv.last_touch([first, claimed]) is None


def test_a_success_row_whose_host_runs_another_commit_is_caught():
    done = row(status=RowStatus.SUCCESS, rollback_commit=B)
    assert inv.host_matches_row(update(commit=A), done, inv.HostView(A, A)) is None
    stale_web = inv.host_matches_row(update(commit=A), done, inv.HostView(A, B))
    assert stale_web is not None and stale_web.invariant == "row-vs-host"
    assert inv.host_matches_row(update(commit=A), done, inv.HostView(B, A)) is not None


def test_a_rolled_back_row_must_leave_its_host_on_the_rollback_commit():
    back = row(status=RowStatus.ROLLED_BACK, rollback_commit=B)
    assert inv.host_matches_row(update(commit=A), back, inv.HostView(B, B)) is None
    assert inv.host_matches_row(update(commit=A), back, inv.HostView(A, A)) is not None


def test_a_failed_row_promises_no_commit():
    failed = row(status=RowStatus.FAILURE, rollback_commit=B)
    assert inv.expected_commit(update(), failed) is None
    assert inv.host_matches_row(update(commit=A), failed, inv.HostView(C, C)) is None


# ------------------------------------------------------------------ leases
def test_a_lease_left_by_a_dead_runner_while_a_live_runner_looks_on_is_caught():
    left = row(status=RowStatus.RUNNING, lease_owner="vm:9:dead", lease_expires=NOW - 60)
    runner = inv.Span("AU-1", NOW - 100, None)
    found = inv.stale_leases({"AU-1": [left]}, [runner], NOW, grace=24)
    assert [(v.invariant, v.update) for v in found] == [("stale-lease", "AU-1")]
    tick = inv.Span("", NOW - 30, None)  # started after the lease expired: its pass saw it
    assert inv.stale_leases({"AU-1": [left]}, [tick], NOW, grace=24)


def test_a_tick_started_before_the_lease_expired_is_not_expected_to_take_it():
    """Its one pass came too early (soak seed 14295: a tick alive 80 s, started before)."""
    left = row(status=RowStatus.RUNNING, lease_owner="vm:9:dead", lease_expires=NOW - 60)
    early_tick = inv.Span("", NOW - 100, None)
    assert inv.stale_leases({"AU-1": [left]}, [early_tick], NOW, grace=24) == []


def test_no_stale_lease_without_a_live_runner_or_before_the_grace():
    left = row(status=RowStatus.RUNNING, lease_owner="vm:9:dead", lease_expires=NOW - 60)
    dead = inv.Span("AU-1", NOW - 100, NOW - 50)
    other = inv.Span("AU-2", NOW - 100, None)
    fresh_runner = inv.Span("AU-1", NOW - 5, None)
    assert inv.stale_leases({"AU-1": [left]}, [dead, other, fresh_runner], NOW, grace=24) == []
    recent = left.copy(lease_expires=NOW - 10)
    live = inv.Span("AU-1", NOW - 100, None)
    assert inv.stale_leases({"AU-1": [recent]}, [live], NOW, grace=24) == []
    ended = left.copy(status=RowStatus.SUCCESS)
    assert inv.stale_leases({"AU-1": [ended]}, [live], NOW, grace=24) == []


# ---------------------------------------------------------------- settled
def test_a_rollout_still_running_past_its_deadline_and_grace_is_caught():
    late = update(deadline_at=NOW - 100)
    assert inv.settled(late, [], NOW, grace=200, paused_by_operator=False) is None
    found = inv.settled(late, [], NOW, grace=50, paused_by_operator=False)
    assert (
        found is not None and found.invariant == "settled" and "past its deadline" in found.detail
    )


def test_an_operator_setting_it_going_after_the_deadline_gives_it_grace_from_then():
    """Paused past its deadline, then aborted with rollback: the rollbacks run (seed 14295)."""
    late = update(deadline_at=NOW - 2000)
    assert inv.settled(late, [], NOW, grace=50, paused_by_operator=False) is not None
    assert inv.settled(late, [], NOW, 50, False, acted_at=NOW - 20) is None
    found = inv.settled(late, [], NOW, 50, False, acted_at=NOW - 60)
    assert found is not None and "2000s past its deadline" in found.detail


def test_paused_past_the_deadline_needs_a_reason():
    paused = update(deadline_at=NOW - 100, status=UpdateStatus.PAUSED)
    assert inv.settled(paused, [], NOW, grace=50, paused_by_operator=False) is not None
    assert inv.settled(paused, [], NOW, grace=50, paused_by_operator=True) is None
    gate = paused.copy(pause_reason="wave 1: 50% succeeded, below 95%")
    assert inv.settled(gate, [], NOW, grace=50, paused_by_operator=False) is None


def test_a_final_rollout_with_an_unexplained_row_or_a_row_in_flight_is_caught():
    final = update(status=UpdateStatus.PARTIAL_SUCCESS, halt_reason="budget")
    good = [row(status=RowStatus.SUCCESS), row(2, status=RowStatus.ROLLED_BACK, reason="crash")]
    assert inv.settled(final, good, NOW, grace=0, paused_by_operator=False) is None
    silent = [row(status=RowStatus.SUCCESS), row(2, status=RowStatus.ROLLED_BACK)]
    assert "without a reason" in inv.settled(final, silent, NOW, 0, False).detail
    flying = [row(status=RowStatus.SUCCESS), row(2, status=RowStatus.VERIFYING)]
    assert "still in flight" in inv.settled(final, flying, NOW, 0, False).detail


# --------------------------------------------------------------- untouched
def test_a_host_that_saw_the_rollouts_commit_though_its_row_never_started_is_caught():
    rows = [row(1, "host2", RowStatus.SUCCESS, started_at=5.0), row(2, "host3")]
    seen = {"host2": {A}, "host3": {B}}
    assert inv.untouched(update(commit=A), rows, {1}, seen) == []
    seen["host3"].add(A)
    found = inv.untouched(update(commit=A), rows, {1}, seen)
    assert [(v.invariant, v.host) for v in found] == [("untouched", "host3")]


def test_a_row_seen_started_before_a_force_continue_reset_it_is_not_untouched():
    reset = row(2, "host3")  # Pending again, timers cleared
    assert inv.untouched(update(commit=A), [reset], {2}, {"host3": {A}}) == []


# ------------------------------------------------------------------ faults
def test_the_scheduler_replays_the_same_draws_from_the_same_seed():
    def draws(seed: int) -> list[object]:
        scheduler = Scheduler(seed)
        hosts = [f"host{i}" for i in range(2, 12)]
        return [
            (scheduler.kind(), scheduler.host(hosts, ["host3"]), scheduler.commit_kind())
            for _ in range(50)
        ]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    kinds = {kind for kind, _, _ in draws(7) + draws(8) + draws(9)}
    assert FaultKind.RUNNER_KILL in kinds and FaultKind.SSHD_FREEZE in kinds


def test_the_desks_faults_are_drawn_only_with_its_door_open():
    """A seed run without --desk draws exactly what it drew before the desk's faults."""
    plain = Scheduler(11)
    without = [plain.kind() for _ in range(300)]
    assert not set(without) & set(DESK_FAULTS)
    desk = Scheduler(11)
    drawn = {desk.kind(desk=True) for _ in range(300)}
    assert set(DESK_FAULTS) <= drawn


def test_every_bad_commit_kind_is_drawn():
    scheduler = Scheduler(3)
    drawn = {scheduler.commit_kind() for _ in range(400)}
    assert drawn == {"good", *COMMIT_FAULTS}
    assert Random(3).random() == Scheduler(3).rng.random()


# ------------------------------------------- the command scan, on real processes
def _guarded(agent_dir: str, body: str) -> subprocess.Popen:
    """The real guard's wrapper around ``body``, stdin kept open as SSH keeps it."""
    import getpass

    me = getpass.getuser()
    line = guard.guarded(body, agent_dir=agent_dir, time_limit=30, run_as=guard.RunAs(me, me))
    return subprocess.Popen(
        ["sh", "-c", line], stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
    )


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.stdin.close()  # the session ends: the guard stops its command
        proc.wait(20)


def test_the_scan_sees_commands_under_the_guard_and_never_two_when_the_lock_holds(tmp_path):
    agent_dir = str(tmp_path / "agent")
    (tmp_path / "agent" / "repo").mkdir(parents=True)
    body = f"cd {agent_dir}/repo && : git checkout --force {A} && sleep 3"
    first, second = _guarded(agent_dir, body), _guarded(agent_dir, body)
    try:
        seen, pids = [], set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(pids) < 2:
            found = scan_commands({"host2": agent_dir})
            seen.append(found)
            pids |= {c.pid for c in found}
            time.sleep(0.1)
    finally:
        _stop(first, second)
    assert len(pids) == 2, "both commands ran, one after the other"
    assert all(c.commit == A and c.host == "host2" for found in seen for c in found)
    assert all(inv.concurrent_commands(found) == [] for found in seen)


def test_the_scan_catches_two_commands_that_skip_the_lock(tmp_path):
    agent_dir = str(tmp_path / "agent")
    body = f"cd {agent_dir}/repo 2>/dev/null; : git checkout --force {A}; sleep 5"
    rogue = [
        subprocess.Popen(["timeout", "10", "sh", "-c", body], start_new_session=True)
        for _ in range(2)
    ]
    try:
        found: list[inv.Command] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(found) < 2:
            found = scan_commands({"host2": agent_dir})
            time.sleep(0.05)
    finally:
        for proc in rogue:
            proc.kill()
            proc.wait(5)
    assert [v.invariant for v in inv.concurrent_commands(found)] == ["two-commands"]


# ------------------------------------------------------ restarts explained
def test_a_restart_with_no_row_at_work_and_no_fault_is_caught():
    restart = inv.Restart("host3", "agent:web", 100, 200, after=NOW - 1, before=NOW)
    found = inv.unexplained_restarts([restart], {}, settle=6, never_reached={"host3": ["AU-7"]})
    assert [(v.invariant, v.host) for v in found] == [("untouched", "host3")]
    assert "AU-7" in found[0].detail and "pid 100 to 200" in found[0].detail
    long_ago = {"host3": [(NOW - 100, NOW - 50)], "host2": [(NOW - 2, NOW)]}
    assert inv.unexplained_restarts([restart], long_ago, 6, {}) != []


def test_a_restart_during_a_row_a_fault_or_just_after_is_explained():
    restart = inv.Restart("host3", "agent:web", 100, None, after=NOW - 1, before=NOW)
    for window in [(NOW - 30, float("inf")), (NOW - 30, NOW - 4), (NOW + 3, NOW + 3)]:
        assert inv.unexplained_restarts([restart], {"host3": [window]}, 6, {}) == [], window
