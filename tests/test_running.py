"""Build Plan skips a server only when its programs run the checkout on the target.

The old code skipped on ``/version`` alone, which reports the checkout: a
server whose checkout moved without a restart was called "already on the
target" while its programs still ran the old code.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from agent_update.remote import runtime
from agent_update.rollout import commands
from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Row, RowStatus, Update, UpdateStatus
from agent_update.rollout.running import RunningObs, stale_reason
from agent_update.testing.harness import fleet_service, fleet_update

OLD, NEW = "a" * 40, "b" * 40
REFLOG = f"{OLD} {NEW} Frappe <frappe@example.com> 1700000500 +0000\tcheckout: moving from a to b"
STATUS = """\
agent:redis                      RUNNING   pid 40, uptime 10 days, 1:00:00
agent:web                        RUNNING   pid 41, uptime {web}
agent:worker-0                   RUNNING   pid 42, uptime 1 day, 0:00:07
"""


def output(web_uptime: int, now: int = 1700000600, head: int = 1700000400) -> str:
    return (
        f"@agent-update head {head}\n@agent-update reflog {REFLOG}\n"
        + STATUS.format(web=timedelta(seconds=web_uptime))
        + f"@agent-update now {now}\n"
    )


def test_parse_reads_clock_newest_head_move_and_uptimes():
    seen = runtime.parse(output(30))
    assert seen.now == 1700000600
    assert seen.head_moved_at == 1700000500  # the reflog entry is newer than HEAD's mtime
    assert seen.programs["agent:web"] == ("RUNNING", 30.0)
    assert seen.programs["agent:worker-0"] == ("RUNNING", 86407.0)
    assert seen.programs["agent:redis"] == ("RUNNING", 10 * 86400 + 3600.0)
    assert seen.error == ""


def test_parse_without_reflog_or_status():
    seen = runtime.parse(
        "@agent-update head \n@agent-update reflog \n"
        "error: <class 'PermissionError'>, [Errno 13] Permission denied: file: xmlrpc.py\n"
        "@agent-update now 1700000600\n"
    )
    assert seen.head_moved_at is None and seen.programs == {}
    assert "Permission denied" in seen.error
    assert "could not read the agent's programs" in stale_reason(seen)


def test_the_command_quotes_the_agent_dir_and_refuses_a_hostile_one():
    text = runtime.command("/home/frappe/agent", "sudo supervisorctl status")
    assert "/home/frappe/agent/repo/.git/HEAD" in text and "sudo supervisorctl status" in text
    with pytest.raises(ValidationError):
        runtime.command("/home/x; rm -rf /", "supervisorctl status")


@pytest.mark.parametrize(
    ("web_uptime", "expected"),
    [
        (100, ""),  # started in the second the checkout moved: counts as after
        (50, ""),
        (101, "agent:web started before it (up 101 s, checkout moved 100 s ago)"),
        (150, "agent:web started before it"),
    ],
)
def test_stale_reason_looks_at_the_programs_the_update_restarts(web_uptime, expected):
    seen = runtime.parse(output(web_uptime))
    reason = stale_reason(seen, ["agent:web"])
    assert (expected in reason) if expected else reason == "", reason
    # Without a restart set every program counts: redis started 10 days ago.
    assert "agent:redis started before it" in stale_reason(seen)


def test_a_program_down_or_no_clock_is_never_skipped():
    down = RunningObs(now=10, head_moved_at=5, programs={"agent:web": ("STOPPED", None)})
    assert "agent:web is STOPPED" in stale_reason(down)
    assert "when the checkout last moved" in stale_reason(
        RunningObs(now=10, programs={"agent:web": ("RUNNING", 1.0)})
    )


def _plan(outcome: PlanOutcome) -> Row:
    update = Update(name="U", commit=NEW, status=UpdateStatus.PLANNING)
    _, (row,) = commands.apply_plan(update, [Row(idx=1, server="s1")], {1: outcome})
    return row


def test_apply_plan_skips_only_what_runs_the_target():
    fresh = RunningObs(now=100, head_moved_at=50, programs={"agent:web": ("RUNNING", 40.0)})
    stale = replace(fresh, programs={"agent:web": ("RUNNING", 70.0)})
    assert _plan(PlanOutcome(commit=NEW, running=fresh)).status is RowStatus.SKIPPED
    row = _plan(PlanOutcome(commit=NEW, running=stale))
    assert row.status is RowStatus.PENDING
    assert row.reason.startswith("checkout on target but agent:web started before it")
    assert row.reason in row.log
    other = _plan(PlanOutcome(commit=OLD, running=stale))
    assert other.status is RowStatus.PENDING and other.reason == ""


# ------------------------------------------------------------------ the fleet


@pytest.mark.fleet
def test_a_checkout_on_target_running_old_code_is_planned_then_updated(fleet, tmp_path: Path):
    fleet.reset()
    host = fleet.hosts[0]
    try:
        service = fleet_service(fleet, tmp_path / "svc")
        for server in service.store.list_servers():
            if server.name != host.name:
                service.store.save_server(replace(server, status="Archived"))
        # What a failed update with auto rollback off leaves: checkout moved, no restart.
        repo = shlex.quote(f"{host.agent_dir}/repo")
        moved = fleet.ssh(host, f"cd {repo} && git checkout -q --force {fleet.commits.good}")
        assert moved.returncode == 0, moved.stderr  # as the agent's user, over SSH
        assert fleet.reported_commit(host) == fleet.commits.good
        assert fleet.running_commit(host) == fleet.commits.base
        update = service.create(fleet_update(fleet.commits.good))
        planned = service.build_plan(update.name)
        (row,) = service.store.get_rows(update.name)
        assert planned.status is UpdateStatus.PENDING
        assert row.status is RowStatus.PENDING, row.reason
        assert row.reason.startswith("checkout on target but agent:web started before it")
        service.start(update.name)
        final = service.drive(update.name, timeout=120)
        assert final.status is UpdateStatus.SUCCESS
        assert (
            fleet.running_commit(host) == fleet.commits.good
        )  # what runs, not what is checked out
        # Now the programs started after the checkout: a new plan skips the server.
        again = service.create(fleet_update(fleet.commits.good))
        service.build_plan(again.name)
        (skipped,) = service.store.get_rows(again.name)
        assert skipped.status is RowStatus.SKIPPED, skipped.reason
    finally:
        fleet.reset()
