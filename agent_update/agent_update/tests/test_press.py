"""Beside Frappe Press: its doctypes, records and controller stay its own.

Each site runs the set that fits it, chosen by whether Press is installed, so
neither skips a test: the Press bench (scripts/frappe-bench.sh with
AGENT_UPDATE_PRESS=1) runs ``TestBesidePress``, the plain bench
``TestWithoutPress``. ``AGENT_UPDATE_EXPECT_PRESS`` (set by the script) makes
sure each bench really ran the set meant for it.
"""

from __future__ import annotations

import json
import os

import frappe
from frappe.tests.utils import FrappeTestCase
from frappe.utils.password import get_decrypted_password

from agent_update import frappe_codec as codec
from agent_update.agent_update.tests import coexist
from agent_update.frappe_press import press_defaults
from agent_update.frappe_service import engine_settings
from agent_update.patches import rename_to_agent_rollout as patch
from agent_update.rollout.model import Update
from agent_update.rollout.rules import apply_defaults

PRESS = "press" in frappe.get_installed_apps()
PRESS_SETTINGS_FIELDS = (
    "agent_repository_owner",
    "branch",
    "agent_github_access_token",
    "github_access_token",
)
OWN = (codec.UPDATE_DOCTYPE, codec.ROW_DOCTYPE, "Agent Server", "Agent Update Server Type")


class SiteKindChecks:
    """Run by both sets (a mixin: not collected on its own)."""

    def test_site_is_the_kind_the_bench_promised(self) -> None:
        expected = os.environ.get("AGENT_UPDATE_EXPECT_PRESS")
        if expected is not None:
            self.assertEqual(PRESS, expected == "1", "AGENT_UPDATE_EXPECT_PRESS vs the site's apps")
        self.assertEqual(PRESS, frappe.db.exists("DocType", "Press Settings") is not None)

    def test_own_doctypes_are_the_apps(self) -> None:
        for doctype in OWN:
            self.assertEqual(
                frappe.db.get_value("DocType", doctype, "module"), coexist.MODULE, doctype
            )
            self.assertIn(f"tab{doctype}", frappe.db.get_tables(cached=False))
        servers = frappe.get_meta(codec.UPDATE_DOCTYPE).get_field("servers")
        self.assertEqual(servers.options, codec.ROW_DOCTYPE)


