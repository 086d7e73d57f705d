# ruff: noqa: S608 (table names are this module's constants; values are bound)
"""The rename patch on a site that still holds the old doctypes and their records.

The installed site already has the new names, so the test builds its own pair
of old-style doctypes (a parent with a Table of rows, module Agent Update, not
custom: as this app's were) under names of its own, fills them, and runs the
patch's ``rename_ours`` on them as migrate would (child first). It then
reads the tables directly: every record, every row's parent and parenttype,
the Table field's options and a link to the doctype moved to the new names.
A doctype of another module is left alone.
"""

from __future__ import annotations

import frappe
from frappe.tests.utils import FrappeTestCase

from agent_update.patches import remove_old_workspace as workspace_patch
from agent_update.patches import rename_to_agent_rollout as patch

OLD, OLD_ROW = "AU Legacy Update", "AU Legacy Update Server"
NEW, NEW_ROW = "AU Legacy Rollout", "AU Legacy Rollout Server"
FOREIGN = "AU Legacy Foreign"


def _doctype(name: str, module: str, fields: list[dict], istable: int = 0) -> None:
    """A doctype as an app ships it (custom=0), but with no controller module.

    Inserted as custom (a standard one would need its module on disk, like
    this app's old doctypes had before their folders were renamed), then made
    standard, which is all the patch looks at besides the module.
    """
    frappe.get_doc(
        {
            "doctype": "DocType",
            "name": name,
            "module": module,
            "custom": 1,
            "istable": istable,
            "autoname": "hash",
            "fields": fields,
            "permissions": [] if istable else [{"role": "System Manager", "read": 1, "write": 1}],
        }
    ).insert(ignore_permissions=True)
    frappe.db.set_value("DocType", name, "custom", 0, update_modified=False)


def _drop(*names: str) -> None:
    for name in names:
        if frappe.db.exists("DocType", name):
            # as custom: a standard doctype's deletion would look for its folder
            frappe.db.set_value("DocType", name, "custom", 1, update_modified=False)
            frappe.delete_doc("DocType", name, force=True, ignore_permissions=True)
        frappe.db.sql_ddl(f"DROP TABLE IF EXISTS `tab{name}`")


