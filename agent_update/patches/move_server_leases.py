"""Server leases move from Agent Server's own columns to Agent Server Lease.

A lease now needs no Agent Server record (a Frappe Press server has none), so
it lives in a table of its own. A migrate may run while a rollout works: each
live lease is copied across (holder, row, expiry), so no server can be taken by
a second rollout meanwhile; the old columns stay in the table, unused.
"""

from __future__ import annotations

import time

import frappe

from agent_update.frappe_leases import LEASE_DOCTYPE, LEASE_TABLE

OLD = ("rollout_lease_update", "rollout_lease_row", "rollout_lease_expires")


def execute() -> None:
    if not all(frappe.db.has_column("Agent Server", c) for c in OLD):
        return  # a site made after the move
    found = frappe.db.sql(
        "SELECT name, rollout_lease_update, rollout_lease_row, rollout_lease_expires "
        "FROM `tabAgent Server` WHERE rollout_lease_update>'' AND rollout_lease_expires>%s",
        time.time(),
    )
    for server, rollout, row, expires in found:
        if frappe.db.exists(LEASE_DOCTYPE, server):
            continue
        frappe.db.sql(
            f"INSERT INTO {LEASE_TABLE} (name, server, rollout, row_idx, expires, "  # noqa: S608
            "creation, modified, owner, modified_by) "
            "VALUES (%s, %s, %s, %s, %s, NOW(), NOW(), 'Administrator', 'Administrator')",
            [server, server, rollout, int(row or 0), float(expires or 0)],
        )
    frappe.db.sql(
        "UPDATE `tabAgent Server` SET rollout_lease_update='', rollout_lease_row=0, "
        "rollout_lease_expires=0"
    )
