"""One rollout through the desk while its queue and database restart and a worker dies.

``python -m agent_update.testing.desk_check --bench BENCH`` (the bench's own
Python, this checkout first on PYTHONPATH; ``scripts/frappe-bench.sh`` runs
it after the plain bench's tests): a loopback fleet of 3, a site of its own
on a private MariaDB and Redis (testing/desk_site.py) with 3 RQ workers, one
Agent Rollout of a good commit at 1 lane, started as the desk starts it.
While the first row runs: the worker running a job is killed (SIGKILL, and
the job's work horse with it) and another started, the site's Redis
restarts (the jobs queued in it are lost), then its MariaDB restarts; the watchdog tick
runs every few seconds, as the scheduler would. It must end Success with
every host running the new commit (asked of the host, not the store), and no
lease or hold left. These are the desk-side faults the soak is to draw at
random (docs/soak.md); the last line is ``desk check: ok …`` or says what failed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_update.rollout.model import RowStatus, UpdateStatus
from agent_update.testing.desk_site import DeskClient, DeskSite, DeskSiteError, cached_bench
from agent_update.testing.fleet import Fleet

HOSTS, LANES, WORKERS = 3, 1, 3  # one lane: later rows are still to run at each fault
LEASE_TTL = 8


def say(text: str) -> None:
    print(f"desk check: {text}", flush=True)


def settings_of(fleet: Fleet) -> dict[str, Any]:
    return {
        "default_repo": fleet.upstream_url,
        "default_branch": fleet.branch,
        "ssh_private_key": fleet.client_key,
        "known_hosts": fleet.known_hosts,
        "poll_interval": 0.2,
        "probe_timeout": 3,
        "connect_timeout": 5,
        "lease_ttl": LEASE_TTL,
    }


def servers_of(fleet: Fleet) -> list[dict[str, Any]]:
    return [
        {
            "server_name": host.name,
            "host": host.address,
            "ssh_port": host.ssh_port,
            "ssh_user": host.ssh_user,
            "agent_dir": host.agent_dir,
            "agent_user": host.agent_user,
            "agent_url": host.agent_url,
            "agent_password": host.agent_password,
        }
        for host in fleet.hosts
    ]


class Check:
    def __init__(self, fleet: Fleet, desk: DeskSite, client: DeskClient) -> None:
        self.fleet, self.desk, self.client = fleet, desk, client
        self.last_tick = 0.0

    def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """A desk call; retried while the site's database or queue comes back."""
        return self.client.call(op, *args, retry_for=60, **kwargs)

    def status(self, name: str) -> UpdateStatus:
        return self.call("store", "get_update", name).status

    def wait(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        """Until ``done``, ticking the watchdog every 5 s (the scheduler's job on a site)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise DeskSiteError(f"timed out after {timeout:g} s waiting for {what}")
            if time.monotonic() - self.last_tick > 5:
                self.call("tick")
                self.last_tick = time.monotonic()
            time.sleep(0.5)

    def run(self) -> str:
        fleet, desk = self.fleet, self.desk
        self.call("register", settings=settings_of(fleet), servers=servers_of(fleet))
        name = self.call(
            "create",
            servers=[h.name for h in fleet.hosts],
            commit_hash=fleet.commits.good,
            lanes=LANES,
            agent_startup_timeout_minutes=0.5,
            command_timeout_minutes=2,
            failed_command_grace=4,
            min_healthy_time=3,
        )
        say(f"{name}: {HOSTS} servers, {LANES} lanes, {WORKERS} workers")
        self.call("act", "build_plan", name)
        self.wait("the plan", lambda: self.status(name) is UpdateStatus.PENDING, 120)
        self.call("act", "start", name)

        def in_flight() -> bool:
            rows = self.call("store", "get_rows", name)
            return any(r.status.in_flight for r in rows)

        self.wait("a row in flight", in_flight, 120)
        busy = None

        def running_a_job() -> bool:
            nonlocal busy
            busy = desk.busy_worker()
            return busy is not None

        self.wait("a worker running a job", running_a_job, 60)
        assert busy is not None
        victim, horse = busy
        desk.kill_worker(victim, horse)
        say(f"worker pid {victim.pid} and its job's pid {horse} killed (SIGKILL), another started")
        desk.redis.restart()
        say(f"redis restarted (port {desk.redis.port}): its queued jobs are gone")
        desk.db.restart()
        say(f"mariadb restarted (port {desk.db.port})")
        self.wait("the end", lambda: self.status(name).is_final, 600)
        return name

    def verify(self, name: str) -> list[str]:
        """What is wrong at the end, asked of the hosts; empty when nothing."""
        problems = []
        update = self.call("store", "get_update", name)
        if update.status is not UpdateStatus.SUCCESS:
            problems.append(f"{name} ended {update.status.value}")
        for row in self.call("store", "get_rows", name):
            if row.status is not RowStatus.SUCCESS:
                problems.append(f"{row.server}: {row.status.value}: {row.reason}")
        for host in self.fleet.hosts:
            runs = self.fleet.running_commit(host)
            if runs != self.fleet.commits.good:
                problems.append(f"{host.name} runs {runs[:12]}, not {self.fleet.commits.good[:12]}")
        left = {what: names for what, names in self.call("leftovers").items() if names}
        if left:
            problems.append(f"left behind: {left}")
        return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=None, help="a built bench (default: cached)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    bench = args.bench or cached_bench()
    if bench is None:
        say("failed: no bench (run `make test` once, or give --bench)")
        return 1
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="desk-check-", dir="/tmp"))
    fleet = Fleet(HOSTS).start()
    desk = DeskSite(bench, root)
    client = None
    try:
        desk.create()
        desk.start_workers(WORKERS)
        client = DeskClient(desk)
        check = Check(fleet, desk, client)
        name = check.run()
        problems = check.verify(name)
    except DeskSiteError as exc:
        problems = [str(exc)]
    finally:
        if client is not None:
            client.close()
        desk.stop()
        fleet.stop()
    took = time.monotonic() - began
    if problems:
        for problem in problems:
            say(f"problem: {problem}")
        say(f"failed in {took:.0f}s (files kept in {root})")
        return 1
    shutil.rmtree(root, ignore_errors=True)
    say(f"ok in {took:.0f}s: every host runs the new commit; no lease, hold or halt left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
