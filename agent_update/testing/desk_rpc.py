"""The desk's side of a soak or a check: a process in a bench's Python that takes calls.

``python -m agent_update.testing.desk_rpc SITE``, run in a sites folder
(testing/desk_site.py starts it), reads one JSON request a line on stdin,
``{"op": NAME, "kwargs": {...}}``, and answers each with one line on stdout
starting ``@@rpc `` (Frappe may print other lines): ``{"ok": true, "value":
BASE64}`` with the result pickled (both sides run this checkout's code), or
``{"ok": false, "error": TEXT}``. Each call sees the database afresh and
commits; after a failed call (the site's MariaDB restarted under it, say) the
next one connects anew. Operations: ``register`` (settings and Agent
Servers of a loopback fleet), ``create`` (a rollout over named servers),
``act`` (an ``agent_update.api`` button, enqueued for the workers as the
desk does), ``tick`` (the watchdog), ``store`` (a read of the Frappe
store: ``get_update``, ``get_rows``, ``server_holders``) and ``leftovers``
(leases, agent-job holds and halted servers still there) and ``snapshot``
(rollouts and their rows as of one instant).
"""

from __future__ import annotations

import base64
import json
import pickle
import sys
import traceback
from typing import Any

import frappe

from agent_update import api
from agent_update import frappe_codec as codec
from agent_update.frappe_job_holds import HOLD_DOCTYPE
from agent_update.frappe_leases import LEASE_DOCTYPE
from agent_update.frappe_store import FrappeStore

PREFIX = "@@rpc "
SERVER_TYPE = "Soak Server"
ACTIONS = ("build_plan", "start", "pause", "resume", "abort", "force_continue")
READS = ("get_update", "get_rows", "server_holders", "list_servers")


def register(settings: dict[str, Any], servers: list[dict[str, Any]]) -> int:
    """Agent Update Settings' fields, and one Agent Server per entry (replaced if there)."""
    doc = frappe.get_single("Agent Update Settings")
    doc.update(settings)
    doc.save(ignore_permissions=True)
    for entry in servers:
        name = entry["server_name"]
        if frappe.db.exists(codec.SERVER_DOCTYPE, name):
            frappe.delete_doc(codec.SERVER_DOCTYPE, name, force=True, ignore_permissions=True)
        record = {"doctype": codec.SERVER_DOCTYPE, "server_type": SERVER_TYPE, **entry}
        frappe.get_doc(record).insert(ignore_permissions=True)
    return len(servers)


def create(servers: list[str], deadline_at: float | None = None, **fields: Any) -> str:
    """An Agent Rollout of the Soak Server type, its rows cut to ``servers``;
    ``deadline_at`` (epoch seconds) becomes its Deadline."""
    values = {"doctype": codec.UPDATE_DOCTYPE, "server_types": [{"server_type": SERVER_TYPE}]}
    if deadline_at is not None:
        values["deadline"] = codec.to_datetime(deadline_at)
    doc = frappe.get_doc({**values, **fields}).insert()
    wanted = set(servers)
    doc.servers = [row for row in doc.servers if row.server in wanted]
    missing = wanted - {row.server for row in doc.servers}
    if missing:
        raise frappe.ValidationError(f"servers not in the registry: {sorted(missing)}")
    doc.save()
    return doc.name


def act(action: str, name: str, **kwargs: Any) -> Any:
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not one of {ACTIONS}")
    return getattr(api, action)(name, **kwargs)


def tick() -> list[str]:
    return api.tick()


def store(method: str, *args: Any) -> Any:
    if method not in READS:
        raise ValueError(f"store read {method!r} is not one of {READS}")
    return getattr(FrappeStore(), method)(*args)


def snapshot(names: list[str]) -> dict[str, tuple[Any, list[Any]]]:
    """Each named rollout and its rows, read in one transaction (the soak's observer)."""
    found = FrappeStore()
    return {name: (found.get_update(name), found.get_rows(name)) for name in names}


def leftovers() -> dict[str, list[str]]:
    """What a finished run must not leave: server leases, agent-job holds, halted servers."""
    return {
        # a released lease is cleared, not deleted (frappe_leases.py): held ones name a rollout
        "leases": frappe.get_all(LEASE_DOCTYPE, {"rollout": ["is", "set"]}, pluck="name"),
        "holds": frappe.get_all(HOLD_DOCTYPE, pluck="server"),
        "halted": frappe.get_all(codec.SERVER_DOCTYPE, {"agent_jobs_halted": 1}, pluck="name"),
    }


OPS = {
    "register": register,
    "create": create,
    "act": act,
    "tick": tick,
    "store": store,
    "leftovers": leftovers,
    "snapshot": snapshot,
}


def _connect(site: str) -> None:
    frappe.init(site=site, sites_path=".")
    frappe.connect()
    frappe.set_user("Administrator")


def _answer(out: dict[str, Any]) -> None:
    sys.stdout.write(PREFIX + json.dumps(out) + "\n")
    sys.stdout.flush()


def serve(site: str) -> None:
    _connect(site)
    fresh = True
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            if not fresh:  # the last call failed: its connection may be gone
                frappe.destroy()
                _connect(site)
                fresh = True
            request = json.loads(line)
            frappe.db.rollback()  # a new snapshot: see what the workers wrote
            kwargs = request.get("kwargs", {})
            args = kwargs.pop("args", [])
            value = OPS[request["op"]](*args, **kwargs)
            frappe.db.commit()
            _answer({"ok": True, "value": base64.b64encode(pickle.dumps(value)).decode()})
        except Exception as exc:  # answered, and logged on stderr with its trace
            fresh = False
            traceback.print_exc(file=sys.stderr)
            _answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    serve(sys.argv[1])
