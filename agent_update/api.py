"""Whitelisted methods behind the Agent Rollout form's buttons.

The desk, ``bench --site S execute agent_update.api.<method> --kwargs "{...}"``,
``bench console`` and REST (/api/method/agent_update.api.<method>) all call
these. Each checks the caller's permission, checks with the engine's pure
rules that the action applies now (so a refusal is shown at once), then
enqueues the work on the app's own queue under a fixed job id with
``deduplicate=True``: a double click never runs twice. Pause and Resume
change the update's status in the request itself, under the store's lock,
so they never wait behind a row job; only Resume's kick is queued.
``now=True`` runs the work, and every row it starts, in this process
instead (no worker needed; used by the tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import frappe
from frappe import _
from frappe.utils import cint

from agent_update import frappe_codec as codec
from agent_update.frappe_service import (
    INLINE_FLAG,
    app_queue,
    frappe_errors,
    get_service,
    notify_update,
    queue_info,
)
from agent_update.rollout import commands, history, rules, waves
from agent_update.rollout.model import (
    ENDED_ROW_STATUSES,
    FINAL_UPDATE_STATUSES,
    Row,
    RowStatus,
    Update,
    UpdateStatus,
)
from agent_update.rollout.split import split as split_rows


def _check(name: str | None, ptype: str = "write") -> None:
    frappe.has_permission(codec.UPDATE_DOCTYPE, ptype, doc=name, throw=True)


def _enqueue(action: str, name: str, now: bool, **kwargs: Any) -> dict[str, Any]:
    job_id = f"agent_update::{action}::{name}"
    now = bool(cint(now))
    if now:
        frappe.flags[INLINE_FLAG] = True
    job = frappe.enqueue(
        f"agent_update.tasks.{action}",
        queue=app_queue(),
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
    name: str,
    action: str,
    now: bool,
    applies: Callable[[Update, list[Row]], object],
    kept: Callable[[Update], None] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Permission, then the engine's refusal at once (not later in a job), then what
    the request itself ``kept`` (a queue may lose the job), then the job."""
    _check(name)
    update, rows = _load(name)
    with frappe_errors():
        applies(update, rows)
    if kept is not None:
        kept(update)
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
    """Pending -> Running: the first servers start at once.

    The click is kept in the request itself, as the scheduled start (now): a
    queue loses its jobs when its Redis restarts, and a start job lost so
    would leave the rollout Pending for good; the watchdog tick starts a
    Pending rollout whose scheduled start has come (found by the soak's desk
    door, docs/soak.md).
    """
    return _act(name, "start", now, _startable, kept=_keep_the_click)


def _keep_the_click(update: Update) -> None:
    """A Start as the scheduled start, now (unless one has come already)."""
    clicked = time.time()
    if update.start_at is None or update.start_at > clicked:
        frappe.db.set_value(
            codec.UPDATE_DOCTYPE,
            update.name,
            "scheduled_start",
            codec.to_datetime(clicked),
            update_modified=False,  # an open form stays saveable
        )


@frappe.whitelist()
def approve(name: str) -> dict[str, Any]:
    """Approve an update that requires it, as the current user (never the one who asked to start).

    A start already asked for goes ahead at once (or at its scheduled time).
    """
    _check(name)
    with frappe_errors():
        update = get_service().approve(name, frappe.session.user)
    _note(name, _("approved this update"))
    notify_update(name, update.status.value)
    return {"name": name, "job_id": None, "queued": False, "status": update.status.value}


@frappe.whitelist()
def pause(name: str, now: bool = False) -> dict[str, Any]:
    """Running -> Paused, stored before this returns: in-flight servers finish, none starts."""
    _check(name)
    with frappe_errors():
        update = get_service().pause(name)
    _note(name, _("paused this update"))
    notify_update(name, update.status.value)
    return {"name": name, "job_id": None, "queued": False, "status": update.status.value}


@frappe.whitelist()
def resume(name: str, now: bool = False) -> dict[str, Any]:
    """Paused (by hand or by test mode) -> Running at once; the kick that starts rows is queued."""
    _check(name)
    with frappe_errors():
        get_service().resume(name, kick=False)
    _note(name, _("resumed this update"))
    notify_update(name)
    return _done_now(_enqueue("kick", name, now))


def _note(name: str, what: str) -> None:
    """Who paused or resumed, on the update's timeline (the comment's owner)."""
    frappe.get_doc(
        {
            "doctype": "Comment",
            "comment_type": "Info",
            "reference_doctype": codec.UPDATE_DOCTYPE,
            "reference_name": name,
            "content": what,  # the timeline puts the user's name before it
            "comment_email": frappe.session.user,
        }
    ).insert(ignore_permissions=True)
    frappe.db.commit()


@frappe.whitelist()
def abort(name: str, rollback: bool = False, reason: str = "", now: bool = False) -> dict[str, Any]:
    """Pending/Running/Paused -> stops for good: servers in flight finish, none starts.

    With ``rollback``, the servers this update changed are rolled back before
    it ends Aborted. Unlike Pause, there is no Resume.
    """
    _check(name)
    back, why = bool(cint(rollback)), (reason or "").strip()
    if not why:
        why = f"aborted by {frappe.session.user}"
    with frappe_errors():  # stored before this returns; only the wind-down is queued
        get_service().abort(name, rollback=back, reason=why, kick=False)
    _note(name, _("aborted this update: {0}").format(why))
    notify_update(name)
    return _done_now(_enqueue("kick", name, now))


