"""Agent Rollout: one rollout. The controller only translates to the engine.

Save: defaults and rules come from the engine (``Service.prepare``: repo and
branch from the settings, the commit and its message from the branch head,
every rule checked and reported by its label), and an empty servers table is
filled from the registry (``commands.rows_from_registry``).

Engine-owned fields (statuses, times, leases, logs) are written by the
runner straight to the database, never through this document. A form opened
earlier carries stale copies of them. Two guards keep such a copy from
writing them back:

- the store sets the update's ``modified`` whenever the engine changes the
  update itself, ends a row or replaces the rows (Build Plan, Split), so
  Frappe's own check refuses a form opened before that ("refresh");
- for what slips past it (row steps do not touch ``modified``), every save
  re-reads the update under row locks: engine fields are kept as stored, a
  row the database no longer has (replaced by Split or Build Plan) refuses
  the save with "reload", in Pending rows may only be removed, and once the
  update has left Draft and Pending its source, config and servers can no
  longer change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import frappe
from frappe import _
from frappe.model.document import Document
from frappe.utils import flt

from agent_update import frappe_codec as codec
from agent_update import frappe_registry as registry
from agent_update.frappe_service import frappe_errors, get_service
from agent_update.rollout import commands
from agent_update.rollout.model import ENDED_ROW_STATUSES, Row

EDITABLE = ("Draft", "Pending")
SOURCE = ("repo", "branch", "commit_hash")


@dataclass
class Stored:
    """The update as the database has it now (read with locks)."""

    parent: dict[str, Any]
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    types: list[str] = field(default_factory=list)


class AgentRollout(Document):
    def onload(self) -> None:
        """The engine's status lists, and the warning when the queue cannot carry the lanes."""
        from agent_update.api import form_statuses, queue_warning

        self.set_onload("statuses", form_statuses())
        if not self.is_new():
            self.set_onload("queue_warning", queue_warning(self.name))

    def validate(self) -> None:
        if self.flags.from_engine:  # split batches: already checked by the engine
            self.set_progress()
            return
        stored = None if self.is_new() else _read_locked(self.name)
        if stored is not None:
            _refuse_stale_rows(self, stored)
            if stored.parent["status"] not in EDITABLE:
                _refuse_changes(self, stored)
            elif stored.parent["status"] == "Pending":
                _refuse_planned_row_edits(self, stored)
            _keep_engine_state(self, stored)
        else:  # rows listed before the first save (the form, REST, Data Import)
            _fresh_rows(self)
        if self.status in EDITABLE:
            self.prepare(stored)
        self.set_progress()

    def on_trash(self) -> None:
        if self.status in ("Planning", "Running", "Paused"):
            frappe.throw(
                _("{0} is {1}: pause it and let its servers finish first.").format(
                    self.name, _(self.status)
                )
            )

    def prepare(self, stored: Stored | None) -> None:
        """Defaults, the engine's rules and source resolution; then the servers."""
        self.fill_defaults()
        service = get_service()
        with frappe_errors():
            update = service.prepare(codec.update_from_doc(self))
        for name in ("repo", "branch", "commit", "commit_message", "rollback_commit"):
            column = codec.UPDATE_COLUMNS[name]
            self.set(column.column, column.to_doc(getattr(update, name)))
        moved = stored and any(stored.parent.get(c) != self.get(c) for c in SOURCE)
        if moved and stored.parent["status"] == "Pending":
            self.status = "Draft"
            self.stuck_at_planning_reason = _("The source changed: run Build Plan again.")
        if not self.servers:
            for row in commands.rows_from_registry(update, service.store.list_servers()):
                self.append("servers", codec.row_values(row, codec.ROW_COLUMNS))
        for idx, row in enumerate(self.servers, start=1):
            row.idx = idx
        self.set_registries()

    def set_registries(self) -> None:
        """Each row's registry doctype; a server the registry does not know is refused."""
        kinds = registry.doctypes_of(r.server for r in self.servers)
        unknown = [r.server for r in self.servers if r.server not in kinds and _is_new_row(r)]
        if unknown:
            frappe.throw(
                _("{0}: not in the server registry: {1}").format(
                    _(self.meta.get_label("servers")), ", ".join(sorted(set(unknown)))
                )
            )
        for row in self.servers:
            row.server_doctype = kinds.get(row.server) or row.server_doctype or ""

    def fill_defaults(self) -> None:
        """Timeouts and lanes from Agent Update Settings where left empty."""
        settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
        defaults = {
            "agent_startup_timeout_minutes": flt(settings.default_agent_startup_timeout) or 10,
            "command_timeout_minutes": flt(settings.default_command_timeout) or 30,
            "lanes": settings.default_lanes or 1,
        }
        for fieldname, value in defaults.items():
            if not self.get(fieldname):
                self.set(fieldname, value)
        if self.is_new() and self.get("bake_time") is None:
            self.bake_time = flt(settings.default_bake_time)

    def set_progress(self) -> None:
        ended = {s.value for s in ENDED_ROW_STATUSES}
        rows = self.servers or []
        done = sum(1 for r in rows if r.status in ended)
        self.progress = round(100.0 * done / len(rows), 1) if rows else 0  # 33.3, not 33.333


