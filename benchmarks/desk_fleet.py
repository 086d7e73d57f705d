"""The desk path on real servers: the loopback fleet, SSH and all, beside the CLI path.

desk.py measures the desk's orchestration on zero-time simulated servers;
this is the same comparison where a server's update is real (an SSH
session, ``git fetch``/``checkout``, a restart under supervisord, the
verification with pids and the minimum healthy time). Side by side in one
run, on the same hosts, alternating two good commits so every rollout moves
every host:

* the CLI path: the SQLite store, rows in threads of this process;
* the desk path: a site of its own (testing/desk_site.py: a private MariaDB
  and Redis, RQ workers of the cached bench), Build Plan and Start as the
  buttons do, every row a job, the watchdog tick every 5 s.

Per rollout: wall time from Start to the end, each row's time (started →
ended, median), and the orchestration CPU (the CLI path: this process; the
desk path: the workers and their reaped work horses, from /proc). Prints
figures; asserts nothing. With no cached bench it prints one SKIPPED line.

    python benchmarks/desk_fleet.py [--hosts 8] [--lanes 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent_update.rollout.model import UpdateStatus
from agent_update.testing import desk_check
from agent_update.testing.desk_site import DeskClient, DeskSite, cached_bench
from agent_update.testing.fleet import Fleet
from agent_update.testing.harness import (
    FLEET_MIN_HEALTHY,
    fleet_service,
    fleet_settings,
    fleet_update,
)

TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children it has reaped (RQ's work horses)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICKS  # utime stime cutime cstime


class Figures:
    def __init__(self) -> None:
        self.walls: list[float] = []
        self.rows: list[float] = []
        self.cpu: list[float] = []

    def add(self, wall: float, rows: list[float], cpu: float) -> None:
        self.walls.append(wall)
        self.rows += rows
        self.cpu.append(cpu / max(len(rows), 1))

    def line(self, label: str) -> str:
        return (
            f"{label}: rollout {statistics.median(self.walls):6.2f}s, "
            f"row median {statistics.median(self.rows):5.2f}s, "
            f"orchestration CPU {statistics.median(self.cpu):5.3f}s/server "
            f"({len(self.walls)} rollouts, {len(self.rows)} rows)"
        )


Measured = tuple[float, list[float], float]  # wall time, each row's time, CPU


def cli_rollout(fleet: Fleet, work: Path, commit: str, lanes: int) -> Measured:
    service = fleet_service(fleet, work, settings=fleet_settings(fleet, work))
    update = service.create(fleet_update(commit, lanes=lanes))
    service.build_plan(update.name)
    cpu, began = time.process_time(), time.monotonic()
    service.start(update.name)
    final = service.drive(update.name, timeout=600)
    wall, cpu = time.monotonic() - began, time.process_time() - cpu
    if final.status is not UpdateStatus.SUCCESS:
        raise SystemExit(f"desk fleet bench: the CLI rollout ended {final.status.value}")
    rows = [r.ended_at - r.started_at for r in service.store.get_rows(update.name)]
    return wall, rows, cpu


class Desk:
    """The site, its workers and a client; each rollout over every host of the fleet."""

    def __init__(self, fleet: Fleet, bench: Path, root: Path, lanes: int) -> None:
        self.fleet, self.lanes = fleet, lanes
        self.site = DeskSite(bench, root)
        self.site.create()
        self.site.start_workers(lanes + 1)
        self.client = DeskClient(self.site)
        settings = {**desk_check.settings_of(fleet), "poll_interval": 0.1}
        self.client.call("register", settings=settings, servers=desk_check.servers_of(fleet))

    def rollout(self, commit: str) -> Measured:
        check = desk_check.Check(self.fleet, self.site, self.client)  # waits, ticking every 5 s
        name = check.call(
            "create",
            servers=[h.name for h in self.fleet.hosts],
            commit_hash=commit,
            lanes=self.lanes,
            agent_startup_timeout_minutes=0.25,
            command_timeout_minutes=1,
            failed_command_grace=4,
            min_healthy_time=FLEET_MIN_HEALTHY,
        )
        check.call("act", "build_plan", name)
        check.wait("the plan", lambda: check.status(name) is UpdateStatus.PENDING, 300)
        workers = self.site.live_workers()
        cpu = sum(tree_cpu(w.pid) for w in workers)
        began = time.monotonic()
        check.call("act", "start", name)
        check.wait("the end", lambda: check.status(name).is_final, 600)
        wall = time.monotonic() - began
        cpu = sum(tree_cpu(w.pid) for w in workers) - cpu
        final = check.status(name)
        if final is not UpdateStatus.SUCCESS:
            raise SystemExit(f"desk fleet bench: the desk rollout {name} ended {final.value}")
        rows = check.call("store", "get_rows", name)
        return wall, [r.ended_at - r.started_at for r in rows], cpu

    def close(self) -> None:
        self.client.close()
        self.site.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bench", type=Path, default=None, help="a built bench (default: cached)")
    args = parser.parse_args(argv)
    bench = args.bench or cached_bench()
    if bench is None:
        print("desk fleet bench: SKIPPED (no built bench: `make test` builds one)")
        return 0
    with tempfile.TemporaryDirectory(prefix="desk-fleet-") as tmp:
        root = Path(tmp)
        with Fleet(args.hosts, root=root / "fleet") as fleet:
            desk = Desk(fleet, bench, root / "desk", args.lanes)
            try:
                cli, site = Figures(), Figures()
                good, good2 = fleet.commits.good, fleet.commits.good2  # each moves every host
                for run in range(args.rounds):
                    cli.add(*cli_rollout(fleet, root / f"cli{run}", good, args.lanes))
                    site.add(*desk.rollout(good2))
            finally:
                desk.close()
    print(f"{args.hosts} loopback hosts, {args.lanes} lanes, {args.rounds} rollouts per path:")
    print(cli.line("CLI path "))
    print(site.line("desk path"))
    wall = statistics.median(site.walls) / statistics.median(cli.walls)
    row = statistics.median(site.rows) / statistics.median(cli.rows)
    print(f"desk/CLI: rollout {wall:.2f}x, row {row:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