if PRESS:

    class TestBesidePress(SiteKindChecks, FrappeTestCase):
        """install-app and two migrates happened before these run (frappe-bench.sh)."""

        def test_press_doctypes_unchanged_by_install_and_migrates(self) -> None:
            before = coexist.load_snapshot()["meta"]
            for name in ("Agent Update", "Agent Update Server"):
                now = coexist.as_json(coexist.doctype_meta([name]))["doctypes"][name]
                self.assertEqual(now, before["doctypes"][name], name)
                self.assertEqual(now["row"]["module"], "Press")
            self.assertGreater(len(before["doctypes"]), 100)  # all of Press's were recorded
            self.assertEqual(coexist.meta_differences(before), [])

        def test_press_agent_update_is_as_its_json_says(self) -> None:
            path = os.path.join(
                frappe.get_app_path("press"),
                "press",
                "doctype",
                "agent_update",
                "agent_update.json",
            )
            with open(path) as f:
                shipped = json.load(f)
            fields = frappe.get_all(
                "DocField", filters={"parent": "Agent Update"}, pluck="fieldname", order_by="idx"
            )
            self.assertEqual(fields, shipped["field_order"])
            self.assertIn("app_server", fields)
            self.assertIn("app_server", frappe.db.get_table_columns("Agent Update"))

        def test_press_record_unchanged(self) -> None:
            snap = coexist.load_snapshot()
            self.assertEqual(coexist.as_json(coexist.press_record(snap["record"])), snap["values"])

        def test_press_controller_validates_its_records(self) -> None:
            doc = frappe.get_doc({"doctype": "Agent Update"})
            self.assertEqual(type(doc).__module__, "press.press.doctype.agent_update.agent_update")
            # refused before Press would ask GitHub for the commit (no network here)
            nothing = {"restart_web_workers": 0, "restart_rq_workers": 0, "restart_redis": 0}
            cases = [
                ({}, "at least one server type"),
                ({"app_server": 1, **nothing}, "must restart something"),
                ({"app_server": 1, **nothing, "restart_redis": 1}, "Restarting Redis also"),
            ]
            for values, message in cases:
                doc = frappe.get_doc({"doctype": "Agent Update", **values})
                with self.assertRaises(frappe.ValidationError) as caught:
                    doc.insert(ignore_permissions=True)
                self.assertIn(message, str(caught.exception))
            # a record passes Press's own validation (mandatory fields, select options)
            good = frappe.get_doc({**coexist.PRESS_RECORD, "servers": []})
            good.flags.in_group_split = True
            good.insert(ignore_permissions=True)
            self.assertEqual(frappe.db.get_value("Agent Update", good.name, "app_server"), 1)
            bad = frappe.get_doc({**coexist.PRESS_RECORD, "servers": [], "status": "Nonsense"})
            bad.flags.in_group_split = True
            with self.assertRaises(frappe.ValidationError):
                bad.insert(ignore_permissions=True)

        def test_rename_patch_never_touches_press(self) -> None:
            self.assertEqual(patch.shipped_by_another_app("Agent Update"), "press")
            for old, new in patch.RENAMES:
                self.assertFalse(patch.rename_ours(old, new))
            # even when the old doctype claims this app's module, Press ships it: kept
            self.assertFalse(patch.rename_ours("Agent Update", "Agent Rollout", module="Press"))
            self.assertEqual(frappe.db.get_value("DocType", "Agent Update", "module"), "Press")
            self.assertEqual(coexist.meta_differences(coexist.load_snapshot()["meta"]), [])

        def test_press_settings_fill_what_this_apps_settings_leave_empty(self) -> None:
            press = PRESS_SETTINGS_FIELDS
            own = ("default_repo", "default_branch")
            saved = {f: frappe.db.get_single_value(codec.SETTINGS_DOCTYPE, f) for f in own}
            token = get_decrypted_password(
                codec.SETTINGS_DOCTYPE, codec.SETTINGS_DOCTYPE, "git_token", raise_exception=False
            )
            saved_press = {f: frappe.db.get_single_value("Press Settings", f) for f in press}
            try:
                settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
                settings.update({"default_repo": "", "default_branch": "", "git_token": ""})
                settings.flags.ignore_mandatory = True
                settings.save(ignore_permissions=True)
                set_press = dict(zip(press, ("octo", "stable", "agent-token", "gh"), strict=True))
                for field, value in set_press.items():
                    frappe.db.set_single_value("Press Settings", field, value)
                knobs = engine_settings()
                self.assertEqual(knobs.default_repo, "https://github.com/octo/agent")
                self.assertEqual(knobs.default_branch, "stable")
                self.assertEqual(knobs.git_token, "agent-token")
                # an update that leaves Repo and Branch empty gets them
                filled = apply_defaults(Update(name="x", repo="", branch=""), knobs)
                self.assertEqual((filled.repo, filled.branch), (knobs.default_repo, "stable"))
                # Press's own fallbacks when its settings are empty too
                for field in press:
                    frappe.db.set_single_value("Press Settings", field, "")
                frappe.db.set_single_value("Press Settings", "github_access_token", "gh-token")
                knobs = engine_settings()
                self.assertEqual(knobs.default_repo, "https://github.com/frappe/agent")
                self.assertEqual((knobs.default_branch, knobs.git_token), ("master", "gh-token"))
                # this app's own settings win where set
                settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
                settings.update(
                    {
                        "default_repo": "https://git.example.com/ops/agent",
                        "default_branch": "ops",
                        "git_token": "own-token",
                    }
                )
                settings.save(ignore_permissions=True)
                knobs = engine_settings()
                self.assertEqual(knobs.default_repo, "https://git.example.com/ops/agent")
                self.assertEqual((knobs.default_branch, knobs.git_token), ("ops", "own-token"))
            finally:
                for field, value in saved_press.items():
                    frappe.db.set_single_value("Press Settings", field, value)
                settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
                settings.update({**saved, "git_token": token or ""})
                settings.flags.ignore_mandatory = True
                settings.save(ignore_permissions=True)
                frappe.db.commit()

else:

    class TestWithoutPress(SiteKindChecks, FrappeTestCase):
        def test_no_press_doctype_and_no_other_owner(self) -> None:
            for name in ("Agent Update", "Agent Update Server", "Server", "Press Settings"):
                self.assertIsNone(frappe.db.exists("DocType", name), name)
            self.assertIsNone(patch.shipped_by_another_app("Agent Update"))

        def test_no_press_defaults(self) -> None:
            self.assertIsNone(press_defaults())
            own = frappe.db.get_single_value(codec.SETTINGS_DOCTYPE, "default_repo") or ""
            self.assertEqual(engine_settings().default_repo, own.strip())

        def test_rename_patch_is_a_no_op_on_a_renamed_site(self) -> None:
            for old, new in patch.RENAMES:
                self.assertFalse(patch.rename_ours(old, new))
