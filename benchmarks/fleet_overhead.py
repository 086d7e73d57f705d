"""Per-server overhead of the engine on the real loopback fleet.

Side by side in one run, on the same hosts: (a) a bare loop — one SSH
connection, the same update command, then /version polled every 20 ms until
the web process runs the target — and (b) the engine updating the same hosts
(precheck, leases, stored steps, verification with pids, bake 0). The
difference per server is what the engine adds besides the command and the
restart. Prints figures; asserts nothing.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from agent_update.remote import script
from agent_update.remote.ssh import SshCredentials, SshSession, SshTarget
from agent_update.testing.fleet import Fleet
from agent_update.testing.harness import fleet_service, fleet_update


def bare_update(fleet: Fleet, host, commit: str) -> float:
    t0 = time.perf_counter()
    creds = SshCredentials(private_key=fleet.client_key, known_hosts=fleet.known_hosts)
    command = script.render_update_command(
        agent_dir=host.agent_dir,
        repo_url=fleet.upstream_url,
        commit=commit,
        restart_web=True,
        restart_rq=False,
        restart_redis=False,
    )
    with SshSession(SshTarget(host.address, host.ssh_port, host.ssh_user), creds) as ssh:
        ssh.run(command, 120)
    while True:
        with contextlib.suppress(Exception):  # the agent is restarting
            if fleet.running_commit(host) == commit:
                return time.perf_counter() - t0
        time.sleep(0.02)


def engine_update(fleet: Fleet, tmp: Path, commit: str, run: int) -> list[float]:
    service = fleet_service(fleet, tmp / f"engine{run}")
    update = service.create(fleet_update(commit))
    service.build_plan(update.name)
    service.start(update.name)
    final = service.drive(update.name, timeout=300)
    assert final.status.value == "Success", final
    return [r.ended_at - r.started_at for r in service.store.get_rows(update.name)]


def main(size: int = 3, rounds: int = 2) -> None:
    with tempfile.TemporaryDirectory() as tmp, Fleet(size, root=Path(tmp) / "fleet") as fleet:
        targets = [fleet.commits.good, fleet.commits.good2]
        bare: list[float] = []
        engine: list[float] = []
        for run in range(rounds):
            for host in fleet.hosts:
                bare.append(bare_update(fleet, host, targets[run % 2]))
            engine += engine_update(fleet, Path(tmp), targets[(run + 1) % 2], run)
        b, e = statistics.median(bare), statistics.median(engine)
        print(f"one server, bare SSH + poll loop : median {b:.2f}s over {len(bare)} updates")
        print(f"one server, engine (stored steps): median {e:.2f}s over {len(engine)} updates")
        print(f"engine overhead per server       : {e - b:+.2f}s (ratio {e / b:.2f})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
