"""One rollout per server in the Frappe store: the Agent Server Lease table.

The engine's server lease (rollout.server_leases) as a compare-and-set on a
row of its own per server, keyed by the server's name, so a lease needs no
registry record of this app: a Frappe Press server (press_servers.py) is
leased exactly like an Agent Server. A server in one of Press's own running
Agent Updates counts as held by it: this app's row waits, as it waits for
another rollout of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import frappe
from frappe.utils import now as frappe_now

from agent_update import press_servers

LEASE_DOCTYPE = "Agent Server Lease"
LEASE_TABLE = f"`tab{LEASE_DOCTYPE}`"
Holder = tuple[str, int]


class FrappeServerLeases:
    """Mixed into FrappeStore (which gives ``_context``, ``_write`` and ``_commit``)."""

    def _context(self) -> Any:
        raise NotImplementedError

    def _write(self, sql: str, values: list[Any]) -> int:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def claim_server(self, server: str, name: str, idx: int, now: float, ttl: float) -> str:
        """Take or renew; "" when (name, idx) holds it now, else the holder's update."""
        with self._context():
            holder = _holder(server)
            if holder != (name, idx):
                press = press_servers.busy_servers([server])
                if press:  # Press's own tool is on it: wait, never share a server with it
                    self._commit()
                    return press[server]
            if holder is None:
                self._write(_insert_ignore(), [server, server, frappe_now(), frappe_now()])
            self._write(
                f"UPDATE {LEASE_TABLE} SET rollout=%s, row_idx=%s, expires=%s WHERE name=%s "
                "AND (rollout IS NULL OR rollout='' OR expires<=%s "
                "OR (rollout=%s AND row_idx=%s))",
                [name, idx, now + ttl, server, now, name, idx],
            )
            holder = _holder(server)
            self._commit()
        if holder == (name, idx):
            return ""
        return holder[0] if holder and holder[0] else "a concurrent claim"

    def release_server(self, server: str, name: str, idx: int) -> None:
        """Cleared, not deleted: the server's next claim is one UPDATE, no insert."""
        with self._context():
            self._write(
                f"UPDATE {LEASE_TABLE} SET rollout='', row_idx=0, expires=0 "
                "WHERE name=%s AND rollout=%s AND row_idx=%s",
                [server, name, idx],
            )
            self._commit()

    def server_holders(self, servers: Iterable[str], now: float) -> dict[str, Holder]:
        chosen = sorted(set(servers))
        out: dict[str, Holder] = {}
        with self._context():
            for start in range(0, len(chosen), 500):
                found = frappe.db.sql(
                    f"SELECT name, rollout, row_idx FROM {LEASE_TABLE} "
                    "WHERE name IN %s AND rollout!='' AND expires>%s",
                    [tuple(chosen[start : start + 500]), now],
                )
                out.update({r[0]: (r[1], int(r[2] or 0)) for r in found})
        return out

    def foreign_leases(self, name: str, now: float) -> dict[str, Holder]:
        """Live leases of other updates' rows, and the servers Press's own updates are on."""
        with self._context():
            found = frappe.db.sql(
                f"SELECT name, rollout, row_idx FROM {LEASE_TABLE} "
                "WHERE rollout>'' AND rollout<>%s AND expires>%s",
                [name, now],
            )
            press = press_servers.busy_servers()
        leases = {server: (other, 0) for server, other in press.items()}
        leases.update({r[0]: (r[1], int(r[2] or 0)) for r in found})
        return leases


def _holder(server: str) -> Holder | None:
    found = frappe.db.sql(f"SELECT rollout, row_idx FROM {LEASE_TABLE} WHERE name=%s", server)
    if not found:
        return None
    return (found[0][0] or "", int(found[0][1] or 0))


def _insert_ignore() -> str:
    """A lease row for the server if none is there yet (racing inserts are fine)."""
    columns = "(name, server, rollout, row_idx, expires, creation, modified, owner, modified_by)"
    values = "VALUES (%s, %s, '', 0, 0, %s, %s, 'Administrator', 'Administrator')"
    if frappe.db.db_type == "postgres":
        return f"INSERT INTO {LEASE_TABLE} {columns} {values} ON CONFLICT (name) DO NOTHING"
    return f"INSERT IGNORE INTO {LEASE_TABLE} {columns} {values}"
