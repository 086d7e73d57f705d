"""Waves, Abort and the stall alert from the desk, on a loopback fleet (rows run inline).

Each test asserts what the agents really run afterwards, and that servers
past a wave's gate were never touched.
"""

from __future__ import annotations

import frappe

from agent_update import api, tasks
from agent_update.agent_update.tests.support import FleetCase
from agent_update.rollout.stall import Stall


class TestAgentUpdateWaves(FleetCase):
    SERVER_TYPE = "Loopback Waves"

    def test_a_wave_gate_pauses_then_abort_rolls_back_what_this_update_changed(self) -> None:
        commit = self.fleet.add_commit("desk-waves")
        doc = self.new_update(
            commit=commit,
            waves="1, 1",
            lanes=2,
            stop_after_single_rollback=0,
            wave_gate_action="Pause",
        )
        names = [r.server for r in doc.servers]
        broken = self.host(names[1])  # the only server of wave 2
        self.fleet.sabotage(broken, commit)
        try:
            api.build_plan(doc.name, now=True)
            api.start(doc.name, now=True)
            paused = self.load(doc.name)
            self.assertEqual(paused.status, "Paused", paused.halt_reason)
            self.assertIn("wave 2 ended with 50% success", paused.pause_reason)
            statuses = [r.status for r in paused.servers]
            self.assertEqual(statuses, ["Success", "Rolled Back", "Pending", "Pending"])
            self.assertEqual(self.running(names[0]), commit)
            for name in names[1:]:
                self.assertEqual(self.running(name), self.fleet.commits.base)

            api.abort(doc.name, rollback=1, reason="bad commit", now=True)
            done = self.load(doc.name)
            self.assertEqual(done.status, "Aborted")
            self.assertEqual(done.halt_reason, "bad commit")
            self.assertTrue(done.aborted and done.abort_rollback)
            statuses = [r.status for r in done.servers]
            self.assertEqual(statuses, ["Rolled Back", "Rolled Back", "Pending", "Pending"])
            for name in names:
                self.assertEqual(self.running(name), self.fleet.commits.base)
            with self.assertRaises(frappe.ValidationError):
                api.resume(doc.name, now=True)
        finally:
            self.unsabotage(broken)

    def test_bad_wave_settings_are_refused_by_their_label(self) -> None:
        cases = [
            ({"waves": "1, lots"}, "Waves"),
            ({"failure_budget_percent": 100}, "Failure Budget (%)"),
        ]
        for changes, label in cases:
            with self.subTest(label=label), self.assertRaises(frappe.ValidationError) as caught:
                self.new_update(**changes)
            self.assertIn(label, str(caught.exception))

    def test_a_stall_is_written_on_the_timeline(self) -> None:
        doc = self.new_update(commit=self.fleet.commits.good, stall_minutes=5)
        tasks.notify_stall(Stall(doc.name, 0.0, f"{doc.name}: no server ended in 7 min"))
        comments = frappe.get_all(
            "Comment",
            filters={"reference_doctype": "Agent Rollout", "reference_name": doc.name},
            pluck="content",
        )
        self.assertIn(f"{doc.name}: no server ended in 7 min", comments)
