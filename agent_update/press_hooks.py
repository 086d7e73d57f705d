"""Press's own Agent Update form warns of servers this app's rollouts hold or will update.

Press's tool knows nothing of this app: this app waits for a server in one of
Press's running updates (frappe_leases.py), and Press's form, when saved,
names the servers of its update that an unfinished Agent Rollout still has to
do or is doing (a ``doc_events`` hook on Press's ``Agent Update``).
"""

from __future__ import annotations

from typing import Any

import frappe
from frappe import _

from agent_update import frappe_codec as codec
from agent_update.frappe_tables import ENDED

UNFINISHED_ROLLOUTS = ("Pending", "Planning", "Running", "Paused")


def shared_servers(servers: list[str]) -> dict[str, list[str]]:
    """Agent Rollout -> the given servers in a row of it not yet ended."""
    if not servers:
        return {}
    found = frappe.db.sql(
        "SELECT DISTINCT r.parent, r.server FROM `tabAgent Rollout Server` r "
        "JOIN `tabAgent Rollout` u ON u.name=r.parent "
        "WHERE r.parenttype=%s AND r.parentfield='servers' AND u.status IN %s "
        "AND r.status NOT IN %s AND r.server IN %s ORDER BY r.parent, r.server",
        [codec.UPDATE_DOCTYPE, UNFINISHED_ROLLOUTS, ENDED, sorted(set(servers))],
    )
    out: dict[str, list[str]] = {}
    for rollout, server in found:
        out.setdefault(rollout, []).append(server)
    return out


def warn_shared_servers(doc: Any, method: str | None = None) -> None:
    """On save of Press's Agent Update: a warning naming the rollouts it shares servers with."""
    if doc.meta.module != "Press":
        return
    shared = shared_servers([r.server for r in doc.get("servers") or [] if r.server])
    if not shared:
        return
    lines = [f"{rollout}: {', '.join(servers)}" for rollout, servers in shared.items()]
    frappe.msgprint(
        _(
            "These servers are also in unfinished Agent Rollouts (Agent Update app), "
            "which halt each server's agent jobs while they update it:"
        )
        + "<br>"
        + "<br>".join(frappe.utils.escape_html(line) for line in lines),
        title=_("Servers shared with Agent Rollouts"),
        indicator="orange",
    )
