"""Another app's doctypes and records, before and after this app comes and goes.

On the Press bench, scripts/frappe-bench.sh calls ``snapshot`` before
``install-app agent_update``: it records the definition of every Press doctype
(its DocType row, fields, permissions and table columns) and inserts one record
of Press's own Agent Update, in a file of the site's folder. After install-app
and two migrates, test_press.py compares; after ``uninstall-app``,
``check_uninstalled`` compares again and checks this app left nothing behind.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

import frappe

SNAPSHOT_FILE = "agent_update_coexist_snapshot.json"  # in the site's folder
MODULE = "Agent Update"
OWN_TABLES = (
    "Agent Rollout",
    "Agent Rollout Server",
    "Agent Server",
    "Agent Update Server Type",
)
DOCTYPE_PROPS = (
    "name",
    "module",
    "istable",
    "issingle",
    "is_submittable",
    "is_virtual",
    "custom",
    "autoname",
    "naming_rule",
    "title_field",
    "track_changes",
)
FIELD_PROPS = (
    "parent",
    "idx",
    "fieldname",
    "label",
    "fieldtype",
    "options",
    "reqd",
    "hidden",
    "read_only",
    "default",
    "depends_on",
    "fetch_from",
    "in_list_view",
    "unique",
    "search_index",
)
PERM_PROPS = ("parent", "idx", "role", "permlevel", "read", "write", "create", "delete", "submit")
# Press's own Agent Update, as an operator of Press would have one.
PRESS_RECORD = {
    "doctype": "Agent Update",
    "repo": "github.com/frappe/agent",
    "branch": "master",
    "commit_hash": "0123456789abcdef0123456789abcdef01234567",
    "app_server": 1,
    "database_server": 1,
    "restart_web_workers": 1,
    "agent_startup_timeout_minutes": 10,
    "status": "Draft",
    "servers": [{"server": "f1.coexist.example.com", "server_type": "Server", "status": "Draft"}],
}
RECORD_FIELDS = ("repo", "branch", "commit_hash", "app_server", "database_server", "status")


def snapshot_path() -> str:
    return frappe.get_site_path(SNAPSHOT_FILE)


def press_doctypes() -> list[str]:
    modules = frappe.get_module_list("press")
    return frappe.get_all(
        "DocType", filters={"module": ["in", modules]}, pluck="name", order_by="name"
    )


def _grouped(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[row.pop("parent")].append(row)
    return grouped


def doctype_meta(names: list[str]) -> dict[str, Any]:
    """What defines each doctype in the database, comparable as plain JSON."""
    doctypes = frappe.get_all(
        "DocType", filters={"name": ["in", names]}, fields=list(DOCTYPE_PROPS), order_by="name"
    )
    fields = _grouped(
        frappe.get_all(
            "DocField",
            filters={"parent": ["in", names], "parenttype": "DocType"},
            fields=list(FIELD_PROPS),
            order_by="parent, idx",
        )
    )
    perms = _grouped(
        frappe.get_all(
            "DocPerm",
            filters={"parent": ["in", names], "parenttype": "DocType"},
            fields=list(PERM_PROPS),
            order_by="parent, idx",
        )
    )
    columns: dict[str, list] = defaultdict(list)
    for table, column, kind in frappe.db.sql(
        "SELECT table_name, column_name, column_type FROM information_schema.columns "
        "WHERE table_schema=DATABASE() AND table_name LIKE 'tab%%' "
        "ORDER BY table_name, ordinal_position"
    ):
        columns[table[3:]].append([column, kind])
    custom = {
        "Custom Field": frappe.get_all("Custom Field", filters={"dt": ["in", names]}, pluck="name"),
        "Property Setter": frappe.get_all(
            "Property Setter", filters={"doc_type": ["in", names]}, pluck="name"
        ),
    }
    return {
        "doctypes": {
            d.name: {
                "row": dict(d),
                "fields": fields.get(d.name, []),
                "permissions": perms.get(d.name, []),
                "columns": columns.get(d.name, []),
            }
            for d in doctypes
        },
        "customizations": custom,
    }


def press_record(name: str) -> dict[str, Any]:
    doc = frappe.get_doc("Agent Update", name)
    return {
        "values": {f: doc.get(f) for f in RECORD_FIELDS},
        "servers": [(r.server, r.server_type, r.status) for r in doc.servers],
    }


def snapshot() -> str:
    """Record Press's doctypes and insert one Press Agent Update (before install-app)."""
    if "press" not in frappe.get_installed_apps():
        raise RuntimeError("coexist.snapshot: Press is not installed on this site")
    doc = frappe.get_doc(PRESS_RECORD)
    doc.flags.in_group_split = True  # Press's before_insert asks GitHub for the commit otherwise
    doc.flags.ignore_links = True  # the row's server is not provisioned
    doc.insert(ignore_permissions=True)
    frappe.db.commit()
    data = {
        "meta": doctype_meta(press_doctypes()),
        "record": doc.name,
        "values": press_record(doc.name),
    }
    with open(snapshot_path(), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
    return doc.name


def load_snapshot() -> dict[str, Any]:
    path = snapshot_path()
    if not os.path.exists(path):
        raise AssertionError(
            f"no snapshot at {path}: scripts/frappe-bench.sh makes it before install-app"
        )
    with open(path) as f:
        return json.load(f)


def as_json(value: Any) -> Any:
    """The value as the snapshot file holds it (tuples as lists, dates as text)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def meta_differences(before: dict[str, Any]) -> list[str]:
    """Doctypes (or customizations) whose definition is not what ``before`` holds."""
    now = as_json(doctype_meta(list(before["doctypes"])))
    changed = [n for n in before["doctypes"] if now["doctypes"].get(n) != before["doctypes"][n]]
    if now["customizations"] != before["customizations"]:
        changed.append("customizations")
    return changed


def check_uninstalled() -> str:
    """After uninstall-app: nothing of this app left; Press's doctypes and record as before."""
    left = frappe.get_all("DocType", filters={"module": MODULE}, pluck="name")
    if left:
        raise AssertionError(f"uninstall left doctypes of module {MODULE}: {left}")
    tables = set(frappe.db.get_tables(cached=False))
    kept = [t for t in OWN_TABLES if f"tab{t}" in tables]
    if kept:
        raise AssertionError(f"uninstall left tables: {kept}")
    if "press" in frappe.get_installed_apps():
        before = load_snapshot()
        changed = meta_differences(before["meta"])
        if changed:
            raise AssertionError(f"Press doctypes changed: {changed}")
        if as_json(press_record(before["record"])) != before["values"]:
            raise AssertionError(f"Press's Agent Update {before['record']} changed")
        if frappe.db.get_value("DocType", "Agent Update", "module") != "Press":
            raise AssertionError("Press's Agent Update is no longer of module Press")
    return "uninstalled cleanly"
