"""Fast verdicts on the real loopback fleet, with a 600 s startup timeout.

A crash-looping web (it outlives supervisor's startsecs, then dies, so it
never reaches FATAL) and a command that restarts nothing must both be failed
soon after the command ends. The old code waited the whole startup timeout:
these tests bound each rollout well below it and print the time to verdict.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest

from agent_update.rollout.model import Row, RowStatus, UpdateStatus
from agent_update.testing.fleet import Fleet, FleetError
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update

pytestmark = pytest.mark.fleet

STARTUP_TIMEOUT = 600.0  # the default: a verdict must not wait for it
BOUND = 120.0  # seconds the whole rollout may take in these tests

# A command that moves the checkout and restarts nothing, then exits 0.
NO_RESTART_TEMPLATE = """\
set -e
cd $agent_dir/repo
git remote set-url upstream $repo_url
git fetch -q upstream
git checkout -q --force $commit
git reset -q --hard $commit
"""


class VerdictClock:
    """Listens to row changes: when the command ended and when the row failed."""

    def __init__(self) -> None:
        self.command_ended: float | None = None
        self.failed: float | None = None
        self.reason = ""

    def __call__(self, name: str, row: Row | None, update: object) -> None:
        if row is None:
            return
        if self.command_ended is None and row.command_ended_at is not None:
            self.command_ended = row.command_ended_at
        failing = row.status in (RowStatus.ROLLING_BACK, RowStatus.FAILURE, RowStatus.FATAL)
        if self.failed is None and failing and row.reason:
            self.failed, self.reason = time.time(), row.reason

    @property
    def seconds(self) -> float:
        assert self.command_ended is not None and self.failed is not None
        return self.failed - self.command_ended


class WebCrashLoop:
    """Makes web crash-loop on one host while ``commit`` is checked out, never FATAL.

    Like gunicorn failing at import: the process outlives supervisor's
    startsecs (1 s), so it counts as RUNNING, then dies before it serves;
    supervisor restarts it with a new pid each time. Used with the ``slow``
    commit (web listens only after 3 s), killed 1 s after it is RUNNING.
    """

    def __init__(self, fleet: Fleet, host: str, commit: str) -> None:
        self.fleet, self.host, self.commit = fleet, host, commit
        self.kills: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> WebCrashLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        first_seen: dict[int, float] = {}
        left: float | None = None  # when the checkout left the commit (seconds since boot)
        deadline = time.monotonic() + BOUND + 60  # bounded even if the test hangs
        while not self._stop.wait(0.05) and time.monotonic() < deadline:
            with contextlib.suppress(FleetError, OSError, RuntimeError):
                on_commit = self.fleet.checked_out_commit(self.host) == self.commit
                if not on_commit and left is None and first_seen:
                    left = _since_boot()
                state, pid = self.fleet.program_states(self.host)["agent:web"]
                if state != "RUNNING" or pid is None:
                    continue
                # A process started from the crashing checkout keeps crashing after it moved.
                if not on_commit and (left is None or _started(pid) >= left):
                    continue
                seen = first_seen.setdefault(pid, time.monotonic())
                if time.monotonic() - seen >= 1.0:
                    os.kill(pid, signal.SIGKILL)  # a fleet process this test started
                    self.kills.append(pid)


def _since_boot() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _started(pid: int) -> float:
    """When ``pid`` started, in seconds since boot (field 22 of /proc/<pid>/stat)."""
    fields_after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields_after_name[19]) / os.sysconf("SC_CLK_TCK")


def _crash_loop_commit(fleet: Fleet) -> str | None:
    """The fleet's own crash-loop commit when it has one (never FATAL)."""
    for field in fields(fleet.commits):
        if "loop" in field.name:
            return getattr(fleet.commits, field.name)
    return None


@pytest.fixture
def one_host(fleet, tmp_path):
    fleet.reset()
    host = fleet.hosts[0].name
    yield fleet, host
    fleet.reset()


def _service(fleet: Fleet, tmp_path: Path, host: str, clock: VerdictClock, **settings):
    service = fleet_service(
        fleet,
        tmp_path / "svc",
        settings=fleet_settings(fleet, tmp_path, **settings),
        listener=clock,
    )
    for server in service.store.list_servers():
        if server.name != host:
            server.status = "Archived"
            service.store.save_server(server)
    return service


def _rollout(service, commit: str, **config):
    update = service.create(
        fleet_update(commit, startup_timeout=STARTUP_TIMEOUT, command_timeout=1800, **config)
    )
    planned = service.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    began = time.monotonic()
    service.start(update.name)
    final = service.drive(update.name, timeout=BOUND)
    (row,) = service.store.get_rows(update.name)
    return final, row, time.monotonic() - began


def test_a_crash_loop_that_never_reaches_fatal_is_failed_fast_and_rolled_back(one_host, tmp_path):
    fleet, host = one_host
    clock = VerdictClock()
    service = _service(fleet, tmp_path, host, clock)
    own = _crash_loop_commit(fleet)
    target = own or fleet.commits.slow
    with contextlib.ExitStack() as stack:
        if own is None:
            stack.enter_context(WebCrashLoop(fleet, host, target))
        final, row, took = _rollout(service, target)
    print(
        f"\ncrash loop: verdict {clock.seconds:.1f} s after the command ended "
        f"(startup timeout {STARTUP_TIMEOUT:.0f} s); rollout {took:.1f} s; {clock.reason}"
    )
    assert row.status is RowStatus.ROLLED_BACK, row.log
    assert "agent:web crash-looping" in row.reason
    assert clock.seconds < STARTUP_TIMEOUT
    assert final.status is UpdateStatus.FAILURE
    assert fleet.checked_out_commit(host) == fleet.commits.base
    assert fleet.running_commit(host) == fleet.commits.base  # the old code runs again
    states = fleet.program_states(host)
    assert all(state == "RUNNING" for state, _ in states.values()), states


def test_a_command_that_restarts_nothing_is_failed_fast(one_host, tmp_path):
    fleet, host = one_host
    clock = VerdictClock()
    service = _service(fleet, tmp_path, host, clock, update_command_template=NO_RESTART_TEMPLATE)
    web_before = fleet.program_states(host)["agent:web"]
    final, row, took = _rollout(service, fleet.commits.good, auto_rollback=False)
    print(
        f"\nnothing restarted: verdict {clock.seconds:.1f} s after the command ended "
        f"(startup timeout {STARTUP_TIMEOUT:.0f} s); rollout {took:.1f} s; {clock.reason}"
    )
    assert row.status is RowStatus.FAILURE, row.log
    assert row.reason.startswith("nothing restarted after the command ended: agent:web still runs")
    assert str(web_before[1]) in row.reason
    assert final.status is UpdateStatus.FAILURE
    # What the host really has: the checkout moved, the old code still runs.
    assert fleet.checked_out_commit(host) == fleet.commits.good
    assert fleet.running_commit(host) == fleet.commits.base
    assert fleet.program_states(host)["agent:web"] == web_before
