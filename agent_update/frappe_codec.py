"""Translation between the engine's dataclasses and the Agent Rollout doctypes.

One table per dataclass maps an engine field to its doc field and says how
the value travels: timeouts are minutes on the form and seconds in the
engine, display times are Datetimes on the form and epoch floats in the
engine, and engine-only times stay floats (0 meaning "none", because Frappe
Float columns are NOT NULL). The store, the controllers and the realtime
payloads all go through here, so the two vocabularies never drift apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, get_type_hints
from zoneinfo import ZoneInfo

import frappe
from frappe.utils import cint, cstr, flt, get_datetime, get_system_timezone

from agent_update.rollout.model import Row, Server, Update

UPDATE_DOCTYPE = "Agent Rollout"
ROW_DOCTYPE = "Agent Rollout Server"
TYPE_DOCTYPE = "Agent Update Server Type"
SERVER_DOCTYPE = "Agent Server"
SETTINGS_DOCTYPE = "Agent Update Settings"


@dataclass(frozen=True)
class Column:
    """One engine field stored in one doc field."""

    field: str  # engine name
    column: str  # doc fieldname
    kind: str  # text, bool, int, float, opt_float, minutes, datetime, enum
    enum: type[Enum] | None = None

    def to_doc(self, value: Any) -> Any:
        if self.kind == "enum":
            return value.value if isinstance(value, Enum) else cstr(value)
        if self.kind == "bool":
            return 1 if value else 0
        if self.kind == "minutes":
            return flt(value) / 60.0
        if self.kind == "opt_float":
            return 0.0 if value is None else float(value)
        if self.kind == "datetime":
            return to_datetime(value)
        if self.kind == "int":
            return cint(value)
        if self.kind == "float":
            return flt(value)
        return "" if value is None else cstr(value)

    def from_doc(self, value: Any) -> Any:
        if self.kind == "enum":
            assert self.enum is not None
            return self.enum(cstr(value))
        if self.kind == "bool":
            return bool(cint(value))
        if self.kind == "minutes":
            return flt(value) * 60.0
        if self.kind == "opt_float":
            return float(value) if value else None
        if self.kind == "datetime":
            return to_epoch(value)
        if self.kind == "int":
            return cint(value)
        if self.kind == "float":
            return flt(value)
        return cstr(value)


def _columns(cls: type, renames: Mapping[str, str], kinds: Mapping[str, str]) -> dict[str, Column]:
    """Columns for every dataclass field, kinds derived from the type hints."""
    out: dict[str, Column] = {}
    for name, hint in get_type_hints(cls).items():
        if name in kinds and kinds[name] == "skip":
            continue
        enum = hint if isinstance(hint, type) and issubclass(hint, Enum) else None
        if name in kinds:
            kind = kinds[name]
        elif enum is not None:
            kind = "enum"
        elif hint is bool:
            kind = "bool"
        elif hint is int:
            kind = "int"
        elif hint is float:
            kind = "float"
        elif "float" in str(hint):
            kind = "opt_float"
        else:
            kind = "text"
        out[name] = Column(name, renames.get(name, name), kind, enum)
    return out


UPDATE_COLUMNS = _columns(
    Update,
    {
        "commit": "commit_hash",
        "exclude_self_hosted": "exclude_self_hosted_servers",
        "restart_web": "restart_web_workers",
        "restart_rq": "restart_rq_workers",
        "startup_timeout": "agent_startup_timeout_minutes",
        "command_timeout": "command_timeout_minutes",
        "auto_rollback": "auto_rollback_changes",
        "rollback_to_specific": "rollback_to_specific_commit",
        "rollback_commit": "default_rollback_commit",
        "test_mode": "run_on_fewer_servers_and_pause",
        "test_mode_count": "no_of_servers_to_update_initially",
        "paused_for_test_mode": "paused_due_to_test_mode",
        "started_at": "start",
        "ended_at": "end",
        "why_stuck": "stuck_at_planning_reason",
        "deadline_at": "deadline",
        "start_at": "scheduled_start",
        "window": "maintenance_window",
    },
    {
        "server_types": "skip",  # a child table of its own
        "startup_timeout": "minutes",
        "command_timeout": "minutes",
        "started_at": "datetime",
        "ended_at": "datetime",
        "deadline_at": "datetime",
        "start_at": "datetime",
        "approved_at": "datetime",
    },
)
ROW_COLUMNS = _columns(
    Row,
    {"started_at": "start", "ended_at": "end"},
    {"started_at": "datetime", "ended_at": "datetime"},
)
SERVER_COLUMNS = _columns(Server, {}, {"agent_password": "skip"})

# Engine-owned fields: written by the runner, never by a form save.
ENGINE_UPDATE_FIELDS = (
    "status",
    "halted",
    "halt_reason",
    "started_at",
    "ended_at",
    "why_stuck",
    "overlap_warning",
    "split_from",
    "paused_for_test_mode",
    "lease_owner",
    "lease_expires",
    # waves, abort and the stall alert
    "wave",
    "wave_started",
    "wave_base_succeeded",
    "wave_base_failed",
    "gate_override",
    "paused_at_gate",
    "pause_reason",
    "aborted",
    "abort_rollback",
    "abort_reason",
    "stall_notified_at",
    # schedule and approval: written by the engine (Start, Approve, the window)
    "waiting_reason",
    "start_requested_by",
    "approved_by",
    "approved_at",
)
ENGINE_ROW_FIELDS = tuple(n for n in ROW_COLUMNS if n not in ("idx", "server", "server_type"))
# What an operator may edit while the update is Draft or Pending.
CONFIG_FIELDS = tuple(
    n for n in UPDATE_COLUMNS if n not in (*ENGINE_UPDATE_FIELDS, "name", "commit_message")
)


# ------------------------------------------------------------------- times


def _zone() -> ZoneInfo:
    return ZoneInfo(get_system_timezone())


def to_datetime(epoch: float | None) -> dt.datetime | None:
    """Epoch seconds -> naive Datetime in the system time zone (what the desk shows)."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, _zone()).replace(tzinfo=None)


