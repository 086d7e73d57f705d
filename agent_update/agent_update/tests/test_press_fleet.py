"""Rollouts over servers that exist only in Frappe Press (the Press bench runs these).

Every host of the loopback fleet is a Press ``Server``, ``Database Server`` or
``Proxy Server`` record (press_support.py); there is no Agent Server. What
each test asserts is read on the hosts (the commit the web runs) and in
Press's own records (``halt_agent_jobs``, the switch the update must leave
as it found it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import frappe

from agent_update import api, press_hooks, tasks
from agent_update.agent_update.tests.press_support import PRESS, PressFleetCase
from agent_update.agent_update.tests.test_worker import WorkerCase
from agent_update.frappe_registry import list_servers
from agent_update.remote.connector import ServerLink

HOLD = "Agent Server Hold"


@contextmanager
def switch_at_command(case: PressFleetCase) -> Iterator[dict[str, int]]:
    """Each server's halt_agent_jobs as its update command starts (read from the database)."""
    seen: dict[str, int] = {}
    original = ServerLink.run_command

    def observed(link: ServerLink, commit: str, timeout: float):  # type: ignore[no-untyped-def]
        seen.setdefault(link.server.name, case.switch(link.server.name, fresh=False))
        return original(link, commit, timeout)

    with mock.patch.object(ServerLink, "run_command", observed):
        yield seen


def rename_record(doctype: str, old: str, new: str) -> None:
    """What a rename leaves for this app to see: the old name gone, the machine the same."""
    table = f"`tab{doctype}`"  # one of Press's doctype names, never typed by a user
    frappe.db.sql(f"UPDATE {table} SET name=%s WHERE name=%s", [new, old])  # noqa: S608
    frappe.db.commit()


