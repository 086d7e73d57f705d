"""The two paths of benchmarks/desk.py, one rollout each over the same simulated servers."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import frappe
from desk_pool import Workers
from simserver import SimConnector

from agent_update import api
from agent_update import frappe_codec as codec
from agent_update.agent_update.tests import desk_fleet, desk_views
from agent_update.rollout.commands import rows_from_registry
from agent_update.rollout.model import FINAL_UPDATE_STATUSES, EngineSettings, Server
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service

FINAL = {s.value for s in FINAL_UPDATE_STATUSES}
POLL = 2.0  # seconds between two polls of a running form (agent_rollout.js POLL_FAST)


@dataclass
class Run:
    """One rollout: seconds to plan and to run, writes per server, how its rows ended."""

    name: str
    servers: int
    plan: float
    run: float
    writes: float  # per server while running: the store's own count
    statements: float = 0.0  # per server: every data-changing SQL statement (desk path)
    jobs: int = 0  # RQ jobs while running (desk path)
    in_jobs: float = 0.0  # seconds inside those jobs, all of them (desk path)
    cpu: float = 0.0  # CPU seconds per server: the process (CLI), the work horses (desk)
    ended: Counter = field(default_factory=Counter)
    polls: list = field(default_factory=list)  # the form's poll (desk_views.Timing) while running

    @property
    def per_server(self) -> float:
        return self.run / self.servers

    def outcome(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(self.ended.items()))


def cli_run(entries: list[Server], server_type: str, lanes: int, settings: EngineSettings) -> Run:
    """The CLI path: SqliteStore, the runner's threads, Service.drive (``agent-update run``)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "cli.db")
        for server in entries:
            store.save_server(server)
        update = desk_fleet.update_for(server_type, lanes)
        name = store.insert_update(update, rows_from_registry(update, entries)).name
        service = Service(store, settings, connector=SimConnector())
        began = time.perf_counter()
        service.build_plan(name)
        plan = time.perf_counter() - began
        before, cpu = store.writes, time.process_time()
        began = time.perf_counter()
        service.start(name)
        service.drive(name)
        run = time.perf_counter() - began
        cpu = time.process_time() - cpu
        rows = store.get_rows(name, ["idx", "server", "status"])
        count = len(entries)
        return Run(
            name,
            count,
            plan,
            run,
            writes=(store.writes - before) / count,
            cpu=cpu / count,
            ended=Counter(r.status.value for r in rows),
        )


def _status(name: str) -> tuple[str, str]:
    frappe.db.commit()  # a fresh snapshot: see what the workers committed
    found = frappe.db.get_value(
        codec.UPDATE_DOCTYPE, name, ["status", "stuck_at_planning_reason"], as_dict=True
    )
    return found.status, found.stuck_at_planning_reason or ""


def desk_run(
    pool: Workers,
    entries: list[Server],
    server_type: str,
    lanes: int,
    timeout: float,
    poll: bool = False,
) -> Run:
    """The desk path: api.build_plan, api.start, every row an RQ job; the form polled if asked.

    The run ends when the update's status is final; the counts are read once
    the last jobs have returned (each adds its own as it ends).
    """
    name = desk_fleet.new_update(entries, server_type, lanes)
    desk_fleet.reset_counts(name)
    began = time.perf_counter()
    api.build_plan(name)
    while (found := _status(name))[0] != "Pending":
        if found[1] or time.perf_counter() - began > timeout:
            raise RuntimeError(f"Build Plan of {name} did not end: {found}")
        time.sleep(0.05)
    plan = time.perf_counter() - began
    pool.settle()
    planned = desk_fleet.counts(name)
    polls: list[desk_views.Timing] = []
    began = time.perf_counter()
    api.start(name)
    next_poll = began + POLL
    while (status := _status(name)[0]) not in FINAL:
        now = time.perf_counter()
        if now - began > timeout:
            raise RuntimeError(f"{name} still {status} after {timeout:g}s")
        if poll and now >= next_poll:
            timing = desk_views.form_poll(name)
            polls.append(desk_views.Timing(timing.seconds, timing.cpu, ""))  # not its body
            next_poll = now + POLL
        time.sleep(0.05)
    run = time.perf_counter() - began
    pool.settle()
    done = desk_fleet.counts(name)
    rows = frappe.get_all(
        codec.ROW_DOCTYPE,
        filters={"parent": name, "parenttype": codec.UPDATE_DOCTYPE},
        pluck="status",
    )
    count = len(entries)
    return Run(
        name,
        count,
        plan,
        run,
        writes=(done["store"] - planned["store"]) / count,
        statements=(done["sql"] - planned["sql"]) / count,
        jobs=done["jobs"] - planned["jobs"],
        in_jobs=(done["ms"] - planned["ms"]) / 1000,
        cpu=(done["cpu_ms"] - planned["cpu_ms"]) / 1000 / count,
        ended=Counter(rows),
        polls=polls,
    )
