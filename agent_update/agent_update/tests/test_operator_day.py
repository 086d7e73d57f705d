"""The operator's day in the desk: four eyes, a scheduled start, alerts to the
update's people, the ETA of a paused rollout, the app's workspace.

Judged on what the hosts run and what is stored, not only on a status.
"""

from __future__ import annotations

import time
from unittest import mock

import frappe
from frappe.utils import add_to_date, now_datetime

from agent_update import api, tasks
from agent_update import frappe_codec as codec
from agent_update.agent_update.tests.support import FleetCase
from agent_update.rollout.errors import TickError

MANAGER = "Agent Update Manager"


def user(email: str) -> str:
    if not frappe.db.exists("User", email):
        frappe.get_doc(
            {
                "doctype": "User",
                "email": email,
                "first_name": email.split("@")[0],
                "send_welcome_email": 0,
                "roles": [{"role": MANAGER}],
            }
        ).insert(ignore_permissions=True)
    return email


class TestOperatorDay(FleetCase):
    FLEET_SIZE = 2
    SERVER_TYPE = "Loopback Day"

    def pids(self) -> dict[str, int]:
        return {s: self.fleet.program_states(h)["agent:web"][1] for s, h in self.servers.items()}

    def planned(self, **fields) -> str:
        doc = self.new_update(self.fleet.commits.good, lanes=2, **fields)
        api.build_plan(doc.name, now=True)
        self.assertEqual(self.load(doc.name).status, "Pending")
        return doc.name

    def test_a_start_whose_job_the_queue_lost_is_done_by_the_next_tick(self) -> None:
        """Redis restarted between the click and a worker taking the job: the tick starts
        it (the click is kept as the scheduled start), and the servers run the commit."""
        name = self.planned()
        with mock.patch("frappe.enqueue", return_value=None):  # the job, lost
            api.start(name)
        frappe.db.commit()
        doc = self.load(name)
        self.assertEqual(doc.status, "Pending")
        self.assertIsNotNone(doc.scheduled_start)
        api.tick(now=True)
        self.assertEqual(self.load(name).status, "Success")
        for server in self.servers:
            self.assertEqual(self.running(server), self.fleet.commits.good)

    def test_the_tick_goes_past_a_rollout_it_cannot_resume_and_says_which(self) -> None:
        """Two planners died; one rollout's stored config no longer passes the rules. The
        other is planned again, then the job fails naming the first (the scheduler logs it)."""
        broken, fine = self.planned(), self.planned()
        for name in (broken, fine):
            dead = {"status": "Planning", "lease_owner": "dead", "lease_expires": 1.0}
            frappe.db.set_value(codec.UPDATE_DOCTYPE, name, dead)
        frappe.db.set_value(codec.UPDATE_DOCTYPE, broken, "lanes", 0)
        frappe.db.commit()
        with self.assertRaises(TickError) as caught:
            tasks.tick()
        self.assertEqual(list(caught.exception.failed), [broken])
        self.assertIn("lanes", caught.exception.failed[broken])
        self.assertIn(fine, caught.exception.touched)
        doc = self.load(fine)
        self.assertEqual(doc.status, "Pending", doc.stuck_at_planning_reason)
        for row in doc.servers:
            self.assertEqual(row.status, "Pending", row.reason)
            host = self.servers[row.server]
            self.assertEqual(row.current_commit, self.fleet.reported_commit(host))
        self.assertEqual(self.load(broken).status, "Planning")

    def test_start_by_one_manager_waits_for_approval_by_another(self) -> None:
        alice, bob = user("alice.day@example.com"), user("bob.day@example.com")
        name = self.planned(approval_required=1)
        frappe.db.commit()
        before = self.pids()
        frappe.set_user(alice)
        api.start(name, now=True)
        doc = self.load(name)
        self.assertEqual((doc.status, doc.start_requested_by), ("Pending", alice))
        self.assertEqual(self.pids(), before)  # no server touched
        with self.assertRaises(frappe.ValidationError):
            api.approve(name)  # the one who asked cannot approve
        frappe.set_user(bob)
        api.approve(name)
        frappe.set_user("Administrator")
        doc = self.load(name)
        self.assertEqual((doc.status, doc.approved_by), ("Success", bob))
        for server in self.servers:
            self.assertEqual(self.running(server), self.fleet.commits.good)
        notes = frappe.get_all(
            "Comment",
            filters={"reference_doctype": codec.UPDATE_DOCTYPE, "reference_name": name},
            pluck="content",
        )
        self.assertTrue(any("approved this update" in n for n in notes), notes)

    def test_a_scheduled_update_is_started_by_the_tick_at_its_time(self) -> None:
        name = self.planned(scheduled_start=add_to_date(now_datetime(), hours=1))
        # 3 s from now, set once planned: Build Plan may take longer than that on a busy machine.
        at = add_to_date(now_datetime(), seconds=3)
        frappe.db.set_value(codec.UPDATE_DOCTYPE, name, "scheduled_start", at)
        frappe.db.commit()
        before = self.pids()
        tasks.tick()
        self.assertEqual(self.load(name).status, "Pending")
        self.assertEqual(self.pids(), before)
        time.sleep(3.5)
        tasks.tick()
        doc = self.load(name)
        seen = (doc.stuck_at_planning_reason, str(doc.scheduled_start), str(now_datetime()))
        self.assertEqual(doc.status, "Success", seen)
        for server in self.servers:
            self.assertEqual(self.running(server), self.fleet.commits.good)

    def test_stall_alerts_go_to_the_people_of_the_update(self) -> None:
        carol, dave = user("carol.day@example.com"), user("dave.day@example.com")
        name = self.new_update(self.fleet.commits.good).name
        people = {"owner": carol, "start_requested_by": dave}
        frappe.db.set_value(codec.UPDATE_DOCTYPE, name, people)
        self.assertEqual(tasks.stall_recipients(name), sorted([carol, dave]))

    def test_a_paused_rollout_gives_no_end_time_and_counts_its_waves(self) -> None:
        name = self.new_update(self.fleet.commits.good, waves="1, 2").name
        frappe.db.set_value(codec.UPDATE_DOCTYPE, name, "status", "Paused")
        for row in self.load(name).servers:
            frappe.db.set_value(row.doctype, row.name, "status", "Pending")
        out = api.eta(name)
        self.assertIsNone(out["ends_at"])
        self.assertEqual((out["wave"], out["wave_count"]), (1, 2))
        self.assertIn("wave 1 of 2 (1 server, 1 at once)", out["wave_text"])

    def test_the_app_has_a_workspace(self) -> None:
        space = frappe.get_doc("Workspace", "Agent Rollouts")
        links = {s.link_to for s in space.shortcuts}
        self.assertLessEqual({codec.UPDATE_DOCTYPE, codec.SERVER_DOCTYPE}, links)

    def test_undo_takes_the_servers_back_to_what_they_ran(self) -> None:
        name = self.planned()
        api.start(name, now=True)
        self.assertEqual(self.load(name).status, "Success")
        out = api.undo(name, now=True)
        (back,) = out["updates"]
        self.assertEqual(out["left_out"], [])
        self.assertEqual(self.load(back).status, "Pending")  # planned, waiting for Start
        api.start(back, now=True)
        self.assertEqual(self.load(back).status, "Success")
        for server in self.servers:
            self.assertEqual(self.running(server), self.fleet.commits.base)

    def test_a_servers_history_lists_every_rollout_that_touched_it(self) -> None:
        first = self.planned()
        api.start(first, now=True)
        server = next(iter(self.servers))
        entries = api.server_history(server)
        mine = [e for e in entries if e["update"] == first]
        self.assertEqual(len(mine), 1)
        entry = mine[0]
        self.assertEqual((entry["status"], entry["after"]), ("Success", self.fleet.commits.good))
        self.assertEqual(entry["before"], self.fleet.commits.base)
        self.assertEqual(self.running(server), entry["after"])