def _read_locked(name: str) -> Stored:
    """Latest committed values, locked until this save commits (runner writes wait)."""
    parent = frappe.db.sql(
        "SELECT * FROM `tabAgent Rollout` WHERE name=%s FOR UPDATE", name, as_dict=True
    )
    rows = frappe.db.sql(
        "SELECT * FROM `tabAgent Rollout Server` WHERE parent=%s AND parenttype='Agent Rollout' "
        "AND parentfield='servers' FOR UPDATE",
        name,
        as_dict=True,
    )
    types = frappe.db.sql_list(
        "SELECT server_type FROM `tabAgent Update Server Type` WHERE parent=%s ORDER BY idx", name
    )
    return Stored(parent=parent[0] if parent else {}, rows={r.name: r for r in rows}, types=types)


def _keep_engine_state(doc: AgentRollout, stored: Stored) -> None:
    for name in codec.ENGINE_UPDATE_FIELDS:
        column = codec.UPDATE_COLUMNS[name].column
        doc.set(column, stored.parent.get(column))
    _fresh_rows(doc, stored.rows)


def _fresh_rows(doc: AgentRollout, stored: dict[str, dict[str, Any]] | None = None) -> None:
    """Rows keep their stored engine fields; a row the database does not have gets a new
    row's (never NULL: the engine's queries read an empty step as "not started")."""
    fresh = codec.row_values(Row(idx=0, server=""), codec.ENGINE_ROW_FIELDS)
    for row in doc.servers:
        source = (stored or {}).get(row.name) if row.name else None
        for name in codec.ENGINE_ROW_FIELDS:
            column = codec.ROW_COLUMNS[name].column
            row.set(column, source.get(column) if source else fresh[column])
        row.set(codec.DURATION_COLUMN, source.get(codec.DURATION_COLUMN) if source else 0)


def _is_new_row(row: Any) -> bool:
    return not row.name or bool(row.is_new())


def _row_key(row: Any) -> tuple[str, str]:
    return (row.get("server") or "", row.get("server_type") or "")


def _refuse_stale_rows(doc: AgentRollout, stored: Stored) -> None:
    """A row the database no longer has: the form predates Split or Build Plan."""
    gone = [r for r in doc.servers if not _is_new_row(r) and r.name not in stored.rows]
    if gone:
        frappe.throw(
            _(
                "{0} changed since this form was opened: its servers were replaced "
                "(Split Update or Build Plan) and {1} of the rows shown no longer exist. "
                "Reload the form and make your change again."
            ).format(doc.name, len(gone)),
            exc=frappe.TimestampMismatchError,
            title=_("Reload"),
        )


def _refuse_planned_row_edits(doc: AgentRollout, stored: Stored) -> None:
    """Pending: a server may be left out of the plan, not added or changed."""
    added = [r.server for r in doc.servers if _is_new_row(r)]
    changed = [
        r.server
        for r in doc.servers
        if not _is_new_row(r) and _row_key(r) != _row_key(stored.rows[r.name])
    ]
    if added or changed:
        frappe.throw(
            _("{0} is planned: a server can be removed, not added or changed ({1}).").format(
                doc.name, ", ".join(added + changed)
            ),
            title=_("Read Only"),
        )


def _refuse_changes(doc: AgentRollout, stored: Stored) -> None:
    """Once started, nothing an operator types may reach the engine's inputs."""
    before = codec.update_from(stored.parent, stored.types)
    after = codec.update_from_doc(doc)
    changed = [n for n in codec.CONFIG_FIELDS if getattr(before, n) != getattr(after, n)]
    if before.server_types != after.server_types:
        changed.append("server_types")
    servers_before = sorted((n, r.idx, *_row_key(r)) for n, r in stored.rows.items())
    servers_after = sorted((r.name, r.idx, *_row_key(r)) for r in doc.servers)
    if servers_before != servers_after:
        changed.append("servers")
    if changed:
        labels = ", ".join(_(codec.label(n)) for n in changed)
        frappe.throw(
            _("{0} is {1}: its source, config and servers can no longer change ({2}).").format(
                doc.name, _(stored.parent["status"]), labels
            ),
            title=_("Read Only"),
        )
