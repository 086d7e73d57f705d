"""Repair, without servers: the plan of a broken agent, the repair precheck and command."""

from __future__ import annotations

import json
import shlex

import pytest

from agent_update.remote.script import render_update_command, supervisorctl_of
from agent_update.rollout import commands, machine
from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import AgentStatus, Row, RowStatus, Step, Update, UpdateStatus
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs

OLD, NEW, BACK = "a" * 40, "b" * 40, "c" * 40
BROKEN = {
    "agent:redis": ("RUNNING", 9),
    "agent:web": ("BACKOFF", None),
    "agent:worker-0": ("STOPPED", None),
}


def upd(**kw) -> Update:
    base = dict(
        name="U",
        repo="/r",
        branch="master",
        commit=NEW,
        status=UpdateStatus.RUNNING,
        startup_timeout=10,
        command_timeout=20,
        failed_command_grace=2,
    )
    base.update(kw)
    return Update(**base)


def draft(n: int) -> list[Row]:
    return [Row(idx=i, server=f"s{i}") for i in range(1, n + 1)]


# ------------------------------------------------------------------ Build Plan


def test_an_unknown_commit_is_planned_pending_with_the_reason() -> None:
    outcomes = {
        1: PlanOutcome(unknown="agent: http://h1/version: Connection reset by peer"),
        2: PlanOutcome(commit=OLD),
    }
    planned, rows = commands.apply_plan(upd(status=UpdateStatus.PLANNING), draft(2), outcomes)
    assert planned.status is UpdateStatus.PENDING and not planned.why_stuck
    broken, fine = rows
    assert broken.status is RowStatus.PENDING
    assert broken.reason == (
        "current commit unknown: agent: http://h1/version: Connection reset by peer"
    )
    assert broken.current_commit == "" and broken.rollback_commit == ""
    assert broken.agent_status is AgentStatus.INACTIVE and broken.reason in broken.log
    assert fine.status is RowStatus.PENDING and fine.current_commit == OLD  # rollback: at precheck


def test_an_unknown_commit_keeps_a_specific_rollback_commit() -> None:
    update = upd(rollback_to_specific=True, rollback_commit=BACK)
    _, (row,) = commands.apply_plan(update, draft(1), {1: PlanOutcome(unknown="ssh: refused")})
    assert row.status is RowStatus.PENDING and row.rollback_commit == BACK


def test_configuration_errors_still_hold_the_plan() -> None:
    outcomes = {1: PlanOutcome(error="ssh: host key mismatch"), 2: PlanOutcome(unknown="x")}
    planned, rows = commands.apply_plan(upd(), draft(2), outcomes)
    assert (
        planned.status is UpdateStatus.DRAFT and "s1: ssh: host key mismatch" in planned.why_stuck
    )
    assert [r.status for r in rows] == [RowStatus.DRAFT, RowStatus.PENDING]


# -------------------------------------------------------------------- precheck


def claimed() -> Row:
    return machine.claim(Row(idx=1, server="s1", status=RowStatus.PENDING))


def test_a_non_repair_precheck_still_refuses_a_down_program() -> None:
    row = machine.after_precheck(upd(), claimed(), PrecheckObs(programs=BROKEN, commit=OLD), 5)
    assert row.status is RowStatus.FAILURE
    assert row.reason == "precheck: agent:web is BACKOFF; nothing was changed"


def test_a_non_repair_precheck_still_refuses_a_silent_agent() -> None:
    running = {name: ("RUNNING", i) for i, name in enumerate(BROKEN, start=1)}
    obs = PrecheckObs(programs=running, agent_error="http://h/version: Connection refused")
    row = machine.after_precheck(upd(), claimed(), obs, 5)
    assert row.status is RowStatus.FAILURE
    assert row.reason == "precheck failed: http://h/version: Connection refused"


def test_a_repair_precheck_accepts_down_programs_and_keeps_the_running_pids() -> None:
    obs = PrecheckObs(programs=BROKEN, agent_error="http://h/version: Connection refused")
    row = machine.after_precheck(upd(repair=True), claimed(), obs, 5)
    assert row.status is RowStatus.RUNNING and row.step is Step.COMMAND
    assert json.loads(row.pids_before) == {"agent:redis": 9}
    assert "repair precheck: 1 of 3 programs running" in row.log
    assert "agent:web BACKOFF" in row.log and "Connection refused" in row.log


def test_a_repair_precheck_still_needs_ssh_and_programs() -> None:
    update = upd(repair=True)
    row = machine.after_precheck(update, claimed(), PrecheckObs(error="ssh: refused"), 5)
    assert row.status is RowStatus.FAILURE and "ssh: refused" in row.reason
    row = machine.after_precheck(update, claimed(), PrecheckObs(programs={}), 5)
    assert row.status is RowStatus.FAILURE and "no agent program" in row.reason


def test_a_repair_checks_every_program_restarted() -> None:
    assert machine.restart_set(upd(repair=True), BROKEN) == sorted(BROKEN)
    assert machine.restart_set(upd(), BROKEN) == ["agent:web"]


def test_a_failed_repair_rolls_back_only_to_a_specific_commit() -> None:
    def failed(update: Update) -> Row:
        row = Row(idx=1, server="s1", status=RowStatus.PENDING, rollback_commit=OLD)
        row = machine.after_precheck(update, machine.claim(row), PrecheckObs(programs=BROKEN), 0)
        row = machine.after_command(update, machine.command_sent(update, row, 0), CommandObs(0), 0)
        return machine.after_probe(update, row, ProbeObs(pong=False), 99)

    assert failed(upd(repair=True)).status is RowStatus.FAILURE  # OLD was the broken commit
    chosen = failed(upd(repair=True, rollback_to_specific=True, rollback_commit=BACK))
    assert chosen.status is RowStatus.ROLLING_BACK


# --------------------------------------------------------------------- command

ARGS = dict(
    agent_dir="/home/frappe/agent",
    repo_url="https://example.com/agent.git",
    commit=NEW,
    restart_web=True,
    restart_rq=False,
    restart_redis=False,
)


def test_a_repair_restarts_the_whole_agent_group_with_the_status_commands_ctl() -> None:
    plain = render_update_command(**ARGS)
    repair = render_update_command(
        **ARGS, repair=True, status_command="sudo -n supervisorctl -c '/etc/a b.conf' status"
    )
    assert repair.startswith(plain)
    last = repair.strip().splitlines()[-1]
    ctl = ["sudo", "-n", "supervisorctl", "-c", "/etc/a b.conf"]
    assert shlex.split(last) == [*ctl, "restart", "agent:"]
    assert "restart" not in plain.replace("--restart-", "")


def test_a_repair_with_a_custom_template_restarts_too() -> None:
    text = render_update_command(**ARGS, template="cd $agent_dir && true", repair=True)
    assert text.strip().endswith("sudo -n supervisorctl restart agent:")


@pytest.mark.parametrize(
    "status_command",
    ["supervisorctl status | grep agent", "systemctl status agent", "status", "sudo 'x"],
)
def test_a_repair_needs_a_supervisorctl_status_command(status_command: str) -> None:
    with pytest.raises(ValidationError) as caught:
        supervisorctl_of(status_command)
    assert caught.value.field == "status_command"
