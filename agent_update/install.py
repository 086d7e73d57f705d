"""Install hooks: the role that may read and run Agent Rollouts.

Created before the doctypes are synced (their permissions name it) and
checked again after every migrate, so a site that lost it gets it back.
"""

from __future__ import annotations

import frappe

ROLE = "Agent Update Manager"


def ensure_role() -> None:
    if not frappe.db.exists("Role", ROLE):
        frappe.get_doc({"doctype": "Role", "role_name": ROLE, "desk_access": 1}).insert(
            ignore_permissions=True
        )


def before_install() -> None:
    ensure_role()


def after_install() -> None:
    ensure_role()


def after_migrate() -> None:
    ensure_role()
