"""``python -m agent_update.testing --size N``: start a fleet by hand and keep it up.

Prints each host's coordinates and ready-to-paste ssh and curl lines, then
waits for Ctrl-C. ``--once`` starts, prints timings and stops (a quick check).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading

from agent_update.testing.fleet import Fleet


def describe(fleet: Fleet) -> str:
    lines = [f"root {fleet.root}", f"upstream {fleet.upstream_url} (branch {fleet.branch})"]
    lines += [f"  {name:<13}{sha}" for name, sha in vars(fleet.commits).items()]
    for host in fleet.hosts:
        lines.append(
            f"{host.name}: ssh {host.ssh_user}@{host.address} -p {host.ssh_port}  "
            f"agent {host.agent_url} password {host.agent_password}  dir {host.agent_dir}"
        )
    first = fleet.hosts[0]
    lines.append("try: " + shlex.join(fleet.ssh_argv(first, "sudo -n supervisorctl status")))
    lines.append(
        f"     curl -H 'Authorization: bearer {first.agent_password}' {first.agent_url}/version"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_update.testing")
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--root", default=None, help="directory for the fleet (default: /tmp)")
    parser.add_argument("--once", action="store_true", help="start, print timings, stop")
    args = parser.parse_args(argv)
    with Fleet(args.size, root=args.root, workers=args.workers) as fleet:
        print(describe(fleet), flush=True)
        print(f"started {args.size} hosts in {fleet.timings['start']:.2f} s", flush=True)
        if not args.once:
            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            print("Ctrl-C to stop", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                done.wait()
    print(f"stopped in {fleet.timings['stop']:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
