"""Repair against the REAL frappe/agent: a crash-looping pair of servers back to A in one update.

Same loopback servers and fixtures as tests/test_real_agent.py (supervisord
as root with a root-only socket, the agent's own user with sudo, an sshd
each), DEFAULT engine settings. Both hosts are put on the ``crash`` commit
(agent.web raises at import: web cycles STARTING <-> RUNNING, never FATAL);
ONE repair update back to A must plan both (their agent does not answer),
end Success on both, and leave the web running A with pids that stay put.
"""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import replace

import pytest

from agent_update.rollout.model import RowStatus, UpdateStatus
from agent_update.testing import procs
from agent_update.testing.harness import wait_for
from agent_update.testing.pytest_fixtures import print_figure as report
from agent_update.testing.realagent import RealAgentFleet, cleanup, locate, real_update

pytestmark = pytest.mark.real_agent

_TARBALL, _WHY = locate()
if _TARBALL is None:
    pytest.skip(f"real agent: {_WHY}", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip(
        "real agent: needs root (it creates users and sudoers files)", allow_module_level=True
    )

DRIVE_TIMEOUT = 420.0
STARTUP_TIMEOUT = 180.0
STABLE_FOR = 10.0  # seconds of unchanged pids: the crash commit's web dies within a few


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest):
    fleet = RealAgentFleet(2)
    try:
        fleet.start()
        yield fleet
    finally:
        started = {pid: cleanup.started_at(pid) for pid in fleet.pids()}
        fleet.stop()
    left = {
        pid for pid, at in started.items() if procs.is_alive(pid) and cleanup.started_at(pid) == at
    }
    assert not left, f"processes left after stop: {sorted(left)}"
    assert fleet.leftovers() == []


@pytest.fixture
def fleet(real: RealAgentFleet):
    real.reset()
    yield real
    real.reset()


def crash_loop(host, commit: str) -> None:
    """Check ``commit`` out and restart the agent group without waiting for health."""
    q = shlex.quote(commit)
    host.as_user(
        f"cd repo && git fetch -q upstream && git checkout -q --force {q} && "
        f"git reset -q --hard {q} && git clean -q -fd && cd .. && env/bin/agent setup supervisor"
    )
    supervisor = host.rpc().supervisor
    supervisor.stopProcessGroup("agent", True)
    supervisor.startProcessGroup("agent", False)
    seen: set[int] = set()

    def died() -> bool:
        pid = host.programs()["agent:web"][1]
        if pid:
            seen.add(pid)
        return len(seen) >= 2

    wait_for(died, 60, f"{host.name}'s web to crash and restart", interval=0.1)


def test_a_crash_looping_fleet_is_repaired_in_one_update(fleet, tmp_path, request):
    commits = fleet.commits
    for host in fleet.hosts:
        crash_loop(host, commits.crash)
    svc = fleet.service(tmp_path / "svc", "agent")
    for server in svc.store.list_servers()[len(fleet.hosts) :]:
        svc.store.save_server(replace(server, status="Archived"))
    update = svc.create(
        real_update(commits.a, repair=True, lanes=2, startup_timeout=STARTUP_TIMEOUT)
    )
    began = time.monotonic()
    planned = svc.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    for row in svc.store.get_rows(update.name):
        assert row.status is RowStatus.PENDING, row.reason
    svc.start(update.name)
    final = svc.drive(update.name, timeout=DRIVE_TIMEOUT)
    rows = {r.server: r for r in svc.store.get_rows(update.name)}
    assert final.status is UpdateStatus.SUCCESS, [(r.server, r.reason) for r in rows.values()]
    report(request, f"repair of 2 crash-looping servers: {time.monotonic() - began:.1f}s")

    before = {host.name: host.pids() for host in fleet.hosts}
    time.sleep(STABLE_FOR)  # an observation window: the crash loop changes the web pid in it
    for host in fleet.hosts:
        row = rows[host.name]
        assert row.status is RowStatus.SUCCESS and "repair precheck" in row.log, row.log
        assert host.pids() == before[host.name], f"{host.name}: pids changed"
        assert host.head() == commits.a
        assert host.version()["commit"] == commits.a
        assert host.running_commit() == commits.a
        states = host.programs()
        assert all(state == "RUNNING" for state, _ in states.values()), states
