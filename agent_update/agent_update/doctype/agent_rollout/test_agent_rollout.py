"""Agent Rollout under a real bench, against the loopback fleet (rows run inline).

Every rollout test asserts what the agents really run afterwards
(``fleet.running_commit``), not only what the rows say.
"""

from __future__ import annotations

import time

import frappe

from agent_update import api, tasks
from agent_update.agent_update.tests.support import FleetCase
from agent_update.frappe_service import get_service


class TestAgentRollout(FleetCase):
    SERVER_TYPE = "Loopback Inline"

    def test_save_fills_source_and_servers_and_checks_rules(self) -> None:
        first = sorted(self.servers)[0]
        frappe.db.set_value("Agent Server", first, "disable_agent_update", 1)
        try:
            opted_out = self.new_update(commit=self.fleet.commits.good)
        finally:
            frappe.db.set_value("Agent Server", first, "disable_agent_update", 0)
        self.assertNotIn(first, [r.server for r in opted_out.servers])
        self.assertEqual(len(opted_out.servers), len(self.servers) - 1)

        head = self.fleet.add_commit("head-for-save-test")  # the branch head moves
        doc = self.new_update()
        self.assertEqual(doc.repo, self.fleet.upstream_url)
        self.assertEqual(doc.branch, self.fleet.branch)
        self.assertEqual(doc.commit_hash, head)
        self.assertIn("head-for-save-test", doc.commit_message)
        self.assertEqual([r.server for r in doc.servers], sorted(self.servers))
        self.assertEqual({r.status for r in doc.servers}, {"Draft"})

        cases = [
            ({"restart_web_workers": 0}, "Restart Web Workers"),
            ({"commit_hash": "0" * 40}, "Commit Hash"),
            ({"commit_hash": self.fleet.commits.side}, "Commit Hash"),
            ({"restart_redis": 1}, "Restart Redis"),
            ({"lanes": 500}, "Lanes"),
            ({"bake_time": 60}, "Bake Time (Seconds)"),
            ({"min_healthy_time": 60}, "Minimum Healthy Time (Seconds)"),
            ({"branch": "no-such-branch"}, "Branch"),
        ]
        for changes, label in cases:
            with self.subTest(label=label), self.assertRaises(frappe.ValidationError) as caught:
                self.new_update(**changes)
            self.assertIn(label, str(caught.exception))

    def test_build_plan_skips_a_server_already_on_target_then_start_updates_all(self) -> None:
        good = self.fleet.commits.good
        skipped = sorted(self.servers)[0]
        self.fleet.set_commit(self.host(skipped), good)
        doc = self.new_update(commit=good)
        api.build_plan(doc.name, now=True)
        rows = self.rows(doc.name)
        self.assertEqual(self.load(doc.name).status, "Pending")
        self.assertEqual(rows[skipped].status, "Skipped")
        self.assertEqual({r.status for n, r in rows.items() if n != skipped}, {"Pending"})

        api.start(doc.name, now=True)
        done = self.load(doc.name)
        self.assertEqual(done.status, "Success", done.halt_reason)
        self.assertEqual(done.progress, 100)
        self.assertTrue(done.start and done.end and done.end >= done.start)
        for server, row in self.rows(doc.name).items():
            self.assertEqual(self.running(server), good, row.log)
            self.assertEqual(row.status, "Skipped" if server == skipped else "Success", row.log)
            if server != skipped:
                self.assertEqual(row.reported_commit, good)
                self.assertEqual(row.current_commit, self.fleet.commits.base)
                self.assertTrue(row.start and row.end)
        halted = frappe.get_all(
            "Agent Server", filters={"server_type": self.SERVER_TYPE}, pluck="agent_jobs_halted"
        )
        self.assertEqual(set(halted), {0})  # released after every server

    def test_servers_listed_before_the_first_save_are_all_updated(self) -> None:
        """The form (and REST, Data Import) may list the servers of a new rollout."""
        good = self.fleet.commits.good
        chosen = sorted(self.servers)[:2]
        listed = [{"server": s, "server_type": self.SERVER_TYPE} for s in chosen]
        doc = self.new_update(commit=good, servers=listed)
        steps = frappe.get_all("Agent Rollout Server", filters={"parent": doc.name}, pluck="step")
        self.assertEqual(steps, ["", ""])  # never NULL: the engine's queries skip NULL steps
        api.build_plan(doc.name, now=True)
        api.start(doc.name, now=True)
        done = self.load(doc.name)
        self.assertEqual(done.status, "Success", done.halt_reason)
        self.assertEqual(sorted(r.server for r in done.servers), chosen)
        for row in done.servers:
            self.assertEqual((row.status, self.running(row.server)), ("Success", good), row.log)

    def test_a_crashing_commit_is_rolled_back_and_the_old_code_runs(self) -> None:
        doc = self.new_update(commit=self.fleet.commits.crash, hosts=2)
        self.assertEqual(len(doc.servers), 2)  # rows may be removed before Start
        api.build_plan(doc.name, now=True)
        api.start(doc.name, now=True)
        done = self.load(doc.name)
        first, second = done.servers
        self.assertEqual(first.status, "Rolled Back", first.log)
        self.assertEqual(second.status, "Pending")  # stop after single rollback (default)
        self.assertEqual(done.status, "Failure")
        self.assertTrue(done.halted)
        self.assertEqual(self.running(first.server), self.fleet.commits.base)
        self.assertIn("Failure:", first.log)

    def test_test_mode_pauses_then_resume_finishes(self) -> None:
        good = self.fleet.commits.good
        doc = self.new_update(
            commit=good,
            hosts=3,
            run_on_fewer_servers_and_pause=1,
            no_of_servers_to_update_initially=1,
        )
        api.build_plan(doc.name, now=True)
        api.start(doc.name, now=True)
        paused = self.load(doc.name)
        self.assertEqual(paused.status, "Paused")
        self.assertTrue(paused.paused_due_to_test_mode)
        statuses = [r.status for r in paused.servers]
        self.assertEqual(statuses.count("Success"), 1)
        self.assertEqual(statuses.count("Pending"), 2)
        self.assertEqual([self.running(r.server) for r in paused.servers].count(good), 1)

        api.resume(doc.name, now=True)
        done = self.load(doc.name)
        self.assertEqual(done.status, "Success")
        for row in done.servers:
            self.assertEqual(self.running(row.server), good)

    def test_split_update_makes_linked_batches_that_both_finish(self) -> None:
        good = self.fleet.commits.good2
        doc = self.new_update(commit=good)
        api.build_plan(doc.name, now=True)
        with self.assertRaises(frappe.ValidationError):
            api.split(doc.name, batches=len(self.servers) + 1, now=True)
        out = api.split(doc.name, batches=2, now=True)
        names = out["updates"]
        self.assertEqual(len(names), 2)
        original, batch = self.load(names[0]), self.load(names[1])
        self.assertEqual(batch.split_from, original.name)
        self.assertEqual((original.status, batch.status), ("Pending", "Pending"))
        self.assertEqual(batch.commit_hash, original.commit_hash)
        self.assertEqual(len(original.servers), 2)
        self.assertEqual(len(batch.servers), 2)
        self.assertEqual([r.idx for r in batch.servers], [1, 2])
        all_servers = [r.server for r in original.servers + batch.servers]
        self.assertEqual(sorted(all_servers), sorted(self.servers))

        for name in names:
            api.start(name, now=True)
        for name in names:
            self.assertEqual(self.load(name).status, "Success")
        for server in self.servers:
            self.assertEqual(self.running(server), good)

    def test_force_continue_after_a_fatal_row(self) -> None:
        good = self.fleet.commits.good
        victim = sorted(self.servers)[0]
        self.fleet.sabotage(self.host(victim), good)  # good crashes on this host only
        doc = self.new_update(
            commit=good,
            hosts=2,
            rollback_to_specific_commit=1,
            default_rollback_commit=self.fleet.commits.crash,  # the rollback crashes too
        )
        api.build_plan(doc.name, now=True)
        api.start(doc.name, now=True)
        failed = self.load(doc.name)
        first, second = failed.servers
        self.assertEqual(first.status, "Fatal", first.log)
        self.assertEqual(second.status, "Pending")
        self.assertEqual(failed.status, "Failure")
        self.assertTrue(failed.halted)
        with self.assertRaises(frappe.ValidationError):
            api.resume(doc.name, now=True)  # a refusal names the status, at once

        # The operator repairs the host, then forces the rollout on.
        self.unsabotage(self.host(victim))
        self.fleet.set_commit(self.host(victim), self.fleet.commits.base)
        api.force_continue(doc.name, now=True)
        done = self.load(doc.name)
        self.assertEqual(done.status, "Success", done.halt_reason)
        self.assertFalse(done.halted)
        for row in done.servers:
            self.assertEqual(row.status, "Success", row.log)
            self.assertEqual(self.running(row.server), good)

    def test_tick_resumes_a_row_a_dead_worker_left_and_ignores_live_leases(self) -> None:
        good = self.fleet.commits.good
        doc = self.new_update(commit=good, hosts=2)
        api.build_plan(doc.name, now=True)
        service = get_service()
        service.runner.launcher = lambda *args: None  # the worker dies before it runs
        service.start(doc.name)
        first = self.load(doc.name).servers[0]
        self.assertEqual((first.status, first.step), ("Pending", "precheck"))
        self.assertTrue(first.lease_owner)

        # It died after sending the command: the host was updated, nothing recorded.
        host = self.host(first.server)
        pids = {n: p for n, (_s, p) in self.fleet.program_states(host).items()}
        self.fleet.set_commit(host, good)
        frappe.db.sql(
            "UPDATE `tabAgent Rollout Server` SET status='Running', step='command_sent', "
            "pids_before=%s, attempts=1, lease_owner='dead-worker', lease_expires=%s "
            "WHERE name=%s",
            [frappe.as_json(pids), time.time() + 600, first.name],
        )
        frappe.db.commit()
        self.assertEqual(tasks.tick(), [])  # a live lease: nothing to do
        self.assertEqual(self.load(doc.name).servers[0].step, "command_sent")

        frappe.db.set_value("Agent Rollout Server", first.name, "lease_expires", time.time() - 1)
        frappe.db.commit()
        self.assertEqual(tasks.tick(), [doc.name])
        done = self.load(doc.name)
        self.assertEqual(done.status, "Success", done.halt_reason)
        resumed = done.servers[0]
        self.assertEqual(resumed.status, "Success", resumed.log)
        self.assertIn("resumed: agent already on target", resumed.log)
        self.assertRegex(resumed.log, r"resumed by \S+:\d+:\w+ \(dead-worker's lease expired\)")
        self.assertEqual(resumed.attempts, 1)  # not updated a second time
        for row in done.servers:
            self.assertEqual(self.running(row.server), good)

    def test_config_is_read_only_once_started_and_a_stale_form_loses_nothing(self) -> None:
        doc = self.new_update(commit=self.fleet.commits.good, hosts=1)
        api.build_plan(doc.name, now=True)
        stale = self.load(doc.name)  # opened while Pending
        api.start(doc.name, now=True)
        with self.assertRaises(frappe.TimestampMismatchError):
            stale.save()  # nothing typed: a stale save must not undo the runner's work
        frappe.db.rollback()
        kept = self.load(doc.name)
        self.assertEqual((kept.status, kept.servers[0].status), ("Success", "Success"))
        kept.lanes = 3
        with self.assertRaises(frappe.ValidationError) as caught:
            kept.save()
        self.assertIn("Lanes", str(caught.exception))
        kept.reload()
        kept.servers = []
        with self.assertRaises(frappe.ValidationError):
            kept.save()
