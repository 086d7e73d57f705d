"""Where updates, rows and servers live: the Store protocol and a SQLite store.

The runner only talks to a ``Store``. Writes name the fields that changed
and touch one row, so a transition costs O(1) whatever the fleet's size.
Leases are compare-and-set in the store, which makes two runners safe.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent_update.rollout import rules
from agent_update.rollout.errors import AgentUpdateError, LeaseLost
from agent_update.rollout.model import IN_FLIGHT_ROW_STATUSES, Row, RowStatus, Server, Step, Update
from agent_update.rollout.server_leases import SQLITE_SCHEMA, ServerLeases, SqliteServerLeases
from agent_update.rollout.sqlite_codec import (
    ROW_CODEC,
    SERVER_CODEC,
    UPDATE_CODEC,
    add_missing_columns,
)
from agent_update.rollout.sqlite_codec import marks as _marks
from agent_update.rollout.sqlite_codec import quote as _q
from agent_update.rollout.sqlite_history import SqliteHistory
from agent_update.rollout.tally import DECISION_FIELDS, HALTING_STATUSES, RowTimes, Tally


class NotFound(AgentUpdateError, KeyError):
    """No update, row or server of that name."""


class Store(ServerLeases, Protocol):
    """What the runner needs from storage (SQLite here, frappe.db in the app)."""

    def get_update(self, name: str) -> Update: ...
    def get_rows(self, name: str, fields: Sequence[str] | None = None) -> list[Row]:
        """Every row, or only ``fields`` of each (the others keep their defaults)."""
        ...

    def get_row(self, name: str, idx: int) -> Row: ...
    def tally(self, name: str, limit: int) -> Tally:
        """Counts per status and the rows a decision may act on (see rollout.tally)."""
        ...

    def row_times(self, name: str) -> RowTimes: ...

    def insert_update(self, update: Update, rows: list[Row]) -> Update: ...
    def save_update(self, update: Update, changed: Iterable[str]) -> None: ...
    def save_row(
        self, name: str, row: Row, changed: Iterable[str], owner: str | None = None
    ) -> None: ...
    def replace_rows(self, name: str, rows: list[Row]) -> None: ...
    def claim_row(self, name: str, idx: int, owner: str, now: float, ttl: float) -> bool: ...
    def release_row(self, name: str, idx: int, owner: str) -> None: ...
    def locked(self, name: str) -> contextlib.AbstractContextManager[None]: ...
    def get_server(self, name: str) -> Server | None: ...
    def list_servers(self) -> list[Server]: ...
    def unfinished_updates(self) -> list[str]: ...
    def scheduled_updates(self, now: float) -> list[str]:
        """Pending updates whose scheduled start has come."""
        ...


# ------------------------------------------------------------------- SQLite

# Rows per (update, status, started or not), kept by the database itself in
# the transaction that changes a row: the tally reads a handful of counters
# instead of every row, and they can never drift from the rows.
_COUNT_KEY = "update_name, status, started"
_BUMP = (
    "INSERT INTO row_counts ({key}, n) VALUES ({row}.update_name, {row}.status, "
    "{row}.started_at IS NOT NULL, {delta}) ON CONFLICT ({key}) DO UPDATE SET n = n + {delta};"
)
COUNT_TRIGGERS = (
    f"CREATE TABLE IF NOT EXISTS row_counts ({_COUNT_KEY}, n INTEGER, PRIMARY KEY ({_COUNT_KEY}))",
    "CREATE TRIGGER IF NOT EXISTS rows_counted_in AFTER INSERT ON rows BEGIN "
    + _BUMP.format(key=_COUNT_KEY, row="new", delta=1)
    + " END",
    "CREATE TRIGGER IF NOT EXISTS rows_counted_out AFTER DELETE ON rows BEGIN "
    + _BUMP.format(key=_COUNT_KEY, row="old", delta=-1)
    + " END",
    "CREATE TRIGGER IF NOT EXISTS rows_recounted AFTER UPDATE OF status, started_at ON rows "
    "WHEN old.status IS NOT new.status OR (old.started_at IS NULL) <> (new.started_at IS NULL) "
    "BEGIN "
    + _BUMP.format(key=_COUNT_KEY, row="old", delta=-1)
    + " "
    + _BUMP.format(key=_COUNT_KEY, row="new", delta=1)
    + " END",
)


class SqliteStore(SqliteServerLeases, SqliteHistory):
    """The embedded store: one file in WAL mode, one connection per process.

    Threads share the connection under a re-entrant lock (SQLite serialises
    writers anyway); other processes are kept apart by SQLite's own locks,
    so runners in several processes can share one file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._depth = 0
        self.writes = 0  # statements that changed data, for the benchmarks
        self._conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._tx() as db:
            db.execute(
                f"CREATE TABLE IF NOT EXISTS updates ({UPDATE_CODEC.columns()}, "
                'PRIMARY KEY ("name"))'
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS rows (update_name TEXT, {ROW_CODEC.columns()}, "
                'PRIMARY KEY (update_name, "idx"))'
            )
            for statement in SQLITE_SCHEMA:  # server leases, and rows by server
                db.execute(statement)
            db.execute(
                f"CREATE TABLE IF NOT EXISTS servers ({SERVER_CODEC.columns()}, "
                'PRIMARY KEY ("name"))'
            )
            for table, codec in (("updates", UPDATE_CODEC), ("rows", ROW_CODEC)):
                add_missing_columns(db, table, codec)
            add_missing_columns(db, "servers", SERVER_CODEC)
            # The tally's queries: counts per status from the index alone, and
            # the next rows of a status in idx order without sorting them all.
            db.execute(
                "CREATE INDEX IF NOT EXISTS rows_by_status "
                'ON rows (update_name, status, "idx", started_at)'
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS rows_by_step ON rows (update_name, status, step)"
            )
            counted = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='row_counts'"
            ).fetchone()
            for sql in COUNT_TRIGGERS:
                db.execute(sql)
            if not counted:  # a store made before the counters: count its rows once
                db.execute(
                    f"INSERT INTO row_counts ({_COUNT_KEY}, n) SELECT update_name, status, "
                    "started_at IS NOT NULL, COUNT(*) FROM rows GROUP BY 1, 2, 3"
                )

    # connections and transactions
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def _read(self, sql: str, params: list[Any]) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Serialise update-level decisions (one writer at a time in SQLite)."""
        return self._tx()  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, params: list[Any]) -> int:
        with self._tx() as db:
            count = db.execute(sql, params).rowcount
            self.writes += 1
        return count

    # updates
    def get_update(self, name: str) -> Update:
        found = next(
            iter(self._read(f'SELECT {UPDATE_CODEC.select} FROM updates WHERE "name"=?', [name])),
            None,
        )
        if found is None:
            raise NotFound(f"no update named {name!r}")
        return UPDATE_CODEC.from_row(found)

    def insert_update(self, update: Update, rows: list[Row]) -> Update:
        if not update.name:
            update = update.copy(name=f"AU-{uuid.uuid4().hex[:10]}")
        names = UPDATE_CODEC.names
        with self._tx():
            self._write(
                f"INSERT INTO updates ({', '.join(map(_q, names))}) VALUES ({_marks(names)})",
                UPDATE_CODEC.to_row(update, names),
            )
            self.replace_rows(update.name, rows)
        return update

    def save_update(self, update: Update, changed: Iterable[str]) -> None:
        names = UPDATE_CODEC.check(changed)
        if not names:
            return
        sets = ", ".join(f"{_q(n)}=?" for n in names)
        params = [*UPDATE_CODEC.to_row(update, names), update.name]
        if not self._write(f'UPDATE updates SET {sets} WHERE "name"=?', params):
            raise NotFound(f"no update named {update.name!r}")

    def unfinished_updates(self) -> list[str]:
        found = self._read(
            "SELECT name FROM updates WHERE status IN ('Planning', 'Running', 'Paused')", []
        )
        return [r["name"] for r in found]

    # rows
    def get_rows(self, name: str, fields: Sequence[str] | None = None) -> list[Row]:
        if fields:
            names = ROW_CODEC.check(fields)
            found = self._read(
                f'SELECT {", ".join(map(_q, names))} FROM rows WHERE update_name=? ORDER BY "idx"',
                [name],
            )
            return [ROW_CODEC.from_some(names, r) for r in found]
        found = self._read(
            f'SELECT {ROW_CODEC.select} FROM rows WHERE update_name=? ORDER BY "idx"', [name]
        )
        return [ROW_CODEC.from_row(r) for r in found]

    def tally(self, name: str, limit: int) -> Tally:
        """Counts per status and the few rows a decision needs, by indexed queries."""
        names = ROW_CODEC.check(DECISION_FIELDS)
        cols = ", ".join(map(_q, names))

        def rows(
            where: str, params: list[Any], cap: int | None = None, index: str = ""
        ) -> list[Row]:
            # Named index: without statistics SQLite would walk the primary key for the order.
            source = f"rows INDEXED BY {index}" if index else "rows"
            sql = f"SELECT {cols} FROM {source} WHERE update_name=? AND {where}"
            if cap is not None:
                sql += f' ORDER BY "idx" LIMIT {int(cap)}'
            return [ROW_CODEC.from_some(names, r) for r in self._read(sql, [name, *params])]

        with self._lock:
            counts = self._read(
                "SELECT status, SUM(n), SUM(CASE WHEN started THEN n ELSE 0 END) "
                "FROM row_counts WHERE update_name=? GROUP BY status",
                [name],
            )
            flight = [s.value for s in IN_FLIGHT_ROW_STATUSES]
            active = rows(f"status IN ({_marks(flight)})", flight, index="rows_by_step") + rows(
                "status=? AND step=?",
                [RowStatus.PENDING.value, Step.PRECHECK.value],
                index="rows_by_step",
            )
            active.sort(key=lambda r: r.idx)
            pending = rows(
                "status=? AND step<>?",
                [RowStatus.PENDING.value, Step.PRECHECK.value],
                limit,
                "rows_by_status",
            )
            first = {}
            for status in HALTING_STATUSES:
                found = rows("status=?", [status.value], 1, "rows_by_status")
                if found:
                    first[status] = found[0]
            rollbackable = rows(
                "status=? AND rollback_commit<>''",
                [RowStatus.SUCCESS.value],
                limit,
                "rows_by_status",
            )
        return Tally.from_counts(
            counts, active=active, pending=pending, first=first, rollbackable=rollbackable
        )

    def row_times(self, name: str) -> RowTimes:
        """Last end and mean time per server (a scan: for ETA and the tick, not per row)."""
        found = self._read(
            "SELECT MAX(ended_at), AVG(CASE WHEN started_at IS NOT NULL AND ended_at IS NOT NULL "
            "AND status<>? THEN ended_at - started_at END), SUM(started_at IS NOT NULL "
            "AND ended_at IS NOT NULL AND status<>?) FROM rows WHERE update_name=?",
            [RowStatus.SKIPPED.value, RowStatus.SKIPPED.value, name],
        )[0]
        return RowTimes(found[0], found[1], int(found[2] or 0))

    def get_row(self, name: str, idx: int) -> Row:
        sql = f'SELECT {ROW_CODEC.select} FROM rows WHERE update_name=? AND "idx"=?'
        found = next(iter(self._read(sql, [name, idx])), None)
        if found is None:
            raise NotFound(f"no row {idx} in update {name!r}")
        return ROW_CODEC.from_row(found)

    def replace_rows(self, name: str, rows: list[Row]) -> None:
        names = ROW_CODEC.names
        columns = ", ".join(map(_q, names))
        sql = f"INSERT INTO rows (update_name, {columns}) VALUES (?, {_marks(names)})"
        with self._tx() as db:
            db.execute("DELETE FROM rows WHERE update_name=?", [name])
            for row in rows:
                db.execute(sql, [name, *ROW_CODEC.to_row(row, names)])
        self.writes += 1 + len(rows)

    def save_row(
        self, name: str, row: Row, changed: Iterable[str], owner: str | None = None
    ) -> None:
        names = ROW_CODEC.check(changed)
        if not names:
            return
        sets = ", ".join(f"{_q(n)}=?" for n in names)
        sql = f'UPDATE rows SET {sets} WHERE update_name=? AND "idx"=?'
        params = [*ROW_CODEC.to_row(row, names), name, row.idx]
        if owner is not None:
            sql += " AND lease_owner=?"
            params.append(owner)
        if not self._write(sql, params):
            if owner is not None:
                raise LeaseLost(f"row {row.idx} of {name} is no longer held by {owner}")
            raise NotFound(f"no row {row.idx} in update {name!r}")

    def claim_row(self, name: str, idx: int, owner: str, now: float, ttl: float) -> bool:
        return bool(
            self._write(
                'UPDATE rows SET lease_owner=?, lease_expires=? WHERE update_name=? AND "idx"=? '
                "AND (lease_owner IS NULL OR lease_owner='' OR lease_owner=? "
                "OR lease_expires IS NULL OR lease_expires<=?)",
                [owner, now + ttl, name, idx, owner, now],
            )
        )

    def release_row(self, name: str, idx: int, owner: str) -> None:
        self._write(
            "UPDATE rows SET lease_owner='', lease_expires=NULL "
            'WHERE update_name=? AND "idx"=? AND lease_owner=?',
            [name, idx, owner],
        )

    # servers
    def save_server(self, server: Server) -> None:
        """Insert or replace a registry entry; ValidationError names a bad field."""
        server = rules.validate_server(server)
        names = SERVER_CODEC.names
        columns = ", ".join(map(_q, names))
        self._write(
            f"INSERT OR REPLACE INTO servers ({columns}) VALUES ({_marks(names)})",
            SERVER_CODEC.to_row(server, names),
        )

    def get_server(self, name: str) -> Server | None:
        found = next(
            iter(self._read(f'SELECT {SERVER_CODEC.select} FROM servers WHERE "name"=?', [name])),
            None,
        )
        return None if found is None else SERVER_CODEC.from_row(found)

    def list_servers(self) -> list[Server]:
        found = self._read(f'SELECT {SERVER_CODEC.select} FROM servers ORDER BY "name"', [])
        return [SERVER_CODEC.from_row(r) for r in found]
