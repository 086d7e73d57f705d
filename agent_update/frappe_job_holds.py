"""A server's agent jobs halted for exactly as long as a rollout's row works on it.

Frappe Press creates no agent job for a server whose ``halt_agent_jobs`` is
set; an Agent Server has the same switch as ``agent_jobs_halted``. Before a
row's update command (after its precheck) the switch is set, and when the
row has ended (rollback included) it is put back to **what it was**: a
server an operator had halted stays halted, and none is left halted by this
app. What it was is written down first, as an Agent Server Hold, so a runner
killed mid-row loses nothing: the row's heir releases it when the row ends,
and the watchdog (``sweep``) restores any hold whose row is no longer in
flight.
"""

from __future__ import annotations

import frappe

from agent_update import frappe_codec as codec
from agent_update import frappe_registry as registry
from agent_update import press_servers
from agent_update.frappe_log import app_log
from agent_update.frappe_tables import IN_FLIGHT
from agent_update.press_rules import HALT_FIELD

HOLD_DOCTYPE = "Agent Server Hold"
AGENT_SERVER_SWITCH = "agent_jobs_halted"
HOLD_FIELDS = [
    "name",
    "server_doctype",
    "server",
    "rollout",
    "row_idx",
    "switch_field",
    "value_before",
]


def _log():
    return app_log()


def switch_of(doctype: str) -> str | None:
    """The field that halts a server's agent jobs, for the doctype it is registered in."""
    if doctype == registry.AGENT_SERVER:
        return AGENT_SERVER_SWITCH
    if press_servers.has_halt_switch(doctype):
        return HALT_FIELD
    return None


def hold(server: str, rollout: str, idx: int) -> None:
    """Halt the server's agent jobs for this row (idempotent: a resumed row calls it again)."""
    doctype = registry.doctypes_of([server]).get(server)
    field = switch_of(doctype) if doctype else None
    if not doctype or not field:
        _log().info(f"{rollout} row {idx} {server}: no agent-job switch to set ({doctype})")
        return
    key = {"server_doctype": doctype, "server": server, "rollout": rollout, "row_idx": idx}
    if not frappe.db.exists(HOLD_DOCTYPE, key):
        before = frappe.db.get_value(doctype, server, field)
        if before is None:
            return
        earlier = frappe.get_all(  # a hold left by another row: its value is the original
            HOLD_DOCTYPE,
            filters={"server_doctype": doctype, "server": server},
            fields=["value_before"],
            order_by="creation asc",
            limit=1,
        )
        value = earlier[0].value_before if earlier else int(before or 0)
        frappe.get_doc(
            {"doctype": HOLD_DOCTYPE, **key, "switch_field": field, "value_before": value}
        ).insert(ignore_permissions=True)
        frappe.db.commit()  # written down before the switch moves: nothing to lose after
    frappe.db.set_value(doctype, server, field, 1, update_modified=False)
    frappe.db.commit()
    _log().info(f"{rollout} row {idx} {server}: {doctype}.{field} set")


def release(server: str, rollout: str, idx: int) -> None:
    """Put the switch back to what it was before this row (when no other row holds it)."""
    filters = {"server": server, "rollout": rollout, "row_idx": idx}
    for found in frappe.get_all(HOLD_DOCTYPE, filters=filters, fields=HOLD_FIELDS):
        _restore(found)


def _restore(found: frappe._dict) -> None:
    others = frappe.db.count(
        HOLD_DOCTYPE,
        {
            "server_doctype": found.server_doctype,
            "server": found.server,
            "name": ["!=", found.name],
        },
    )
    before = found.value_before
    doctype, server, field = found.server_doctype, found.server, found.switch_field
    if not others and frappe.db.exists(doctype, server):
        frappe.db.set_value(doctype, server, field, int(before or 0), update_modified=False)
    frappe.db.delete(HOLD_DOCTYPE, {"name": found.name})
    frappe.db.commit()
    kept = " (held by another row)" if others else ""
    _log().info(
        f"{found.rollout} row {found.row_idx} {server}: {doctype}.{field} "
        f"back to {int(before or 0)}{kept}"
    )


def sweep() -> int:
    """The watchdog's part: restore every hold whose row is no longer in flight."""
    restored = 0
    for found in frappe.get_all(HOLD_DOCTYPE, fields=HOLD_FIELDS):
        status = frappe.db.get_value(
            codec.ROW_DOCTYPE,
            {"parent": found.rollout, "parentfield": "servers", "idx": found.row_idx},
            "status",
        )
        if status in IN_FLIGHT:
            continue  # its runner (or the heir the watchdog starts) releases it at the end
        _restore(found)
        restored += 1
    return restored


def held(server: str) -> bool:
    """Whether some row of this app holds the server's agent jobs now."""
    return bool(frappe.db.exists(HOLD_DOCTYPE, {"server": server}))
