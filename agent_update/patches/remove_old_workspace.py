"""The workspace once called Agent Update goes; Agent Rollouts replaces it.

A workspace's route wins over a doctype's in the desk, so a workspace named
Agent Update sent ``/app/agent-update`` to this app's workspace and left
Frappe Press's own Agent Update list and forms out of reach (docs/press.md).
The model sync has already made the new workspace from its file; this removes
the old record, but only when it is this app's (module Agent Update, not a
user's private page) and no other installed app ships a workspace of that name.
"""

from __future__ import annotations

import frappe

from agent_update.frappe_log import app_log
from agent_update.patches.rename_to_agent_rollout import MODULE, shipped_by_another_app

OLD = "Agent Update"


def execute() -> None:
    remove_ours(OLD)


def remove_ours(name: str, module: str = MODULE) -> bool:
    """Delete workspace ``name`` if it is this app's; True when deleted."""
    found = frappe.db.get_value("Workspace", name, ["module", "public"], as_dict=True)
    if not found or found.module != module or not found.public:
        return False
    other = shipped_by_another_app(name, "workspace")
    if other:
        app_log().warning("workspace %s: not removed, app %s ships one of that name", name, other)
        return False
    frappe.delete_doc("Workspace", name, force=True, ignore_permissions=True)
    app_log().info("removed the old workspace %s", name)
    return True
