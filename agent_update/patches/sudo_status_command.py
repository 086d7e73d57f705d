"""Sites made before the agent user: the old default status command gains ``sudo -n``.

On a standard server supervisord's socket is root-only, so a plain
``supervisorctl status`` finds no program and every precheck fails. Only the
untouched old default is changed; an operator's own command is kept.
"""

from __future__ import annotations

import frappe

SETTINGS = "Agent Update Settings"
OLD, NEW = "supervisorctl status", "sudo -n supervisorctl status"


def execute() -> None:
    current = (frappe.db.get_single_value(SETTINGS, "status_command") or "").strip()
    if current in ("", OLD):
        frappe.db.set_single_value(SETTINGS, "status_command", NEW)
