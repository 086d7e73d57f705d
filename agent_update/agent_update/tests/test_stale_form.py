"""A form opened before the engine, Split or another user changed the update.

Saving it is refused ("reload") or keeps what the database has: it never
removes, re-adds or rewinds a server row or an engine field. Every check
reads the rows back from the database, and the rollouts are verified on the
loopback fleet (the commit each agent runs).
"""

from __future__ import annotations

import logging
from typing import Any

import frappe

from agent_update import api
from agent_update import frappe_codec as codec
from agent_update.agent_update.tests.support import FleetCase
from agent_update.frappe_log import app_log
from agent_update.frappe_service import get_service
from agent_update.frappe_tables import ROW_TABLE, ROW_WHERE


class TestStaleForm(FleetCase):
    FLEET_SIZE = 4
    SERVER_TYPE = "Loopback Stale"

    def stored_rows(self, name: str) -> list[dict[str, Any]]:
        """Every row of ``name`` as the database has it (all engine columns)."""
        columns = ", ".join(
            f"`{c.column}`" for n, c in codec.ROW_COLUMNS.items() if n not in ("log",)
        )
        frappe.db.commit()
        return frappe.db.sql(
            f"SELECT name, {columns}, log FROM {ROW_TABLE} WHERE {ROW_WHERE} ORDER BY idx",  # noqa: S608
            name,
            as_dict=True,
        )

    def stored_update(self, name: str) -> dict[str, Any]:
        columns = [codec.UPDATE_COLUMNS[n].column for n in codec.ENGINE_UPDATE_FIELDS]
        return frappe.db.get_value(codec.UPDATE_DOCTYPE, name, columns, as_dict=True)

    def test_a_form_opened_before_split_cannot_wipe_the_servers(self) -> None:
        good = self.fleet.commits.good
        doc = self.new_update(commit=good)
        api.build_plan(doc.name, now=True)
        stale = self.load(doc.name)  # the form left open on the original
        self.assertEqual(len(stale.servers), 4)
        names = api.split(doc.name, batches=2, now=True)["updates"]
        kept = {name: self.stored_rows(name) for name in names}
        self.assertEqual([len(rows) for rows in kept.values()], [2, 2])

        # Bake Time changed on the stale form: Frappe's check refuses it (Split moved `modified`).
        bake = frappe.db.get_value(codec.UPDATE_DOCTYPE, doc.name, "bake_time")
        stale.bake_time = 6 if bake == 5 else 5
        with self.assertRaises(frappe.TimestampMismatchError) as caught:
            stale.save()
        self.assertIn("refresh", str(caught.exception))
        frappe.db.rollback()

        # A client that sends the current `modified` with the old rows: the controller refuses.
        stale.modified = frappe.db.get_value(codec.UPDATE_DOCTYPE, doc.name, "modified")
        with self.assertRaises(frappe.TimestampMismatchError) as caught:
            stale.save()
        self.assertIn("Reload", str(caught.exception))
        frappe.db.rollback()
        for name, rows in kept.items():
            self.assertEqual(self.stored_rows(name), rows)
        self.assertEqual(frappe.db.get_value(codec.UPDATE_DOCTYPE, doc.name, "bake_time"), bake)

        # Reloaded, the same change saves and the rows stay as Split left them.
        fresh = self.load(doc.name)
        fresh.bake_time = stale.bake_time
        fresh.save()
        frappe.db.commit()
        self.assertEqual(
            frappe.db.get_value(codec.UPDATE_DOCTYPE, doc.name, "bake_time"), stale.bake_time
        )
        self.assertEqual(self.stored_rows(doc.name), kept[doc.name])

        # Planned: a server can be left out, not swapped for another or added.
        other = kept[names[1]][0]["server"]
        for change in ("swap", "add"):
            copy = self.load(doc.name)
            if change == "swap":
                copy.servers[0].server = other
            else:
                copy.append("servers", {"server": other, "server_type": self.SERVER_TYPE})
            with self.subTest(change=change), self.assertRaises(frappe.ValidationError) as caught:
                copy.save()
            self.assertIn(other, str(caught.exception))
            frappe.db.rollback()
        self.assertEqual(self.stored_rows(doc.name), kept[doc.name])

        for name in names:
            api.start(name, now=True)
        for name in names:
            done = self.load(name)
            self.assertEqual(done.status, "Success", done.halt_reason)
            self.assertEqual(len(done.servers), 2)
        for server in self.servers:
            self.assertEqual(self.running(server), good)

    def test_a_form_saved_while_the_update_runs_rewinds_nothing(self) -> None:
        good = self.fleet.commits.good
        doc = self.new_update(commit=good, hosts=2)
        api.build_plan(doc.name, now=True)
        service = get_service()
        service.runner.launcher = lambda *args: None  # claimed rows are run below, by hand
        service.start(doc.name)
        opened = self.load(doc.name)  # the form, opened once Running: rows at their precheck
        first = opened.servers[0]
        self.assertEqual(
            (opened.status, first.status, first.step), ("Running", "Pending", "precheck")
        )

        # Mid-row (precheck done, before the command) the form is saved with nothing typed.
        # Row steps do not move `modified`: Frappe lets it through, the controller keeps the
        # engine's state.
        seen: dict[str, Any] = {}
        hooks = service.runner.hooks
        before = hooks.before_update

        def save_the_open_form(update: Any, row: Any) -> None:
            seen["rows"] = self.stored_rows(doc.name)
            seen["update"] = self.stored_update(doc.name)
            opened.save()
            frappe.db.commit()
            seen["rows after"] = self.stored_rows(doc.name)
            seen["update after"] = self.stored_update(doc.name)
            before(update, row)

        hooks.before_update = save_the_open_form
        service.runner.run_row(doc.name, first.idx, first.lease_owner)
        self.assertEqual(seen["rows"][0]["status"], "Running")
        self.assertTrue(seen["rows"][0]["pids_before"])
        self.assertEqual(seen["rows after"], seen["rows"])
        self.assertEqual(seen["update after"], seen["update"])
        ended = self.stored_rows(doc.name)[0]
        self.assertEqual(ended["status"], "Success", ended["log"])
        self.assertEqual(self.running(first.server), good)

        # A row ended since the form was opened: Frappe's check refuses the old copy.
        rows = self.stored_rows(doc.name)
        with self.assertRaises(frappe.TimestampMismatchError):
            opened.save()
        frappe.db.rollback()
        # Past that check, the rewound copy is merged: what the engine wrote stays.
        opened.modified = frappe.db.get_value(codec.UPDATE_DOCTYPE, doc.name, "modified")
        engine = self.stored_update(doc.name)
        opened.save()
        frappe.db.commit()
        self.assertEqual(self.stored_rows(doc.name), rows)
        self.assertEqual(self.stored_update(doc.name), engine)

        # Rows dropped or reordered by a form: refused, the database keeps them.
        for change in ("drop", "reorder"):
            copy = self.load(doc.name)
            if change == "drop":
                copy.servers = copy.servers[1:]
            else:
                copy.servers[0].idx, copy.servers[1].idx = 2, 1
            with self.subTest(change=change), self.assertRaises(frappe.ValidationError) as caught:
                copy.save()
            self.assertIn("Servers", str(caught.exception))
            frappe.db.rollback()
            self.assertEqual(self.stored_rows(doc.name), rows)

        second = self.load(doc.name).servers[1]
        self.assertTrue(second.lease_owner)  # claimed when the first ended
        app = app_log()  # what the app's jobs and requests set: INFO, engine lines included
        self.assertEqual(app.level, logging.INFO)
        self.assertIn(app.handlers[0], logging.getLogger("agent_update").handlers)
        with self.assertLogs("agent_update", "INFO") as logged:
            service.runner.run_row(doc.name, second.idx, second.lease_owner)
        # Every step the server went through is in the app's log (the engine's lines).
        head = f"{doc.name} #2 {second.server}: "
        moves = [m.split(head, 1)[1].split(":")[0] for m in logged.output if head in m]
        reached = [move.split("-> ")[-1] for move in moves if "->" in move]
        for seen_step in ("Running/command", "Running/command_sent", "Success"):
            self.assertIn(seen_step, reached)
        done = self.load(doc.name)
        self.assertEqual(done.status, "Success", done.halt_reason)
        for row in done.servers:
            self.assertEqual(row.status, "Success", row.log)
            self.assertEqual(self.running(row.server), good)
