"""Whitelisted methods behind the Agent Update form's buttons.

The desk, ``bench --site S execute agent_update.api.<method> --kwargs "{...}"``,
``bench console`` and REST (/api/method/agent_update.api.<method>) all call
these. Each checks the caller's permission, checks with the engine's pure
rules that the action applies now (so a refusal is shown at once), then
enqueues the work under a fixed job id with ``deduplicate=True``: a double
click never runs twice. ``now=True`` runs the action, and every row it
starts, in this process instead (no worker needed; used by the tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import frappe
from frappe.utils import cint

from agent_update import frappe_codec as codec
from agent_update.frappe_service import INLINE_FLAG, frappe_errors, get_service
from agent_update.rollout import commands, rules
from agent_update.rollout.model import Row, Update
from agent_update.rollout.split import split as split_rows

QUEUES = {"build_plan": "long"}  # probing many agents can take a while


def _check(name: str | None, ptype: str = "write") -> None:
    frappe.has_permission(codec.UPDATE_DOCTYPE, ptype, doc=name, throw=True)


def _enqueue(action: str, name: str, now: bool, **kwargs: Any) -> dict[str, Any]:
    job_id = f"agent_update::{action}::{name}"
    now = bool(cint(now))
    if now:
        frappe.flags[INLINE_FLAG] = True
    job = frappe.enqueue(
        f"agent_update.tasks.{action}",
        queue=QUEUES.get(action, "default"),
        job_id=job_id,
        deduplicate=True,
        now=now,
        name=name,
        **kwargs,
    )
    status = frappe.db.get_value(codec.UPDATE_DOCTYPE, name, "status")
    out = {"name": name, "job_id": job_id, "queued": not now and job is not None, "status": status}
    if now and isinstance(job, list):
        out["updates"] = job
    return out


def _load(name: str) -> tuple[Update, list[Row]]:
    store = get_service().store
    with frappe_errors():
        return store.get_update(name), store.get_rows(name)


def _act(
    name: str, action: str, now: bool, applies: Callable[[Update, list[Row]], object], **kwargs: Any
) -> dict[str, Any]:
    """Permission, then the engine's refusal at once (not later in a job), then the job."""
    _check(name)
    update, rows = _load(name)
    with frappe_errors():
        applies(update, rows)
    return _enqueue(action, name, now, **kwargs)


def _plannable(update: Update, rows: list[Row]) -> None:
    rules.validate_update(update, need_commit=True)
    commands.begin_planning(update, "check", time.time(), 60.0)


def _startable(update: Update, rows: list[Row]) -> None:
    rules.validate_update(update, need_commit=True)
    commands.start(update, rows, time.time())


@frappe.whitelist()
def build_plan(name: str, now: bool = False) -> dict[str, Any]:
    """Draft/Pending -> Planning -> Pending (or Draft with why it is stuck)."""
    return _act(name, "build_plan", now, _plannable)


@frappe.whitelist()
def start(name: str, now: bool = False) -> dict[str, Any]:
    """Pending -> Running: the first servers start at once."""
    return _act(name, "start", now, _startable)


@frappe.whitelist()
def pause(name: str, now: bool = False) -> dict[str, Any]:
    """Running -> Paused: servers in flight finish, no new one starts."""
    return _act(name, "pause", now, lambda update, _rows: commands.pause(update))


@frappe.whitelist()
def resume(name: str, now: bool = False) -> dict[str, Any]:
    """Paused (by hand or by test mode) -> Running."""
    return _act(name, "resume", now, lambda update, _rows: commands.resume(update))


@frappe.whitelist()
def abort(name: str, rollback: bool = False, reason: str = "", now: bool = False) -> dict[str, Any]:
    """Pending/Running/Paused -> stops for good: servers in flight finish, none starts.

    With ``rollback``, the servers this update changed are rolled back before
    it ends Aborted. Unlike Pause, there is no Resume.
    """
    back, why = bool(cint(rollback)), (reason or "").strip()
    if not why:
        why = f"aborted by {frappe.session.user}"
    return _act(
        name,
        "abort",
        now,
        lambda update, _rows: commands.abort(update, time.time(), rollback=back, reason=why),
        rollback=back,
        reason=why,
    )


@frappe.whitelist()
def eta(name: str) -> dict[str, Any]:
    """Expected time left, from the servers so far and the waves to come."""
    _check(name, "read")
    service = get_service()
    with frappe_errors():
        update = service.store.get_update(name)
        found = service.eta(name)
    now = time.time()
    ends = None if found.seconds_left is None else now + found.seconds_left
    return {
        "name": name,
        "seconds_left": found.seconds_left,
        "per_server": found.per_server,
        "rounds": found.rounds,
        "ends_at": str(codec.to_datetime(ends)) if ends is not None else None,
        "text": found.text(now),
        "wave": update.wave,
        "waves": update.waves,
    }


@frappe.whitelist()
def force_continue(name: str, now: bool = False) -> dict[str, Any]:
    """Failure / Partial Success: failed servers back to Pending, then Running."""
    return _act(name, "force_continue", now, commands.force_continue)


@frappe.whitelist()
def split(name: str, batches: int, now: bool = False) -> dict[str, Any]:
    """Pending: K balanced batches; the original keeps the first."""
    frappe.has_permission(codec.UPDATE_DOCTYPE, "create", throw=True)
    count = cint(batches)
    return _act(
        name, "split", now, lambda update, rows: split_rows(update, rows, count), batches=count
    )


@frappe.whitelist()
def tick(now: bool = False) -> list[str]:
    """What the scheduler does every minute: resume rollouts a dead worker left."""
    _check(None)
    if cint(now):
        frappe.flags[INLINE_FLAG] = True
    return get_service().tick()


@frappe.whitelist()
def create(**fields: Any) -> str:
    """Insert an Agent Update (Save fills source and servers); returns its name.

    ``server_types`` may be a list of type names; other keys are doc fields.
    """
    frappe.has_permission(codec.UPDATE_DOCTYPE, "create", throw=True)
    fields.pop("cmd", None)
    types = fields.pop("server_types", None) or []
    if isinstance(types, str):
        types = frappe.parse_json(types) if types.startswith("[") else [types]
    doc = frappe.get_doc({"doctype": codec.UPDATE_DOCTYPE, **fields})
    for server_type in types:
        doc.append("server_types", {"server_type": server_type})
    doc.insert()
    return doc.name


@frappe.whitelist()
def summary(name: str) -> dict[str, Any]:
    """Status, progress and each server's state (for scripts and the console)."""
    _check(name, "read")
    update, rows = _load(name)
    done = sum(r.status.ended for r in rows)
    return {
        "name": name,
        "status": update.status.value,
        "halted": update.halted,
        "halt_reason": update.halt_reason,
        "pause_reason": update.pause_reason,
        "aborted": update.aborted,
        "wave": update.wave,
        "why_stuck": update.why_stuck,
        "progress": round(100.0 * done / len(rows), 1) if rows else 0.0,
        "final": update.status.is_final,
        "servers": [
            {
                "server": r.server,
                "status": r.status.value,
                "reason": r.reason,
                "commit": r.reported_commit,
            }
            for r in rows
        ],
    }