def to_epoch(value: Any) -> float | None:
    """A Datetime of the system time zone (or its text) -> epoch seconds."""
    if not value:
        return None
    return get_datetime(value).replace(tzinfo=_zone()).timestamp()


# --------------------------------------------------------------- converters


def _get(source: Any, column: str) -> Any:
    return source.get(column) if hasattr(source, "get") else getattr(source, column, None)


def update_from(source: Any, server_types: Iterable[str] = ()) -> Update:
    """An Update from a doc or a DB row dict (server types passed separately)."""
    values = {n: c.from_doc(_get(source, c.column)) for n, c in UPDATE_COLUMNS.items()}
    values["server_types"] = tuple(t for t in server_types if t)
    return Update(**values)


def update_from_doc(doc: Any) -> Update:
    return update_from(doc, [cstr(d.server_type).strip() for d in doc.get("server_types") or []])


def row_from(source: Any, names: Iterable[str] | None = None) -> Row:
    """A Row from a doc or a DB row; only ``names`` are read when given."""
    chosen = ROW_COLUMNS if names is None else {n: ROW_COLUMNS[n] for n in names}
    return Row(**{n: c.from_doc(_get(source, c.column)) for n, c in chosen.items()})


def server_from(source: Any, password: str = "") -> Server:
    values = {n: c.from_doc(_get(source, c.column)) for n, c in SERVER_COLUMNS.items()}
    return Server(**values, agent_password=password)


def update_values(update: Update, names: Iterable[str]) -> dict[str, Any]:
    """Doc field -> doc value for the engine fields ``names``."""
    return {UPDATE_COLUMNS[n].column: UPDATE_COLUMNS[n].to_doc(getattr(update, n)) for n in names}


DURATION_COLUMN = "duration"  # display only: seconds from the precheck to the row's end


def row_values(row: Row, names: Iterable[str]) -> dict[str, Any]:
    """Doc field -> doc value; a change of a row's times refreshes its Duration too."""
    names = list(names)
    values = {ROW_COLUMNS[n].column: ROW_COLUMNS[n].to_doc(getattr(row, n)) for n in names}
    if "started_at" in names or "ended_at" in names:
        values[DURATION_COLUMN] = row_duration(row)
    return values


def row_duration(row: Row) -> float:
    if row.started_at is None or row.ended_at is None:
        return 0.0
    return round(max(row.ended_at - row.started_at, 0.0), 1)


def row_payload(row: Row) -> dict[str, Any]:
    """What the form needs to redraw one row (no engine-only fields)."""
    hidden = ("deadline", "healthy_since", "pids_before", "command_ended_at", "seen_after")
    shown = [n for n in ROW_COLUMNS if n not in hidden]
    values = row_values(row, shown)
    return {k: (str(v) if isinstance(v, dt.datetime) else v) for k, v in values.items()}


def update_doc_dict(update: Update, rows: list[Row]) -> dict[str, Any]:
    """A full Agent Rollout document (for inserts: split batches, Service.create)."""
    names = [n for n in UPDATE_COLUMNS if n != "name"]
    doc: dict[str, Any] = {"doctype": UPDATE_DOCTYPE, **update_values(update, names)}
    doc["server_types"] = [{"server_type": t} for t in update.server_types]
    doc["servers"] = [{**row_values(r, ROW_COLUMNS), "idx": r.idx} for r in rows]
    return doc


def label(field: str) -> str:
    """The form label of an engine field name (as named by ValidationError)."""
    extra = {"servers": "Servers", "batches": "Number of Batches"}
    if field in extra:
        return extra[field]
    column = UPDATE_COLUMNS[field].column if field in UPDATE_COLUMNS else field
    df = frappe.get_meta(UPDATE_DOCTYPE).get_field(column)
    return df.label if df and df.label else field
