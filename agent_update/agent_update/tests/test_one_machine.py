"""One machine, one server: the Agent Server form refuses a second entry for a machine;
the row jobs share one index of the registry."""

from __future__ import annotations

import frappe
from frappe.tests.utils import FrappeTestCase

from agent_update import frappe_machines
from agent_update.frappe_service import get_service

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

    def test_the_jobs_share_one_index_until_the_registry_changes(self) -> None:
        """Each row job is a fresh process: the index of the registry (lease keys by
        machine) is computed once per registry state and taken from the site's cache."""
        self.add("a", "127.0.0.1")
        computed: list[int] = []

        def compute() -> dict[str, str]:
            computed.append(1)
            return frappe_machines_keys()

        first = frappe_machines.shared_keys(compute)
        self.assertEqual(first[PREFIX + "a"], PREFIX + "a")
        frappe.local.cache = {}  # what a new job's process starts with
        self.assertEqual(frappe_machines.shared_keys(compute), first)
        self.assertEqual(len(computed), 1)
        self.add("e", "127.0.0.2")  # a new record: a new fingerprint, computed again
        second = frappe_machines.shared_keys(compute)
        self.assertEqual(len(computed), 2)
        self.assertEqual(second[PREFIX + "e"], PREFIX + "e")
        runner = get_service().runner  # what the jobs' service uses
        self.assertIs(runner.machines._memo, frappe_machines.shared_keys)
        self.assertEqual(runner.machines.key(PREFIX + "e"), PREFIX + "e")
        self.assertEqual(len(computed), 2)  # the runner took the cached index


def frappe_machines_keys() -> dict[str, str]:
    """The registry's lease keys, computed as a runner computes them (no cache)."""
    from agent_update.rollout import machines

    return machines.lease_keys(get_service().store.list_servers(), machines.literal)
