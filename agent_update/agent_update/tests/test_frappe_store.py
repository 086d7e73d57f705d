"""The Store over frappe.db: O(1) writes per transition, leases, fencing, permissions."""

from __future__ import annotations

import re
import threading
import time
from typing import Any
from unittest import mock

import frappe

from agent_update import api
from agent_update.agent_update.tests.support import FakeConnector, FleetCase
from agent_update.frappe_service import get_service
from agent_update.frappe_store import FrappeStore
from agent_update.rollout.errors import LeaseLost
from agent_update.testing import FleetHost

WRITE = re.compile(r"^\s*(UPDATE|INSERT|DELETE|REPLACE)\b", re.IGNORECASE)


class TestFrappeStore(FleetCase):
    """One small fleet gives the git upstream; the write counts use a fake connector."""

    FLEET_SIZE = 1
    SERVER_TYPE = "Loopback Store"

    def fake_update(self, count: int) -> Any:
        """An update of ``count`` registry entries that never leave this process."""
        server_type = f"{self.SERVER_TYPE} x{count}"
        host = self.fleet.hosts[0]
        for i in range(count):
            # Its own agent directory: one machine per entry (one machine, one server).
            agent_dir = f"{host.agent_dir}-{count}-{i}"
            fake = FleetHost(**{**host.__dict__, "name": f"fake{i}", "agent_dir": agent_dir})
            self.register(f"{server_type} {i:03d}", fake, server_type=server_type)
        return self.new_update(
            commit=self.fleet.commits.good, server_types=[{"server_type": server_type}]
        )

    def measure(self, count: int) -> dict[str, Any]:
        doc = self.fake_update(count)
        service = get_service(FakeConnector(self.fleet.commits.base))
        service.build_plan(doc.name)
        statements: list[str] = []
        transitions: list[int] = []
        original_sql = frappe.db.sql

        def counting_sql(query: Any, *args: Any, **kwargs: Any) -> Any:
            text = str(query)
            if WRITE.match(text):
                statements.append(text)
            return original_sql(query, *args, **kwargs)

        listener = service.runner.listener

        def counting_listener(name: str, row: Any, update: Any) -> None:
            if row is not None:
                transitions.append(row.idx)
            listener(name, row, update)

        service.runner.listener = counting_listener
        began = time.monotonic()
        with mock.patch.object(frappe.db, "sql", side_effect=counting_sql):
            service.start(doc.name)
        elapsed = time.monotonic() - began
        final = self.load(doc.name)
        self.assertEqual(final.status, "Success")
        self.assertEqual({r.status for r in final.servers}, {"Success"})
        row_writes = [s for s in statements if "UPDATE `tabAgent Rollout Server`" in s]
        for sql in row_writes:  # every row write names one row
            self.assertRegex(sql, r"idx=%s", sql)
        return {
            "rows": count,
            "writes": len(statements),
            "transitions": len(transitions),
            "per_row": len(statements) / count,
            "per_transition": len(statements) / len(transitions),
            "seconds": elapsed,
        }

    def test_writes_per_transition_do_not_grow_with_the_number_of_rows(self) -> None:
        small, large = self.measure(3), self.measure(30)
        print(f"\nwrites per transition: 3 rows {small}\n                      30 rows {large}")
        self.assertEqual(small["transitions"] / 3, large["transitions"] / 30)
        # Per row: the same fixed number of statements; only the update's
        # own start and end are shared, so the large rollout is not worse.
        self.assertLessEqual(large["per_row"], small["per_row"])
        self.assertLessEqual(large["per_transition"], small["per_transition"])
        # Under 18 a server (17.07 measured): 13 for the row's steps and leases, 1 more
        # the first time a server is leased (its Agent Server Lease row is inserted),
        # 4 for the hold of its agent jobs (write the hold, set the switch, put it
        # back, delete the hold).
        self.assertLess(large["per_row"], 18)

    def test_claim_is_compare_and_set_and_saves_are_fenced(self) -> None:
        doc = self.fake_update(2)
        store = FrappeStore()
        now = time.time()
        self.assertTrue(store.claim_row(doc.name, 1, "worker-a", now, 30))
        self.assertFalse(store.claim_row(doc.name, 1, "worker-b", now, 30))
        self.assertTrue(store.claim_row(doc.name, 1, "worker-a", now + 1, 30))  # renewal
        self.assertTrue(store.claim_row(doc.name, 1, "worker-b", now + 60, 30))  # expired
        row = store.get_row(doc.name, 1)
        with self.assertRaises(LeaseLost):
            store.save_row(doc.name, row.copy(reason="late"), ["reason"], owner="worker-a")
        store.save_row(doc.name, row.copy(reason="mine"), ["reason"], owner="worker-b")
        store.save_row(doc.name, row.copy(reason="mine"), ["reason"], owner="worker-b")  # same
        self.assertEqual(store.get_row(doc.name, 1).reason, "mine")
        store.release_row(doc.name, 1, "worker-b")
        self.assertEqual(store.get_row(doc.name, 1).lease_owner, "")
        # The runner renews leases from a thread of its own: it gets its own connection.
        renewed: list[bool] = []
        thread = threading.Thread(
            target=lambda: renewed.append(store.claim_row(doc.name, 1, "worker-b", now + 2, 30))
        )
        thread.start()
        thread.join(30)
        self.assertEqual(renewed, [True])
        self.assertEqual(_from_another_connection(doc.name, 1), "worker-b")
        # The lease is committed at once: another connection sees it.
        self.assertTrue(store.claim_row(doc.name, 2, "worker-c", now, 30))
        self.assertEqual(_from_another_connection(doc.name, 2), "worker-c")

    def test_engine_times_round_trip_and_display_fields_are_datetimes(self) -> None:
        doc = self.fake_update(1)
        store = FrappeStore()
        row = store.get_row(doc.name, 1)
        stamp = 1_790_000_000.25
        store.save_row(
            doc.name, row.copy(started_at=stamp, deadline=stamp + 5), ["started_at", "deadline"]
        )
        again = store.get_row(doc.name, 1)
        self.assertAlmostEqual(again.started_at, stamp, places=5)
        self.assertAlmostEqual(again.deadline, stamp + 5, places=5)
        shown = frappe.db.get_value("Agent Rollout Server", {"parent": doc.name}, "start")
        self.assertEqual(type(shown).__name__, "datetime")

    def test_nobody_without_the_role_reads_or_runs_anything(self) -> None:
        doc = self.new_update(commit=self.fleet.commits.good)
        outsider = _user("agent-update-outsider@example.com", [])
        manager = _user("agent-update-manager@example.com", ["Agent Update Manager"])
        try:
            frappe.set_user(outsider)
            for doctype in ("Agent Rollout", "Agent Server", "Agent Update Settings"):
                self.assertFalse(frappe.has_permission(doctype, "read"), doctype)
            for call in (
                lambda: api.build_plan(doc.name, now=True),
                lambda: api.start(doc.name, now=True),
                lambda: api.pause(doc.name),
                lambda: api.resume(doc.name),
                lambda: api.force_continue(doc.name),
                lambda: api.split(doc.name, 2),
                lambda: api.summary(doc.name),
                lambda: api.tick(),
            ):
                with self.assertRaises(frappe.PermissionError):
                    call()
            frappe.set_user(manager)
            self.assertTrue(frappe.has_permission("Agent Rollout", "write", doc=doc.name))
            self.assertEqual(api.summary(doc.name)["status"], "Draft")
            with self.assertRaises(frappe.ValidationError):  # allowed, but not now
                api.pause(doc.name)
        finally:
            frappe.set_user("Administrator")


def _user(email: str, roles: list[str]) -> str:
    if not frappe.db.exists("User", email):
        frappe.get_doc(
            {
                "doctype": "User",
                "email": email,
                "first_name": email.split("@")[0],
                "send_welcome_email": 0,
            }
        ).insert(ignore_permissions=True)
    user = frappe.get_doc("User", email)
    user.set("roles", [{"role": role} for role in roles])
    user.save(ignore_permissions=True)
    frappe.db.commit()
    return email


def _from_another_connection(name: str, idx: int) -> str:
    """Read a row's lease owner over a connection of its own (a second worker's view)."""
    site, sites_path = frappe.local.site, frappe.local.sites_path
    seen: dict[str, str] = {}

    def peek() -> None:
        frappe.init(site=site, sites_path=sites_path)
        try:
            frappe.connect()
            found = frappe.db.sql(
                "SELECT lease_owner FROM `tabAgent Rollout Server` WHERE parent=%s AND idx=%s",
                [name, idx],
            )
            seen["owner"] = found[0][0]
        finally:
            frappe.destroy()

    thread = threading.Thread(target=peek)
    thread.start()
    thread.join(30)
    return seen.get("owner", "")
