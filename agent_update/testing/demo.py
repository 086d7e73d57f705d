"""`make demo`: a real rollout on a loopback fleet, with live progress.

Six simulated servers (real sshd, supervisord and test agent each) are
updated to a good commit two at a time; on one of them the new commit is
made to crash on start, so that server is rolled back and verified on its
old commit while the others succeed. Ends with a summary table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from agent_update.rollout.model import Row, RowStatus, Update, UpdateStatus
from agent_update.testing.fleet import Fleet
from agent_update.testing.harness import fleet_service, fleet_update

COLOURS = {
    RowStatus.SUCCESS: "32",
    RowStatus.ROLLED_BACK: "33",
    RowStatus.FAILURE: "31",
    RowStatus.FATAL: "31;1",
    RowStatus.SKIPPED: "36",
}


def paint(text: str, status: RowStatus) -> str:
    code = COLOURS.get(status)
    return f"\033[{code}m{text}\033[0m" if code and sys.stdout.isatty() else text


class Progress:
    """Prints one line per row transition, with the time since the start."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.seen: dict[tuple[str, int], tuple[str, str]] = {}

    def __call__(self, name: str, row: Row | None, update: Update | None) -> None:
        stamp = f"[{time.monotonic() - self.t0:6.2f}s]"
        with self.lock:
            if update is not None:
                print(f"{stamp} update {name}: {update.status.value}", flush=True)
                return
            assert row is not None
            key = (row.status.value, row.step.value)
            if self.seen.get((name, row.idx)) == key:
                return
            self.seen[(name, row.idx)] = key
            status = paint(f"{row.status.value:<12}", row.status)
            step = f"({row.step.value})" if row.step.value else ""
            why = f"  {row.reason}" if row.reason and row.status.ended else ""
            print(f"{stamp} {row.server:<8} {status} {step:<15}{why}", flush=True)


def summary(service, fleet: Fleet, name: str) -> str:
    commits = {value: key for key, value in vars(fleet.commits).items()}
    lines = [
        f"{'server':<8} {'status':<12} {'before':<8} {'after':<8} {'runs':<8} {'secs':>5}  reason",
        "-" * 78,
    ]
    for row in service.store.get_rows(name):
        host = fleet.host(row.server)
        runs = commits.get(fleet.running_commit(host), "?")
        secs = (row.ended_at or 0) - (row.started_at or 0)
        status = paint(f"{row.status.value:<12}", row.status)
        lines.append(
            f"{row.server:<8} {status} {commits.get(row.current_commit, '?'):<8} "
            f"{commits.get(row.reported_commit, '?'):<8} {runs:<8} {secs:5.1f}  {row.reason[:60]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=6, help="servers in the fleet")
    parser.add_argument("--lanes", type=int, default=2, help="servers updated at once")
    args = parser.parse_args(argv)
    if args.size < 2:
        parser.error("--size must be at least 2")

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="au-demo-") as tmp, Fleet(args.size, root=tmp) as fleet:
        print(f"fleet of {args.size} servers up in {time.monotonic() - t0:.1f}s:")
        for host in fleet.hosts:
            print(f"  {host.name:<8} ssh {host.address}:{host.ssh_port}  agent {host.agent_url}")
        broken = fleet.hosts[args.size // 2]
        fleet.sabotage(broken, fleet.commits.good)
        print(f"(on {broken.name} the new commit will crash on start)\n")

        progress = Progress()
        service = fleet_service(fleet, Path(tmp) / "engine", listener=progress)
        update = service.create(fleet_update(fleet.commits.good, lanes=args.lanes))
        print(f"update {update.name}: {update.commit[:12]} {update.commit_message!r}")
        planned = service.build_plan(update.name)
        print(
            f"Build Plan: {planned.status.value}, {len(service.store.get_rows(update.name))} rows"
        )
        t1 = time.monotonic()
        service.start(update.name)
        final = service.drive(update.name, timeout=600)
        wall = time.monotonic() - t1
        print("\n" + summary(service, fleet, update.name))
        total = time.monotonic() - t0
        lanes = f"{args.lanes} lanes"
        print(f"\nupdate {final.status.value} in {wall:.1f}s ({lanes}); demo {total:.1f}s")
        rows = service.store.get_rows(update.name)
        expected = all(
            r.status is (RowStatus.ROLLED_BACK if r.server == broken.name else RowStatus.SUCCESS)
            for r in rows
        )
        return 0 if expected and final.status is UpdateStatus.PARTIAL_SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
