"""Sites made before the rename: Agent Update (and its rows) become Agent Rollout.

Frappe Press ships doctypes named Agent Update and Agent Update Server, so this
app's were renamed (docs/press.md). Runs before the model sync, while the old
doctypes still hold this app's records: ``rename_doc`` renames each table and
moves the parent type, the Table field's options and every link to the
doctype, so no record is lost. A doctype of that name is renamed only when it
is this app's (module Agent Update) and no other installed app ships a
doctype of that name: Press's own are never touched.
"""

from __future__ import annotations

import glob
import os

import frappe

from agent_update.frappe_log import app_log

MODULE = "Agent Update"
APP = "agent_update"
# child first: its parent's Table field then already points at the new name
RENAMES = (
    ("Agent Update Server", "Agent Rollout Server"),
    ("Agent Update", "Agent Rollout"),
)


def execute() -> None:
    for old, new in RENAMES:
        rename_ours(old, new)


def shipped_by_another_app(name: str, kind: str = "doctype") -> str | None:
    """The installed app other than this one that ships ``name`` (a doctype, or a
    record of another standard kind such as ``workspace``), if any."""
    folder = frappe.scrub(name)
    for app in frappe.get_installed_apps():
        if app == APP:
            continue
        pattern = os.path.join(frappe.get_app_path(app), "*", kind, folder, f"{folder}.json")
        if glob.glob(pattern):
            return app
    return None


def rename_ours(old: str, new: str, module: str = MODULE) -> bool:
    """Rename doctype ``old`` to ``new`` if it is this app's; True when renamed."""
    if not frappe.db.exists("DocType", old):
        return False
    owner = frappe.db.get_value("DocType", old, "module")
    if owner != module:
        return False
    other = shipped_by_another_app(old)
    if other:
        app_log().warning("rename %s: not renamed, app %s ships a doctype of that name", old, other)
        return False
    if frappe.db.exists("DocType", new):
        raise frappe.ValidationError(f"rename {old}: doctype {new} exists already; rename by hand")
    in_patch = frappe.flags.in_patch
    frappe.flags.in_patch = True  # standard doctype: no developer mode, no files moved
    try:
        frappe.rename_doc("DocType", old, new, force=True, show_alert=False, rebuild_search=False)
    finally:
        frappe.flags.in_patch = in_patch
    app_log().info("renamed doctype %s to %s", old, new)
    return True
