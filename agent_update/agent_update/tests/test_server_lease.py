"""One rollout per server in the Frappe store: the same contract as the SQLite store's."""

from __future__ import annotations

import frappe

from agent_update.agent_update.tests.support import FakeConnector, FleetCase
from agent_update.frappe_service import get_service
from agent_update.frappe_store import FrappeStore


class TestServerLease(FleetCase):
    FLEET_SIZE = 1
    SERVER_TYPE = "Loopback Lease"

    def server(self) -> str:
        return next(iter(self.servers))

    def test_compare_and_set_renew_expire_release(self) -> None:
        store, server = FrappeStore(), self.server()
        self.assertEqual(store.claim_server(server, "A", 1, 100, 10), "")
        self.assertEqual(store.claim_server(server, "B", 1, 101, 10), "A")
        self.assertEqual(store.claim_server(server, "A", 1, 105, 10), "")  # renewed to 115
        self.assertEqual(store.server_holders([server], 112), {server: ("A", 1)})
        self.assertEqual(store.foreign_leases("B", 112), {server: ("A", 1)})
        self.assertEqual(store.foreign_leases("A", 112), {})
        self.assertEqual(store.server_holders([server], 115), {})  # expired with the row
        self.assertEqual(store.claim_server(server, "B", 1, 115, 10), "")
        store.release_server(server, "A", 1)  # not the holder: nothing happens
        self.assertEqual(store.server_holders([server], 116), {server: ("B", 1)})
        store.release_server(server, "B", 1)
        self.assertEqual(store.server_holders([server], 116), {})
        self.assertEqual(store.claim_server("no such server", "A", 1, 0, 10), "")

    def test_the_desk_checks_leftovers_list_held_leases_only(self) -> None:
        """desk_rpc.leftovers (what the desk check and the soak call a leak) sees a held
        lease, and not one released (cleared, its record kept)."""
        from agent_update.testing import desk_rpc

        store, server = FrappeStore(), self.server()
        store.claim_server(server, "A", 1, 100, 10)
        self.assertIn(server, desk_rpc.leftovers()["leases"])
        store.release_server(server, "A", 1)
        self.assertTrue(frappe.db.exists("Agent Server Lease", server))
        self.assertNotIn(server, desk_rpc.leftovers()["leases"])

    def test_overlap_warning_and_waiting_lookup(self) -> None:
        service = get_service(FakeConnector(self.fleet.commits.base))
        first = self.new_update(commit=self.fleet.commits.good)
        second = self.new_update(commit=self.fleet.commits.good)
        service.build_plan(first.name)
        planned = service.build_plan(second.name)
        self.assertIn(f"{first.name} (Pending): {self.server()}", planned.overlap_warning)
        frappe.db.commit()
        self.assertEqual(self.load(second.name).overlap_warning, planned.overlap_warning)
        store = FrappeStore()
        self.assertEqual(store.waiting_for(self.server()), [])  # none is Running
        frappe.db.sql("UPDATE `tabAgent Rollout` SET status='Running' WHERE name=%s", second.name)
        frappe.db.commit()
        self.assertEqual(store.waiting_for(self.server()), [second.name])
        (row,) = store.pending_on(second.name, [self.server(), "no such server"])
        self.assertEqual((row.idx, row.server), (1, self.server()))
