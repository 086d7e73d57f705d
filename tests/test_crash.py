"""A runner killed with SIGKILL mid-row: a new runner resumes and finishes right."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from agent_update.rollout.model import RowStatus, Step, UpdateStatus
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update, wait_for

pytestmark = pytest.mark.fleet


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (RowStatus.RUNNING, Step.COMMAND_SENT),  # mid-command
        (RowStatus.VERIFYING, Step.VERIFY),  # mid-verification
    ],
)
def test_sigkill_mid_row_then_a_new_runner_resumes(fleet, tmp_path, status, step):
    fleet.reset()
    settings = fleet_settings(fleet, tmp_path, lease_ttl=3.0)
    service = fleet_service(fleet, tmp_path, settings=settings)
    update = service.create(fleet_update(fleet.commits.slow))
    service.build_plan(update.name)
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(asdict(settings)))
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_update.cli",
            "--db",
            str(tmp_path / "store.db"),
            "--settings",
            str(settings_file),
            "run",
            update.name,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    store = service.store
    try:
        wait_for(
            lambda: any(r.status is status and r.step is step for r in store.get_rows(update.name)),
            60,
            f"a row in {status.value}/{step.value}",
        )
    finally:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(10)
    victim = next(r for r in store.get_rows(update.name) if r.status.in_flight)
    assert victim.lease_owner  # left behind by the dead runner
    assert store.get_update(update.name).status is UpdateStatus.RUNNING

    # A healthy lease is respected: the watchdog does nothing yet.
    heir = Service(SqliteStore(tmp_path / "store.db"), settings)
    if victim.lease_expires > time.time() + 0.5:
        assert heir.tick() == []
    wait_for(lambda: time.time() > victim.lease_expires, 30, "the lease to expire")
    assert heir.tick() == [update.name]
    final = heir.drive(update.name, timeout=120)

    rows = store.get_rows(update.name)
    assert final.status is UpdateStatus.SUCCESS, [(r.server, r.status, r.reason) for r in rows]
    for row in rows:
        assert row.status is RowStatus.SUCCESS and not row.lease_owner
        host = fleet.host(row.server)
        assert fleet.reported_commit(host) == fleet.commits.slow
        assert fleet.running_commit(host) == fleet.commits.slow
    resumed = store.get_row(update.name, victim.idx)
    assert "resumed" in resumed.log or step is Step.VERIFY
    assert resumed.attempts == 1  # one attempt, never restarted blindly from scratch