if PRESS:

    class TestPressFleet(PressFleetCase):
        FLEET_SIZE = 4
        TAG = "fleet"

        def test_a_rollout_over_press_records_only(self) -> None:
            names = sorted(self.servers)
            self.assertFalse(frappe.get_all("Agent Server", filters={"name": ["in", names]}))
            listed = {s.name: s for s in list_servers() if s.name in self.servers}
            self.assertEqual({n: s.server_type for n, s in listed.items()}, self.kinds)
            self.assertTrue(all(s.agent_password == "" for s in listed.values()))  # never listed
            good = self.fleet.commits.good
            doc = self.new_update(commit=good)
            self.assertEqual(
                {r.server: (r.server_type, r.server_doctype) for r in doc.servers},
                {n: (k, k) for n, k in self.kinds.items()},
            )
            api.build_plan(doc.name, now=True)
            with switch_at_command(self) as seen:
                api.start(doc.name, now=True)
            done = self.load(doc.name)
            self.assertEqual(done.status, "Success", done.halt_reason)
            for row in done.servers:
                self.assertEqual(row.status, "Success", row.log)
                self.assertEqual(self.running(row.server), good, row.server)
                self.assertEqual(row.current_commit, self.fleet.commits.base)
            self.assertEqual(seen, dict.fromkeys(names, 1))  # halted while it updated
            self.assertEqual({n: self.switch(n) for n in names}, dict.fromkeys(names, 0))
            self.assertFalse(frappe.get_all(HOLD, filters={"server": ["in", names]}))
            leases = frappe.get_all(
                "Agent Server Lease", filters={"name": ["in", names]}, fields=["name", "rollout"]
            )
            self.assertEqual([lease for lease in leases if lease.rollout], [])  # none held
            # The agent password stayed in Press: no copy in this app's records.
            stored = frappe.as_json(frappe.get_doc("Agent Rollout", doc.name).as_dict())
            for name, host in self.servers.items():
                self.assertNotIn(host.agent_password, stored, name)

        def test_press_switches_are_read_again_at_each_turn(self) -> None:
            opted, broken, renamed, kept = sorted(self.servers)
            new_name = "moved." + renamed
            doc = self.new_update(commit=self.fleet.commits.good)
            api.build_plan(doc.name, now=True)
            self.assertEqual(self.load(doc.name).status, "Pending")
            self.set_record(opted, disable_agent_update=1)
            self.set_record(broken, status="Broken")
            kind = self.kinds[renamed]
            try:
                rename_record(kind, renamed, new_name)
                api.start(doc.name, now=True)
            finally:
                rename_record(kind, new_name, renamed)
                self.set_record(opted, disable_agent_update=0)
                self.set_record(broken, status="Active")
            rows = self.rows(doc.name)
            expect = {
                opted: "disable_agent_update is set",
                broken: "status is Broken",
                renamed: "no longer in the server registry",
            }
            for server, words in expect.items():
                self.assertEqual(rows[server].status, "Skipped", rows[server].log)
                self.assertIn(words, rows[server].reason)
                self.assertEqual(self.running(server), self.fleet.commits.base, server)
                self.assertEqual(self.switch(server), 0, server)
            self.assertEqual(rows[kept].status, "Success", rows[kept].log)
            self.assertEqual(self.running(kept), self.fleet.commits.good)

        def test_a_server_an_operator_halted_stays_halted_and_a_failure_restores(self) -> None:
            halted, failing = sorted(self.servers)[:2]
            self.set_record(halted, halt_agent_jobs=1)
            try:
                doc = self.new_update(
                    commit=self.fleet.commits.crash,
                    server_pattern=f"{halted},{failing}",
                    stop_after_single_rollback=0,
                )
                api.build_plan(doc.name, now=True)
                with switch_at_command(self) as seen:
                    api.start(doc.name, now=True)
                rows = self.rows(doc.name)
                for server in (halted, failing):
                    self.assertEqual(rows[server].status, "Rolled Back", rows[server].log)
                    self.assertEqual(self.running(server), self.fleet.commits.base)
                self.assertEqual(seen, {halted: 1, failing: 1})
                self.assertEqual(self.switch(halted), 1)  # the operator's halt is kept
                self.assertEqual(self.switch(failing), 0)  # this app's own is undone
            finally:
                self.set_record(halted, halt_agent_jobs=0)

        def test_a_server_in_press_own_running_update_waits_for_it(self) -> None:
            busy = sorted(self.servers)[0]
            press_update = frappe.get_doc(
                {
                    "doctype": "Agent Update",
                    "status": "Running",
                    "repo": "https://github.com/frappe/agent",
                    "branch": "master",
                    "servers": [
                        {"server_type": self.kinds[busy], "server": busy, "status": "Pending"}
                    ],
                }
            )
            press_update.name = "AU-test-" + frappe.generate_hash(length=8)
            press_update.db_insert()
            for row in press_update.servers:
                row.name = frappe.generate_hash(length=10)
                row.parent, row.parenttype = press_update.name, "Agent Update"
                row.parentfield = "servers"
                row.db_insert()
            frappe.db.commit()
            try:
                doc = self.new_update(commit=self.fleet.commits.good, server_pattern=busy)
                api.build_plan(doc.name, now=True)
                api.start(doc.name, now=True)
                (row,) = self.load(doc.name).servers
                self.assertEqual(row.status, "Pending", row.log)
                self.assertIn(f"busy in Press Agent Update {press_update.name}", row.reason)
                self.assertEqual(self.running(busy), self.fleet.commits.base)
                self.assertEqual(self.switch(busy), 0)
                frappe.db.set_value("Agent Update", press_update.name, "status", "Success")
                frappe.db.commit()
                tasks.tick()  # the watchdog kicks the waiting rollout
                done = self.load(doc.name)
                self.assertEqual(done.status, "Success", done.servers[0].log)
                self.assertEqual(self.running(busy), self.fleet.commits.good)
            finally:
                frappe.delete_doc("Agent Update", press_update.name, force=True)
                frappe.db.commit()

        def test_press_form_warns_of_servers_an_agent_rollout_holds(self) -> None:
            shared = sorted(self.servers)[0]
            paths = frappe.get_hooks("doc_events").get("Agent Update", {}).get("validate", [])
            self.assertIn("agent_update.press_hooks.warn_shared_servers", paths)
            doc = self.new_update(commit=self.fleet.commits.good, server_pattern=shared)
            api.build_plan(doc.name, now=True)  # Pending: it will update the server
            press_update = frappe.get_doc(
                {
                    "doctype": "Agent Update",
                    "servers": [{"server_type": self.kinds[shared], "server": shared}],
                }
            )
            frappe.clear_messages()
            frappe.get_attr(paths[-1])(press_update, "validate")
            said = " ".join(str(m) for m in frappe.get_message_log())
            self.assertIn(doc.name, said)
            self.assertIn(shared, said)
            self.assertEqual(press_hooks.shared_servers(["no.such.server"]), {})

        def test_an_agent_server_of_a_press_name_is_refused(self) -> None:
            name = sorted(self.servers)[0]
            with self.assertRaises(frappe.ValidationError) as caught:
                frappe.get_doc(
                    {
                        "doctype": "Agent Server",
                        "server_name": name,
                        "host": "127.0.0.9",
                        "agent_url": "http://127.0.0.9:1",
                    }
                ).insert(ignore_permissions=True)
            self.assertIn("Frappe Press already has", str(caught.exception))

    class TestPressWorkers(PressFleetCase, WorkerCase):
        """Real RQ workers: a worker killed mid-row leaves the switch held, never lost."""

        FLEET_SIZE = 2
        TAG = "workers"
        KIND_OF = ("Server", "Database Server")

        def test_a_worker_killed_mid_row_keeps_the_hold_until_the_row_ends(self) -> None:
            slow = self.fleet.commits.slow
            name, victim = self.killed_mid_row(slow)  # no after-hook ran
            self.assertEqual(self.switch(victim.server), 1)
            self.assertTrue(frappe.db.exists(HOLD, {"server": victim.server}))
            tasks.tick()  # no worker yet: the hold of a row in flight is kept
            self.assertEqual(self.switch(victim.server), 1)
            self.wait_lease_expired(victim)
            self.worker()
            self.assertEqual(tasks.tick(), [name])
            self.wait(lambda: self.status(name) == "Success", 120, "Success", every=0.3)
            for row in self.load(name).servers:
                self.assertEqual(row.status, "Success", row.log)
                self.assertEqual(self.running(row.server), slow)
                self.assertEqual(self.switch(row.server), 0, row.server)
            self.assertFalse(frappe.get_all(HOLD, filters={"rollout": name}))

        def test_the_watchdog_restores_a_hold_whose_row_has_ended(self) -> None:
            """A runner killed between the row's end and its after-hook."""
            server = sorted(self.servers)[0]
            doc = self.new_update(commit=self.fleet.commits.good, server_pattern=server)
            frappe.db.set_value("Agent Rollout Server", doc.servers[0].name, "status", "Success")
            from agent_update import frappe_job_holds

            frappe_job_holds.hold(server, doc.name, 1)
            self.assertEqual(self.switch(server), 1)
            tasks.tick()
            self.assertEqual(self.switch(server), 0)
            self.assertFalse(frappe.get_all(HOLD, filters={"rollout": doc.name}))
