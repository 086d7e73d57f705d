"""One machine, one server: the Agent Server form refuses a second entry for a machine."""

from __future__ import annotations

import frappe
from frappe.tests.utils import FrappeTestCase

PREFIX = "au-one-machine-"


class TestOneMachineOneServer(FrappeTestCase):
    def tearDown(self) -> None:
        for name in frappe.get_all(
            "Agent Server", filters={"name": ["like", PREFIX + "%"]}, pluck="name"
        ):
            frappe.delete_doc("Agent Server", name, force=True, ignore_permissions=True)
        frappe.db.commit()  # the entries must not outlive the test

    def add(self, suffix: str, host: str, **values: object):
        return frappe.get_doc(
            {
                "doctype": "Agent Server",
                "server_name": PREFIX + suffix,
                "host": host,
                "agent_url": f"http://{host}:25052",
                **values,
            }
        ).insert(ignore_permissions=True)

    def test_a_second_entry_for_one_machine_is_refused_naming_the_first(self) -> None:
        self.add("a", "127.0.0.1")
        with self.assertRaises(frappe.ValidationError) as caught:
            self.add("b", "localhost")  # the same address, spelled otherwise
        message = str(caught.exception)
        self.assertIn(f"reaches the same machine as server {PREFIX}a", message)
        self.assertIn("127.0.0.1, SSH port 22, /home/frappe/agent", message)
        self.assertFalse(frappe.db.exists("Agent Server", PREFIX + "b"))

    def test_another_directory_or_port_is_another_machine(self) -> None:
        self.add("a", "127.0.0.1")
        self.add("c", "localhost", agent_dir="/home/frappe/agent2")
        self.add("d", "localhost", ssh_port=2222)
        moved = frappe.get_doc("Agent Server", PREFIX + "c")
        moved.agent_dir = "/home/frappe/agent/"
        with self.assertRaises(frappe.ValidationError):
            moved.save(ignore_permissions=True)
        moved.reload()
        moved.status = "Archived"  # an archived entry is no rival: how a duplicate is retired
        moved.agent_dir = "/home/frappe/agent"
        moved.save(ignore_permissions=True)