def _done_now(out: dict[str, Any]) -> dict[str, Any]:
    """The action took effect in this request; only the kick that follows is queued."""
    return {**out, "queued": False, "kick_queued": out.get("queued", False)}


@frappe.whitelist()
def eta(name: str) -> dict[str, Any]:
    """Expected time left, from the servers so far and the waves to come."""
    _check(name, "read")
    service = get_service()
    with frappe_errors():
        update = service.store.get_update(name)
        found = service.eta(name)
    now = time.time()
    # While paused no clock runs: an end time would already lie in the past.
    paused = update.status is UpdateStatus.PAUSED
    ends = None if found.seconds_left is None or paused else now + found.seconds_left
    sizes = waves.parse_waves(update.waves)
    return {
        "name": name,
        "seconds_left": found.seconds_left,
        "per_server": found.per_server,
        "rounds": found.rounds,
        "ends_at": str(codec.to_datetime(ends)) if ends is not None else None,
        "text": found.text(now),
        "wave": update.wave if update.wave <= len(sizes) else None,
        "wave_count": len(sizes),
        "waves": update.waves,
        "wave_text": waves.describe(update, service.store.tally(name, 0).to_run) if sizes else "",
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
def undo(name: str, now: bool = False) -> dict[str, Any]:
    """From a finished update: new updates taking every server it changed back (rollout.history).

    One per commit to go back to, with the original's settings; each is
    created here and planned by a job (Build Plan), then started like any other.
    """
    _check(name, "read")
    frappe.has_permission(codec.UPDATE_DOCTYPE, "create", throw=True)
    with frappe_errors():
        updates, left_out = get_service().undo(name, plan=False)
    made = [u.name for u in updates]
    _note(name, _("undone by {0}").format(", ".join(made)))
    for new in made:
        _enqueue("build_plan", new, now)
    left = [f"{server}: {why}" for server, why in left_out]
    return {"name": name, "updates": made, "left_out": left, "queued": not now, "status": None}


@frappe.whitelist()
def server_history(server: str) -> list[dict[str, Any]]:
    """Every row that named ``server``, newest first: update, from, to, what ran, how it ended."""
    frappe.has_permission(codec.UPDATE_DOCTYPE, "read", throw=True)
    store = get_service().store
    names = frappe.get_all(
        codec.ROW_DOCTYPE,
        filters={"server": server, "parenttype": codec.UPDATE_DOCTYPE},
        pluck="parent",
        distinct=True,
    )
    entries = []
    with frappe_errors():
        for name in names:
            update = store.get_update(name)
            rows = [r for r in store.get_rows(name) if r.server == server]
            entries += [history.entry(update, r) for r in rows]
    return [e.as_dict() for e in history.sort_newest_first(entries)]


@frappe.whitelist()
def tick(now: bool = False) -> list[str]:
    """What the scheduler does every minute: resume rollouts a dead worker left."""
    _check(None)
    if cint(now):
        frappe.flags[INLINE_FLAG] = True
    return get_service().tick()


@frappe.whitelist()
def create(**fields: Any) -> str:
    """Insert an Agent Rollout (Save fills source and servers); returns its name.

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


ROW_STATE_FIELDS = (
    "idx",
    "status",
    "agent_status",
    "reason",
    "reported_commit",
    "start",
    "end",
    codec.DURATION_COLUMN,
)


@frappe.whitelist()
def state(name: str) -> dict[str, Any]:
    """What the form polls without realtime: the stored status and each row's shown fields."""
    _check(name, "read")
    parent = frappe.db.get_value(
        codec.UPDATE_DOCTYPE,
        name,
        ["status", "halted", "halt_reason", "stuck_at_planning_reason", "progress", "modified"],
        as_dict=True,
    )
    if not parent:
        raise frappe.DoesNotExistError(f"{codec.UPDATE_DOCTYPE} {name} not found")
    rows = frappe.get_all(
        codec.ROW_DOCTYPE,
        filters={"parent": name, "parenttype": codec.UPDATE_DOCTYPE, "parentfield": "servers"},
        fields=list(ROW_STATE_FIELDS),
        order_by="idx asc",
    )
    return {
        "name": name,
        **parent,
        "final": parent["status"] in FINAL_STATUSES,
        "rows": rows,
        "queue_warning": queue_warning(name),
    }


FINAL_STATUSES = tuple(s.value for s in UpdateStatus if s in FINAL_UPDATE_STATUSES)


def form_statuses() -> dict[str, list[str]]:
    """The engine's status lists the form needs (sent in the form's onload, not copied in JS)."""
    return {
        "final": list(FINAL_STATUSES),
        "ended_rows": [s.value for s in RowStatus if s in ENDED_ROW_STATUSES],
    }


def queue_warning(name: str) -> str:
    """Why this update may run slower than its lanes say, or "" (unfinished updates only)."""
    status, lanes = frappe.db.get_value(codec.UPDATE_DOCTYPE, name, ["status", "lanes"])
    if status in FINAL_STATUSES:
        return ""
    return queue_info().warning(cint(lanes) or 1)


@frappe.whitelist(methods=["POST"])
def set_ssh_private_key(key: str = "") -> dict[str, str]:
    """Check, encrypt and store a pasted key (empty: remove it); only its fingerprint returns."""
    frappe.has_permission(codec.SETTINGS_DOCTYPE, "write", throw=True)
    settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
    settings.ssh_private_key = key or ""
    settings.save()
    return {"fingerprint": settings.ssh_key_fingerprint or ""}
