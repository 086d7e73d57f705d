# ruff: noqa: S608 (table names come from frappe_tables; values are bound)
"""What the Frappe store answers about servers: the registry, and other rollouts' rows on them.

The registry is Press's servers first, then Agent Server (frappe_registry.py);
the rest are reads across every update's rows, for the runner's "waiting for
this server" and Build Plan's overlap warning. Mixed into FrappeStore.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import frappe

from agent_update import frappe_codec as codec
from agent_update import frappe_registry as registry
from agent_update.frappe_tables import ENDED, ROW_TABLE, ROW_WHERE, UPDATE_TABLE
from agent_update.rollout.model import Row, Server
from agent_update.rollout.server_leases import QUIET_UPDATES


class FrappeServerQueries:
    """Mixed into FrappeStore (which gives ``_context``)."""

    def _context(self) -> Any:
        raise NotImplementedError

    def get_server(self, name: str) -> Server | None:
        with self._context():
            return registry.get_server(name)

    def list_servers(self) -> list[Server]:
        """The registry without passwords: it only decides which servers are listed."""
        with self._context():
            return registry.list_servers()

    def waiting_for(self, server: str) -> list[str]:
        """Running updates with a Pending row on ``server``."""
        with self._context():
            return frappe.db.sql_list(
                f"SELECT DISTINCT s.parent FROM {ROW_TABLE} s JOIN {UPDATE_TABLE} u "
                "ON u.name=s.parent WHERE s.parenttype='Agent Rollout' "
                "AND s.parentfield='servers' AND s.server=%s AND s.status='Pending' "
                "AND u.status='Running' ORDER BY s.parent",
                server,
            )

    def pending_on(self, name: str, servers: Iterable[str]) -> list[Row]:
        """This update's Pending rows on ``servers`` (idx, server, step, reason only)."""
        chosen = sorted(set(servers))
        out: list[Row] = []
        with self._context():
            for start in range(0, len(chosen), 500):
                found = frappe.db.sql(
                    f"SELECT idx, server, status, step, reason FROM {ROW_TABLE} "
                    f"WHERE {ROW_WHERE} AND status='Pending' AND server IN %s ORDER BY idx",
                    [name, tuple(chosen[start : start + 500])],
                    as_dict=True,
                )
                out += [
                    codec.row_from(r, ["idx", "server", "status", "step", "reason"]) for r in found
                ]
        return sorted(out, key=lambda r: r.idx)

    def overlaps(self, name: str) -> list[tuple[str, str, str]]:
        """Rows not yet ended of other unfinished updates on this update's servers."""
        with self._context():
            found = frappe.db.sql(
                f"SELECT DISTINCT o.parent, u.status, o.server FROM {ROW_TABLE} o "
                f"JOIN {UPDATE_TABLE} u ON u.name=o.parent "
                "WHERE o.parenttype='Agent Rollout' AND o.parentfield='servers' "
                f"AND o.parent<>%s AND o.server IN (SELECT server FROM {ROW_TABLE} "
                f"WHERE {ROW_WHERE} AND status NOT IN %s) "
                "AND o.status NOT IN %s AND u.status NOT IN %s ORDER BY o.parent, o.server",
                [name, name, ENDED, ENDED, QUIET_UPDATES],
            )
        return [(r[0], r[1], r[2]) for r in found]
