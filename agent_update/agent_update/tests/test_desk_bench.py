"""The desk benchmark's pieces (benchmarks/desk.py) work: 20 simulated servers, in this process.

The benchmark runs them in RQ workers at 2,000 rows; here the same jobs run
inline, so a broken piece fails the suite instead of a benchmark nobody reads.
"""

from __future__ import annotations

import json

import frappe
from frappe.tests.utils import FrappeTestCase

from agent_update import frappe_codec as codec
from agent_update import frappe_service, tasks
from agent_update.agent_update.tests import desk_fleet, desk_views
from agent_update.agent_update.tests.support import FakeConnector
from agent_update.frappe_service import INLINE_FLAG

ROWS = 20
OLD = "0" * 40


class TestDeskBench(FrappeTestCase):
    TYPE = "Desk Bench Test"

    def setUp(self) -> None:
        frappe.set_user("Administrator")
        desk_fleet.clean_up(self.TYPE)
        self.addCleanup(desk_fleet.clean_up, self.TYPE)
        inline = frappe.flags.get(INLINE_FLAG)
        frappe.flags[INLINE_FLAG] = True
        self.addCleanup(frappe.flags.__setitem__, INLINE_FLAG, inline)
        self.entries = desk_fleet.servers(ROWS, self.TYPE)
        desk_fleet.register(self.entries)
        self.name = desk_fleet.new_update(self.entries, self.TYPE, lanes=4)
        desk_fleet.reset_counts(self.name)
        self.addCleanup(desk_fleet.reset_counts, self.name)

    def rows(self) -> list[dict]:
        frappe.db.commit()
        return frappe.get_all(
            codec.ROW_DOCTYPE,
            filters={"parent": self.name, "parenttype": codec.UPDATE_DOCTYPE},
            fields=["server", "status", "reported_commit"],
            order_by="idx asc",
        )

    def test_rows_end_success_through_the_jobs_with_their_writes_counted(self) -> None:
        with desk_fleet.simulated(lambda: FakeConnector(OLD)):
            tasks.build_plan(self.name)
            planned = desk_fleet.counts(self.name)
            tasks.start(self.name)
        done = desk_fleet.counts(self.name)
        rows = self.rows()
        self.assertEqual([r.server for r in rows], [s.name for s in self.entries])
        self.assertEqual(
            {(r.status, r.reported_commit) for r in rows}, {("Success", desk_fleet.TARGET)}
        )
        self.assertEqual(frappe.db.get_value(codec.UPDATE_DOCTYPE, self.name, "status"), "Success")
        self.assertEqual((planned["jobs"], done["jobs"]), (1, 2))
        self.assertGreater(planned["store"], ROWS)  # Build Plan rewrote every row
        per_server = (done["store"] - planned["store"]) / ROWS
        self.assertGreater(per_server, 4)  # claim, precheck, command, verdict, release at least
        self.assertLess(per_server, 16)  # test_frappe_store's bound per row
        # Every store write is one statement; the hooks and the framework add their own.
        self.assertGreaterEqual(done["sql"] - planned["sql"], done["store"] - planned["store"])
        # Outside the context the jobs are the app's own again.
        self.assertIs(tasks.get_service, frappe_service.get_service)
        self.assertEqual(set(desk_fleet.counts("AU-none").values()), {0})

    def test_the_views_answer_as_the_desk_asks(self) -> None:
        form = json.loads(desk_views.form_load(self.name).body)
        self.assertEqual(len(form["docs"][0]["servers"]), ROWS)
        self.assertIn("Success", form["docs"][0]["__onload"]["statuses"]["final"])
        self.assertIn("docinfo", form)
        poll = json.loads(desk_views.form_poll(self.name).body)["message"]
        self.assertEqual((poll["name"], len(poll["rows"])), (self.name, ROWS))
        self.assertIn("seconds_left", json.loads(desk_views.form_eta(self.name).body)["message"])
        args = desk_views.list_args()
        fields = json.loads(args["fields"])
        for field in ("name", "status", "progress", "halted", "aborted", "split_from"):
            self.assertIn(f"`tab{codec.UPDATE_DOCTYPE}`.`{field}`", fields)
        page = json.loads(desk_views.list_view().body)["message"]
        self.assertIn(self.name, {row[page["keys"].index("name")] for row in page["values"]})
        count = json.loads(desk_views.list_count().body)["message"]
        self.assertGreaterEqual(count, 1)
