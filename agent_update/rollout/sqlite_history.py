"""The SQLite store's history queries: list updates, a server's rows, delete one update.

Mixed into ``SqliteStore`` (as the server leases are), so the store module
stays about rows and their transitions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from agent_update.rollout.model import Row, Update
from agent_update.rollout.sqlite_codec import ROW_CODEC, UPDATE_CODEC


class SqliteHistory:
    """Reads across updates; newest first is the order they were inserted in, reversed."""

    writes: int

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _read(self, sql: str, params: list[Any]) -> list[sqlite3.Row]:
        raise NotImplementedError

    def list_updates(self, statuses: Iterable[str] = (), limit: int | None = None) -> list[Update]:
        """Updates, newest first; only those of ``statuses`` when given."""
        wanted = list(statuses)
        sql = f"SELECT {UPDATE_CODEC.select} FROM updates"
        if wanted:
            sql += f" WHERE status IN ({', '.join('?' for _ in wanted)})"
        sql += " ORDER BY rowid DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [UPDATE_CODEC.from_row(r) for r in self._read(sql, wanted)]

    def server_rows(self, server: str) -> list[tuple[Update, Row]]:
        """Every row that names ``server`` (by the rows-by-server index), with its update."""
        found = []
        for (name,) in self._read("SELECT DISTINCT update_name FROM rows WHERE server=?", [server]):
            updates = self._read(
                f'SELECT {UPDATE_CODEC.select} FROM updates WHERE "name"=?', [name]
            )
            rows = self._read(
                f"SELECT {ROW_CODEC.select} FROM rows WHERE update_name=? AND server=?",
                [name, server],
            )
            for update in updates:
                found += [(UPDATE_CODEC.from_row(update), ROW_CODEC.from_row(r)) for r in rows]
        return found

    def scheduled_updates(self, now: float) -> list[str]:
        """Pending updates whose scheduled start has come (the watchdog starts them)."""
        found = self._read(
            "SELECT name FROM updates WHERE status='Pending' AND start_at IS NOT NULL "
            "AND start_at<=? ORDER BY start_at",
            [now],
        )
        return [r["name"] for r in found]

    def delete_update(self, name: str) -> None:
        """The update, its rows and any server lease it still names, in one transaction."""
        with self._tx() as db:
            db.execute("DELETE FROM rows WHERE update_name=?", [name])
            db.execute("DELETE FROM server_leases WHERE update_name=?", [name])
            db.execute('DELETE FROM updates WHERE "name"=?', [name])
        self.writes += 3
