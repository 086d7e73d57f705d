# ruff: noqa: S608 (table and column names come from the codec's fixed maps; values are bound)
"""The engine's Store over frappe.db: one UPDATE per change, leases as compare-and-set.

Every write names the fields that changed and touches one row of one table
(``tabAgent Rollout Server`` WHERE parent AND idx), never ``doc.save()`` of the
whole document, so a transition costs O(1) whatever the number of rows.

Stale forms: every write to the update's own row also sets its ``modified``
(in the same UPDATE), and so does the progress refresh that follows a row's
end and every replacement of the rows (Build Plan, Split). A form opened
before such a change is then refused by Frappe's check of ``modified``
("reload") instead of writing its old copy back. Row steps in between do not
bump it (that would double the writes per step); the controller keeps the
stored engine fields and rows for those saves (agent_update.py).

Transactions: a write outside ``locked()`` commits at once, so other workers
and the desk see it (leases above all) and no row lock is held across the
seconds a command runs. ``locked(name)`` takes SELECT … FOR UPDATE on the
Agent Rollout row and commits on exit; writes inside it commit together.
A thread without a Frappe context (the runner's lease heartbeat) gets a
short-lived connection of its own, since a connection is never shared.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import frappe
from frappe.utils import now as frappe_now

from agent_update import frappe_codec as codec
from agent_update import frappe_registry as registry
from agent_update.frappe_leases import FrappeServerLeases
from agent_update.frappe_log import app_log
from agent_update.frappe_server_queries import FrappeServerQueries
from agent_update.frappe_tables import (
    ENDED,
    IN_FLIGHT,
    ROW_TABLE,
    ROW_WHERE,
    TYPE_TABLE,
    UNFINISHED,
    UPDATE_TABLE,
)
from agent_update.rollout.errors import LeaseLost
from agent_update.rollout.model import (
    Row,
    RowStatus,
    Step,
    Update,
)
from agent_update.rollout.store import NotFound
from agent_update.rollout.tally import DECISION_FIELDS, HALTING_STATUSES, RowTimes, Tally


def _q(column: str) -> str:
    return f"`{column}`"


def _known(names: Iterable[str], known: Iterable[str]) -> None:
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")


def _stamp() -> str:
    """A new ``modified`` for the update: forms opened before it must reload."""
    return frappe_now()


def _has_context() -> bool:
    return getattr(frappe.local, "db", None) is not None


class FrappeStore(FrappeServerQueries, FrappeServerLeases):
    """See rollout.store.Store; ``writes`` counts data-changing statements."""

    def __init__(self) -> None:
        self.site = frappe.local.site
        self.sites_path = os.path.abspath(frappe.local.sites_path)
        self.writes = 0
        self._local = threading.local()

    # ------------------------------------------------------- transactions
    @property
    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        """This thread's connection, or a short-lived one for helper threads."""
        if _has_context():
            yield
            return
        frappe.init(site=self.site, sites_path=self.sites_path)
        try:
            frappe.connect()
            yield
            frappe.db.commit()
        finally:
            frappe.destroy()

    def _commit(self) -> None:
        if not self._depth:
            frappe.db.commit()

    def _write(self, sql: str, values: list[Any]) -> int:
        frappe.db.sql(sql, values)
        self.writes += 1
        return frappe.db._cursor.rowcount

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Serialise update-level decisions across workers (re-entrant per thread)."""
        if self._depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._context():
            frappe.db.commit()  # a fresh transaction: reads below see the latest commits
            found = frappe.db.sql(f"SELECT name FROM {UPDATE_TABLE} WHERE name=%s FOR UPDATE", name)
            if not found:
                frappe.db.rollback()
                raise NotFound(f"no update named {name!r}")
            self._local.depth = 1
            try:
                yield
            except BaseException:
                frappe.db.rollback()
                raise
            else:
                frappe.db.commit()
            finally:
                self._local.depth = 0

    # ------------------------------------------------------------ updates
    def get_update(self, name: str) -> Update:
        with self._context():
            found = frappe.db.sql(f"SELECT * FROM {UPDATE_TABLE} WHERE name=%s", name, as_dict=True)
            if not found:
                raise NotFound(f"no update named {name!r}")
            types = frappe.db.sql_list(
                f"SELECT server_type FROM {TYPE_TABLE} WHERE parent=%s "
                "AND parenttype='Agent Rollout' ORDER BY idx",
                name,
            )
            return codec.update_from(found[0], types)

    def insert_update(self, update: Update, rows: list[Row]) -> Update:
        with self._context():
            values = codec.update_doc_dict(update, rows)
            kinds = registry.doctypes_of(r.server for r in rows)
            for child in values["servers"]:
                child["server_doctype"] = kinds.get(child["server"], "")
            doc = frappe.get_doc(values)
            doc.flags.from_engine = True  # already validated and prepared by the engine
            doc.insert(ignore_permissions=True)
            self.writes += 1 + len(rows) + len(update.server_types)
            self._commit()
            return update.copy(name=doc.name)

    def save_update(self, update: Update, changed: Iterable[str]) -> None:
        names = list(dict.fromkeys(changed))
        _known(names, {*codec.UPDATE_COLUMNS, "server_types"})
        with self._context():
            if not names:
                self._commit()
                return
            if "server_types" in names:
                names.remove("server_types")
                self._replace_types(update)
            values = {**codec.update_values(update, names), "modified": _stamp()}
            sets = ", ".join(f"{_q(c)}=%s" for c in values)
            sql = f"UPDATE {UPDATE_TABLE} SET {sets} WHERE name=%s"
            if not self._write(sql, [*values.values(), update.name]):
                self._must_exist(update.name)
            self._commit()

    def _replace_types(self, update: Update) -> None:
        self._write(f"DELETE FROM {TYPE_TABLE} WHERE parent=%s", [update.name])
        for idx, server_type in enumerate(update.server_types, start=1):
            child = frappe.get_doc(
                {
                    "doctype": codec.TYPE_DOCTYPE,
                    "parent": update.name,
                    "parenttype": codec.UPDATE_DOCTYPE,
                    "parentfield": "server_types",
                    "idx": idx,
                    "server_type": server_type,
                }
            )
            child.db_insert()
            self.writes += 1

    def _must_exist(self, name: str) -> None:
        if not frappe.db.sql(f"SELECT name FROM {UPDATE_TABLE} WHERE name=%s", name):
            raise NotFound(f"no update named {name!r}")

    def unfinished_updates(self) -> list[str]:
        with self._context():
            return frappe.db.sql_list(
                f"SELECT name FROM {UPDATE_TABLE} WHERE status IN %s ORDER BY creation",
                [UNFINISHED],
            )

    def scheduled_updates(self, now: float) -> list[str]:
        """Pending updates whose scheduled start has come (the tick starts them)."""
        with self._context():
            return frappe.db.sql_list(
                f"SELECT name FROM {UPDATE_TABLE} WHERE status='Pending' "
                "AND scheduled_start IS NOT NULL AND scheduled_start <= %s "
                "ORDER BY scheduled_start",
                [codec.to_datetime(now)],
            )

    # --------------------------------------------------------------- rows
    def get_rows(self, name: str, fields: Sequence[str] | None = None) -> list[Row]:
        """All rows, or only ``fields`` of each (a decision need not load every log)."""
        names = list(fields) if fields else list(codec.ROW_COLUMNS)
        _known(names, codec.ROW_COLUMNS)
        columns = ", ".join(f"`{codec.ROW_COLUMNS[n].column}`" for n in names)
        with self._context():
            found = frappe.db.sql(
                f"SELECT {columns} FROM {ROW_TABLE} WHERE {ROW_WHERE} ORDER BY idx",
                name,
                as_dict=True,
            )
            return [codec.row_from(r, names) for r in found]

    def tally(self, name: str, limit: int) -> Tally:
        """Counts per status and the few rows a decision needs (see rollout.tally)."""
        names = list(DECISION_FIELDS)
        columns = ", ".join(f"`{codec.ROW_COLUMNS[n].column}`" for n in names)
        started = _q(codec.ROW_COLUMNS["started_at"].column)

        def rows(where: str, values: list[Any], cap: int | None = None) -> list[Row]:
            sql = f"SELECT {columns} FROM {ROW_TABLE} WHERE {ROW_WHERE} AND {where} ORDER BY idx"
            if cap is not None:
                sql += f" LIMIT {int(cap)}"
            found = frappe.db.sql(sql, [name, *values], as_dict=True)
            return [codec.row_from(r, names) for r in found]

        with self._context():
            counts = frappe.db.sql(
                f"SELECT status, COUNT(*), SUM({started} IS NOT NULL) FROM {ROW_TABLE} "
                f"WHERE {ROW_WHERE} GROUP BY status",
                name,
            )
            pending, precheck = RowStatus.PENDING.value, Step.PRECHECK.value
            active = rows(
                "(status IN %s OR (status=%s AND step=%s))", [IN_FLIGHT, pending, precheck]
            )
            waiting = rows("status=%s AND step<>%s", [pending, precheck], limit)
            first = {}
            for status in HALTING_STATUSES:
                found = rows("status=%s", [status.value], 1)
                if found:
                    first[status] = found[0]
            back = rows(
                "status=%s AND IFNULL(rollback_commit, '')<>''", [RowStatus.SUCCESS.value], limit
            )
        return Tally.from_counts(
            counts, active=active, pending=waiting, first=first, rollbackable=back
        )

    def row_times(self, name: str) -> RowTimes:
        """Last end and mean time per server (a scan: for ETA and the tick, not per row)."""
        start, end = (_q(codec.ROW_COLUMNS[n].column) for n in ("started_at", "ended_at"))
        ran = f"{start} IS NOT NULL AND {end} IS NOT NULL AND status<>%s"
        with self._context():
            found = frappe.db.sql(
                f"SELECT MAX({end}), AVG(CASE WHEN {ran} THEN "
                f"TIMESTAMPDIFF(MICROSECOND, {start}, {end}) END) / 1e6, "
                f"SUM(CASE WHEN {ran} THEN 1 ELSE 0 END) FROM {ROW_TABLE} WHERE {ROW_WHERE}",
                [RowStatus.SKIPPED.value, RowStatus.SKIPPED.value, name],
            )[0]
        mean = None if found[1] is None else float(found[1])
        return RowTimes(codec.to_epoch(found[0]), mean, int(found[2] or 0))

    def get_row(self, name: str, idx: int) -> Row:
        with self._context():
            found = frappe.db.sql(
                f"SELECT * FROM {ROW_TABLE} WHERE {ROW_WHERE} AND idx=%s", [name, idx], as_dict=True
            )
            if not found:
                raise NotFound(f"no row {idx} in update {name!r}")
            return codec.row_from(found[0])

    def save_row(
        self, name: str, row: Row, changed: Iterable[str], owner: str | None = None
    ) -> None:
        names = list(dict.fromkeys(changed))
        _known(names, codec.ROW_COLUMNS)
        if not names:
            return
        values = codec.row_values(row, names)
        sets = ", ".join(f"{_q(c)}=%s" for c in values)
        sql = f"UPDATE {ROW_TABLE} SET {sets} WHERE {ROW_WHERE} AND idx=%s"
        params = [*values.values(), name, row.idx]
        if owner is not None:
            sql += " AND lease_owner=%s"
            params.append(owner)
        with self._context():
            if not self._write(sql, params):
                # MariaDB counts changed rows: 0 may also mean "same values".
                holder = self._lease_owner(name, row.idx)
                if holder is None:
                    raise NotFound(f"no row {row.idx} in update {name!r}")
                if owner is not None and holder != owner:
                    raise LeaseLost(f"row {row.idx} of {name} is no longer held by {owner}")
            self._commit()
            if "status" in names and not row.status.in_flight:  # the ended count may move
                self._progress(name)

    def _lease_owner(self, name: str, idx: int) -> str | None:
        found = frappe.db.sql(
            f"SELECT lease_owner FROM {ROW_TABLE} WHERE {ROW_WHERE} AND idx=%s", [name, idx]
        )
        return (found[0][0] or "") if found else None

    def _progress(self, name: str) -> None:
        """Share of ended rows, for the list view; after the row's own commit (no lock cycle).

        Also the update's new ``modified``: a row ended or the rows were replaced.
        """
        self._write(
            f"UPDATE {UPDATE_TABLE} SET progress=(SELECT ROUND(COALESCE(100 * SUM(status IN %s) "
            f"/ COUNT(*), 0), 1) FROM {ROW_TABLE} WHERE {ROW_WHERE}), modified=%s WHERE name=%s",
            [ENDED, name, _stamp(), name],
        )
        self._commit()

    def replace_rows(self, name: str, rows: list[Row]) -> None:
        with self._context():
            self._write(f"DELETE FROM {ROW_TABLE} WHERE {ROW_WHERE}", [name])
            kinds = registry.doctypes_of(r.server for r in rows)
            for row in rows:
                child = frappe.get_doc(
                    {
                        "doctype": codec.ROW_DOCTYPE,
                        "parent": name,
                        "parenttype": codec.UPDATE_DOCTYPE,
                        "parentfield": "servers",
                        "server_doctype": kinds.get(row.server, ""),
                        **codec.row_values(row, codec.ROW_COLUMNS),
                    }
                )
                child.db_insert()
                self.writes += 1
            self._commit()
            self._progress(name)
            app_log().info(f"{name}: {len(rows)} rows planned")

    def claim_row(self, name: str, idx: int, owner: str, now: float, ttl: float) -> bool:
        """Take (or renew) a row's lease if it is free, expired or already ours."""
        with self._context():
            claimed = self._write(
                f"UPDATE {ROW_TABLE} SET lease_owner=%s, lease_expires=%s "
                f"WHERE {ROW_WHERE} AND idx=%s AND (lease_owner IS NULL OR lease_owner='' "
                "OR lease_owner=%s OR lease_expires IS NULL OR lease_expires<=%s)",
                [owner, now + ttl, name, idx, owner, now],
            )
            if not claimed:
                claimed = self._lease_owner(name, idx) == owner
            self._commit()
            return bool(claimed)

    def release_row(self, name: str, idx: int, owner: str) -> None:
        with self._context():
            self._write(
                f"UPDATE {ROW_TABLE} SET lease_owner='', lease_expires=0 "
                f"WHERE {ROW_WHERE} AND idx=%s AND lease_owner=%s",
                [name, idx, owner],
            )
            self._commit()
