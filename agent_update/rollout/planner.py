"""Build Plan: probe every row's server concurrently, then apply the plan.

A bounded pool probes all servers at once; one bad server (unreachable,
wrong host key, wrong password) becomes a Draft row with its reason and never
aborts the plan. The planner holds a lease on the update while it works, so
a planner that died is redone by the watchdog instead of leaving the update
stuck in Planning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from agent_update.rollout import commands
from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.model import EngineSettings, Row, Server, Update
from agent_update.rollout.runner import new_owner
from agent_update.rollout.store import Store

log = logging.getLogger(__name__)


class Prober(Protocol):
    """Learns a server's current commit (and that it can be reached)."""

    def plan_probe(self, server: Server) -> PlanOutcome: ...


def probe_all(
    prober: Prober, rows: list[Row], servers: dict[str, Server | None], concurrency: int
) -> dict[int, PlanOutcome]:
    """Probe each row's server at most ``concurrency`` at a time."""

    def one(row: Row) -> PlanOutcome:
        server = servers.get(row.server)
        if server is None:
            return PlanOutcome(error=f"{row.server} is not in the server registry")
        if server.opted_out:
            return PlanOutcome(opted_out=True)
        try:
            return prober.plan_probe(server)
        except Exception as exc:  # one bad server must never abort the plan
            log.warning("%s: plan probe failed", row.server, exc_info=True)
            return PlanOutcome(error=f"{type(exc).__name__}: {exc}")

    if not rows:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(rows)))) as pool:
        return dict(zip([r.idx for r in rows], pool.map(one, rows), strict=True))


def planning_ttl(settings: EngineSettings, count: int) -> float:
    """Long enough for every probe wave to time out, so no live planner looks dead."""
    waves = -(-max(count, 1) // max(settings.plan_concurrency, 1))
    worst_probe = settings.connect_timeout + 2 * settings.probe_timeout
    return max(settings.lease_ttl, waves * worst_probe)


def build_plan(
    store: Store,
    prober: Prober,
    name: str,
    settings: EngineSettings | None = None,
    clock: Callable[[], float] = time.time,
) -> Update:
    """Planning -> Pending (every row Pending/Skipped) or Draft (why stuck)."""
    settings = settings or EngineSettings()
    owner = new_owner()
    rows = store.get_rows(name)
    with store.locked(name):
        update = store.get_update(name)
        update = commands.begin_planning(update, owner, clock(), planning_ttl(settings, len(rows)))
        store.save_update(update, ["status", "lease_owner", "lease_expires", "why_stuck"])
    rows = store.get_rows(name)
    servers = {r.server: store.get_server(r.server) for r in rows}
    outcomes = probe_all(prober, rows, servers, settings.plan_concurrency)
    planned, new_rows = commands.apply_plan(update, rows, outcomes)
    with store.locked(name):
        current = store.get_update(name)
        if current.lease_owner != owner:  # another planner took over: its plan wins
            return current
        for old, new in zip(rows, new_rows, strict=True):
            store.save_row(name, new, new.changed_fields(old))
        store.save_update(planned, ["status", "why_stuck", "lease_owner", "lease_expires"])
    return planned
