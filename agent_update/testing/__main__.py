"""``python -m agent_update.testing --size N``: start a fleet by hand and keep it up.

Prints each host's coordinates and ready-to-paste ssh and curl lines, writes
a settings file for ``agent-update`` that trusts exactly the fleet's host
keys and prints the ``init`` and ``server-add`` lines that register it, then
waits for Ctrl-C. ``--once`` starts, prints timings and stops (a quick check).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from pathlib import Path

from agent_update.testing.fleet import Fleet
from agent_update.testing.harness import PASSWORD_VAR, server_add_args, write_cli_settings


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


def registry_lines(fleet: Fleet, settings: Path) -> str:
    """Lines to paste: the settings and database variables, init, one server-add per host."""
    db = settings.parent / "fleet.db"
    lines = [
        f"settings written to {settings}; to use the fleet with agent-update:",
        f"export AGENT_UPDATE_SETTINGS={shlex.quote(str(settings))} "
        f"AGENT_UPDATE_DB={shlex.quote(str(db))}",
        "agent-update init",
    ]
    for host in fleet.hosts:
        argv = ["agent-update", *server_add_args(host)]
        lines.append(f"{PASSWORD_VAR}={shlex.quote(host.agent_password)} {shlex.join(argv)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_update.testing")
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--root", default=None, help="directory for the fleet (default: /tmp)")
    parser.add_argument("--once", action="store_true", help="start, print timings, stop")
    parser.add_argument(
        "--settings",
        default=None,
        help="where to write the agent-update settings file (default: in the fleet's root)",
    )
    args = parser.parse_args(argv)
    with Fleet(args.size, root=args.root, workers=args.workers) as fleet:
        print(describe(fleet), flush=True)
        settings = Path(args.settings) if args.settings else Path(fleet.root) / "settings.json"
        write_cli_settings(fleet, settings)
        print(registry_lines(fleet, settings), flush=True)
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
