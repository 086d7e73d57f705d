"""One rollout per server: a compare-and-set server lease across all updates.

A server is in at most one in-flight row at a time, whatever the update.
Choice (docs/design.md §6, docs/verdicts-and-leases.md): a second rollout WAITS.
Its row for a busy server stays Pending with the note "waiting: <server>
busy in <other update>", and the rollout moves on to its other rows; the
row starts once the server is free (the runner that frees it kicks the
updates waiting for it, the watchdog tick does too).

The lease is taken before the precheck (when the row is claimed), renewed
with the row's own lease, released when the row ends, and expires with the
row's lease, so a dead runner never holds a server for good. It is keyed by
(update, row), not by runner, so the runner that resumes a row keeps it.
Build Plan and Start write a readable warning listing the other unfinished
updates that share servers with this one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from agent_update.rollout.model import (
    ENDED_ROW_STATUSES,
    FINAL_UPDATE_STATUSES,
    Row,
    RowStatus,
    Step,
)

Holder = tuple[str, int]  # (update name, row idx)
Overlap = tuple[str, str, str]  # (other update, its status, server)

SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS server_leases (server TEXT PRIMARY KEY, "
    "update_name TEXT NOT NULL, idx INTEGER NOT NULL, expires REAL NOT NULL)",
    # waiting_for() runs at every row's end: it must not scan every row.
    'CREATE INDEX IF NOT EXISTS rows_by_server ON rows ("server", status)',
)
# Updates that hold no server: finished, or a Draft (not planned, nothing runs).
# The overlap warning never names these.
QUIET_UPDATES = tuple(sorted({s.value for s in FINAL_UPDATE_STATUSES} | {"Draft"}))
ENDED_ROWS = tuple(sorted(s.value for s in ENDED_ROW_STATUSES))


def waiting_note(server: str, other: str) -> str:
    return f"waiting: {server} busy in {other}"


def overlap_warning(overlaps: Iterable[Overlap]) -> str:
    """One line naming every other unfinished update and the servers it shares."""
    by_update: dict[tuple[str, str], list[str]] = {}
    for other, status, server in overlaps:
        by_update.setdefault((other, status), []).append(server)
    if not by_update:
        return ""
    parts = [
        f"{other} ({status}): {', '.join(sorted(set(servers)))}"
        for (other, status), servers in sorted(by_update.items())
    ]
    return (
        "servers also in other unfinished updates: "
        + "; ".join(parts)
        + " (each waits until the other update is done with it)"
    )


class ServerLeases(Protocol):
    """The store's part of it (SQLite below, frappe_store for the app)."""

    def claim_server(self, server: str, name: str, idx: int, now: float, ttl: float) -> str:
        """Take or renew; "" when held by (name, idx) now, else the holder's update."""
        ...

    def release_server(self, server: str, name: str, idx: int) -> None: ...
    def server_holders(self, servers: Iterable[str], now: float) -> dict[str, Holder]:
        """Live leases on ``servers``."""
        ...

    def foreign_leases(self, name: str, now: float) -> dict[str, Holder]:
        """Live leases held by other updates' rows (few: their rows in flight)."""
        ...

    def waiting_for(self, server: str) -> list[str]:
        """Running updates with a Pending row on ``server``."""
        ...

    def pending_on(self, name: str, servers: Iterable[str]) -> list[Row]:
        """This update's Pending rows on ``servers`` (idx, server, step, reason only)."""
        ...

    def overlaps(self, name: str) -> list[Overlap]:
        """Rows not yet ended of other unfinished updates on this update's servers."""
        ...


class SqliteServerLeases:
    """ServerLeases over the SQLite store's connection (mixed into SqliteStore)."""

    writes: int

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, params: list[Any]) -> list[sqlite3.Row]:
        raise NotImplementedError

    def claim_server(self, server: str, name: str, idx: int, now: float, ttl: float) -> str:
        with self._tx() as db:
            db.execute(
                "INSERT INTO server_leases (server, update_name, idx, expires) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (server) DO UPDATE SET "
                "update_name=excluded.update_name, idx=excluded.idx, expires=excluded.expires "
                "WHERE server_leases.expires<=? OR (server_leases.update_name=excluded.update_name "
                "AND server_leases.idx=excluded.idx)",
                [server, name, idx, now + ttl, now],
            )
            self.writes += 1
            found = db.execute(
                "SELECT update_name, idx FROM server_leases WHERE server=?", [server]
            ).fetchone()
        holder = (found[0], found[1]) if found else (name, idx)
        return "" if holder == (name, idx) else holder[0]

    def release_server(self, server: str, name: str, idx: int) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM server_leases WHERE server=? AND update_name=? AND idx=?",
                [server, name, idx],
            )
            self.writes += 1

    def server_holders(self, servers: Iterable[str], now: float) -> dict[str, Holder]:
        out: dict[str, Holder] = {}
        for chunk in _chunks(sorted(set(servers)), 500):
            marks = ", ".join("?" for _ in chunk)
            found = self._read(
                f"SELECT server, update_name, idx FROM server_leases "  # noqa: S608 (marks only)
                f"WHERE expires>? AND server IN ({marks})",
                [now, *chunk],
            )
            out.update({r[0]: (r[1], r[2]) for r in found})
        return out

    def foreign_leases(self, name: str, now: float) -> dict[str, Holder]:
        found = self._read(
            "SELECT server, update_name, idx FROM server_leases WHERE expires>? AND update_name<>?",
            [now, name],
        )
        return {r[0]: (r[1], r[2]) for r in found}

    def waiting_for(self, server: str) -> list[str]:
        found = self._read(
            "SELECT DISTINCT r.update_name FROM rows r JOIN updates u ON u.name=r.update_name "
            "WHERE r.server=? AND r.status='Pending' AND u.status='Running' ORDER BY 1",
            [server],
        )
        return [r[0] for r in found]

    def pending_on(self, name: str, servers: Iterable[str]) -> list[Row]:
        out: list[Row] = []
        for chunk in _chunks(sorted(set(servers)), 500):
            marks = ", ".join("?" for _ in chunk)
            found = self._read(
                'SELECT "idx", server, step, reason FROM rows '  # noqa: S608 (marks only)
                f"WHERE update_name=? AND status='Pending' AND server IN ({marks})",
                [name, *chunk],
            )
            out += [
                Row(
                    idx=r[0],
                    server=r[1],
                    status=RowStatus.PENDING,
                    step=Step(r[2] or ""),
                    reason=r[3] or "",
                )
                for r in found
            ]
        return sorted(out, key=lambda r: r.idx)

    def overlaps(self, name: str) -> list[Overlap]:
        ended = ", ".join("?" for _ in ENDED_ROWS)
        final = ", ".join("?" for _ in QUIET_UPDATES)
        found = self._read(
            "SELECT DISTINCT o.update_name, u.status, o.server FROM rows o "  # noqa: S608
            "JOIN updates u ON u.name=o.update_name "
            "WHERE o.update_name<>? AND o.server IN (SELECT server FROM rows "
            f"WHERE update_name=? AND status NOT IN ({ended})) "
            f"AND o.status NOT IN ({ended}) AND u.status NOT IN ({final}) ORDER BY 1, 3",
            [name, name, *ENDED_ROWS, *ENDED_ROWS, *QUIET_UPDATES],
        )
        return [(r[0], r[1], r[2]) for r in found]


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