class TestRenamePatch(FrappeTestCase):
    def setUp(self) -> None:
        # a standard doctype's changes go to the app's folder in developer mode: never here
        self._developer_mode = frappe.conf.get("developer_mode")
        frappe.conf.developer_mode = 0
        _drop(OLD, OLD_ROW, NEW, NEW_ROW, FOREIGN)
        _doctype(OLD_ROW, patch.MODULE, [{"fieldname": "server", "fieldtype": "Data"}], istable=1)
        _doctype(
            OLD,
            patch.MODULE,
            [
                {"fieldname": "title", "fieldtype": "Data"},
                {"fieldname": "servers", "fieldtype": "Table", "options": OLD_ROW},
            ],
        )
        _doctype(FOREIGN, "Core", [{"fieldname": "title", "fieldtype": "Data"}])
        self.names = []
        for i in range(2):
            name = frappe.generate_hash(length=10)
            frappe.db.sql(f"INSERT INTO `tab{OLD}` (name, title) VALUES (%s, %s)", (name, f"u{i}"))
            for j in range(3):
                frappe.db.sql(
                    f"INSERT INTO `tab{OLD_ROW}` "
                    "(name, parent, parenttype, parentfield, idx, server) "
                    "VALUES (%s, %s, %s, 'servers', %s, %s)",
                    (frappe.generate_hash(length=10), name, OLD, j + 1, f"s{i}{j}"),
                )
            self.names.append(name)
        # a link to the doctype (inserted as a row: the ToDo controller would load the record)
        self.todo = frappe.generate_hash(length=10)
        frappe.db.sql(
            "INSERT INTO `tabToDo` (name, status, description, reference_type, reference_name) "
            "VALUES (%s, 'Open', 'legacy', %s, %s)",
            (self.todo, OLD, name),
        )
        frappe.db.commit()

    def tearDown(self) -> None:
        frappe.db.rollback()
        frappe.db.delete("ToDo", {"name": self.todo})
        _drop(OLD, OLD_ROW, NEW, NEW_ROW, FOREIGN)
        frappe.db.commit()
        frappe.conf.developer_mode = self._developer_mode

    def test_renames_this_apps_doctypes_and_keeps_every_record(self) -> None:
        self.assertTrue(patch.rename_ours(OLD_ROW, NEW_ROW))
        self.assertTrue(patch.rename_ours(OLD, NEW))
        frappe.db.commit()
        tables = frappe.db.get_tables(cached=False)
        for old in (OLD, OLD_ROW):
            self.assertIsNone(frappe.db.exists("DocType", old))
            self.assertNotIn(f"tab{old}", tables)
        self.assertEqual(frappe.db.get_value("DocType", NEW, "module"), patch.MODULE)
        self.assertEqual(
            sorted(frappe.db.sql_list(f"SELECT name FROM `tab{NEW}`")), sorted(self.names)
        )
        rows = frappe.db.sql(
            f"SELECT parent, parenttype, server FROM `tab{NEW_ROW}` ORDER BY server", as_dict=True
        )
        self.assertEqual([r.server for r in rows], [f"s{i}{j}" for i in range(2) for j in range(3)])
        self.assertEqual({r.parenttype for r in rows}, {NEW})
        self.assertEqual({r.parent for r in rows}, set(self.names))
        options = frappe.db.get_value(
            "DocField", {"parent": NEW, "fieldname": "servers"}, "options"
        )
        self.assertEqual(options, NEW_ROW)
        self.assertEqual(frappe.db.get_value("ToDo", self.todo, "reference_type"), NEW)

    def test_another_modules_doctype_is_left_alone(self) -> None:
        self.assertFalse(patch.rename_ours(FOREIGN, "AU Legacy Taken"))
        self.assertEqual(frappe.db.get_value("DocType", FOREIGN, "module"), "Core")
        self.assertIsNone(frappe.db.exists("DocType", "AU Legacy Taken"))

    def test_refuses_when_the_new_name_is_taken(self) -> None:
        _doctype(NEW, patch.MODULE, [{"fieldname": "title", "fieldtype": "Data"}])
        with self.assertRaises(frappe.ValidationError):
            patch.rename_ours(OLD, NEW)
        self.assertEqual(len(frappe.db.sql_list(f"SELECT name FROM `tab{OLD}`")), 2)

    def test_missing_doctype_is_a_no_op(self) -> None:
        self.assertFalse(patch.rename_ours("AU Legacy Absent", "AU Legacy Other"))


class TestOldWorkspacePatch(FrappeTestCase):
    """The workspace once named Agent Update is removed; nobody else's is."""

    OURS, THEIRS = "AU Legacy Space", "AU Foreign Space"

    def setUp(self) -> None:
        self._developer_mode = frappe.conf.get("developer_mode")
        frappe.conf.developer_mode = 0  # no export of a standard workspace to a folder
        for name, module in ((self.OURS, workspace_patch.MODULE), (self.THEIRS, "Core")):
            frappe.delete_doc_if_exists("Workspace", name, force=True)
            frappe.get_doc(
                {
                    "doctype": "Workspace",
                    "label": name,
                    "title": name,
                    "module": module,
                    "public": 1,
                    "content": "[]",
                }
            ).insert(ignore_permissions=True)

    def tearDown(self) -> None:
        for name in (self.OURS, self.THEIRS):
            frappe.delete_doc_if_exists("Workspace", name, force=True)
        frappe.conf.developer_mode = self._developer_mode

    def test_removes_this_apps_old_workspace_only(self) -> None:
        self.assertTrue(workspace_patch.remove_ours(self.OURS))
        self.assertFalse(frappe.db.exists("Workspace", self.OURS))
        self.assertFalse(workspace_patch.remove_ours(self.THEIRS))
        self.assertTrue(frappe.db.exists("Workspace", self.THEIRS))
        self.assertFalse(workspace_patch.remove_ours("AU Absent Space"))

    def test_the_installed_site_has_the_new_workspace_and_not_the_old(self) -> None:
        workspace_patch.execute()  # idempotent: a second migrate finds nothing to do
        self.assertTrue(frappe.db.exists("Workspace", "Agent Rollouts"))
        self.assertFalse(frappe.db.exists("Workspace", workspace_patch.OLD))
