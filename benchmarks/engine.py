"""Engine figures (docs/design.md §12) on simulated servers; prints, never asserts.

* store writes per server: flat from 10 to 1,000 servers (O(1) per transition)
* Build Plan of 1,000 servers at 50 ms latency each
* 200 servers in 20 lanes: wall time against the ideal (200/20 x one server)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simserver import SimConnector

from agent_update.rollout.commands import rows_from_registry
from agent_update.rollout.model import EngineSettings, Server, Update
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service

TARGET = "f" * 40


def make(tmp: Path, count: int, connector: SimConnector, **settings: object):
    store = SqliteStore(tmp / f"bench-{count}-{time.monotonic_ns()}.db")
    for i in range(count):
        # One agent directory each: one machine per server (a shared one would share a lease).
        store.save_server(
            Server(
                name=f"s{i:04d}",
                host="127.0.0.1",
                agent_dir=f"/srv/s{i:04d}/agent",
                agent_url="http://127.0.0.1",
            )
        )
    engine = EngineSettings(poll_interval=0.01, **settings)  # type: ignore[arg-type]
    service = Service(store, engine, connector=connector)
    rows = rows_from_registry(Update(), store.list_servers())
    update = store.insert_update(
        # min_healthy_time 0: simulated pids have no uptime to wait out (simserver.py)
        Update(repo="/srv/agent.git", branch="master", commit=TARGET, min_healthy_time=0),
        rows,
    )
    return service, update.name


def writes_per_server(tmp: Path) -> None:
    print("store writes per server (one full rollout, simulated servers):")
    for count in (10, 100, 1000):
        service, name = make(tmp, count, SimConnector(), plan_concurrency=64)
        service.build_plan(name)
        before = service.store.writes
        service.start(name)
        final = service.drive(name)
        per = (service.store.writes - before) / count
        print(f"  {count:>5} servers: {per:6.2f} writes/server  ({final.status.value})")


def plan_speed(tmp: Path) -> None:
    print("Build Plan, 50 ms per server probe:")
    for count, concurrency in ((100, 1), (1000, 64)):
        service, name = make(
            tmp, count, SimConnector(plan_latency=0.05), plan_concurrency=concurrency
        )
        t0 = time.perf_counter()
        planned = service.build_plan(name)
        secs = time.perf_counter() - t0
        print(
            f"  {count:>5} servers, {concurrency:>2} at once: {secs:6.2f}s ({planned.status.value})"
        )


def lane_packing(tmp: Path) -> None:
    count, lanes = 200, 20
    for command in (0.5, 2.0):
        service, name = make(tmp, count, SimConnector(command_secs=command))
        service.build_plan(name)
        update = service.store.get_update(name)
        service.store.save_update(update.copy(lanes=lanes), ["lanes"])
        t0 = time.perf_counter()
        service.start(name)
        final = service.drive(name)
        wall = time.perf_counter() - t0
        ideal = count / lanes * command
        print(
            f"{count} servers in {lanes} lanes, {command}s each: wall {wall:.2f}s, "
            f"ideal {ideal:.2f}s, ratio {wall / ideal:.3f} ({final.status.value})"
        )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        writes_per_server(Path(tmp))
        plan_speed(Path(tmp))
        lane_packing(Path(tmp))


if __name__ == "__main__":
    main()
