"""The real frappe/agent registered as a Frappe Press Server (Press site only).

One loopback server set up as a standard server runs it (agent_update/testing/
realagent): supervisord as root, the agent under its own user. The Press
record carries only what Press holds (ip, ``ssh_user`` root, ssh_port, the
encrypted agent password); the app reaches the agent with Press's templates
pointed at this host, and its default status and update commands. The test
reads the truth on the host: the commit the running web loaded.
"""

from __future__ import annotations

import os
from typing import ClassVar

import frappe
from frappe.tests.utils import FrappeTestCase

from agent_update import api
from agent_update import frappe_codec as codec
from agent_update.agent_update.tests.press_support import (
    PRESS,
    press_record,
    remove_press_record,
)
from agent_update.agent_update.tests.support import override_settings
from agent_update.frappe_service import INLINE_FLAG
from agent_update.testing.realagent import RealAgentFleet, locate

NAME = "f1.realagent.press.test"
_TARBALL, _WHY = locate()
if PRESS and _TARBALL is None:
    raise RuntimeError(f"the Press bench runs the real agent too: {_WHY}")

if PRESS:

    class TestRealAgentAsPressServer(FrappeTestCase):
        fleet: ClassVar[RealAgentFleet]

        @classmethod
        def setUpClass(cls) -> None:
            super().setUpClass()
            if os.geteuid() != 0:
                raise RuntimeError("the real agent's server needs root (users, sudoers)")
            cls.fleet = RealAgentFleet(1).start()
            cls.addClassCleanup(cls.fleet.stop)
            host = cls.fleet.hosts[0]
            put_back = override_settings(
                {
                    "default_repo": str(cls.fleet.upstream),
                    "default_branch": cls.fleet.branch,
                    "ssh_private_key": cls.fleet.client_key,
                    "known_hosts": cls.fleet.known_hosts,
                    "poll_interval": 0.2,
                    "probe_timeout": 5,
                    "connect_timeout": 10,
                    "lease_ttl": 60,
                    "press_agent_url": host.agent_url.replace(host.address, "{ip}"),
                    "press_agent_dir": str(host.agent_dir),
                    "press_agent_user": host.user,
                }
            )
            press_record("Server", NAME, host.address, "root", host.ssh_port, host.password)
            frappe.flags[INLINE_FLAG] = True

            def restore() -> None:
                for name in frappe.db.sql_list(
                    "SELECT DISTINCT parent FROM `tabAgent Rollout Server` WHERE server=%s", NAME
                ):
                    frappe.delete_doc(codec.UPDATE_DOCTYPE, name, force=True)
                remove_press_record("Server", NAME)
                put_back()

            cls.addClassCleanup(restore)

        def test_the_real_agent_updated_as_a_press_server(self) -> None:
            host, commits = self.fleet.hosts[0], self.fleet.commits
            self.assertEqual(host.running_commit(), commits.a)
            doc = frappe.get_doc(
                {
                    "doctype": codec.UPDATE_DOCTYPE,
                    "commit_hash": commits.b,
                    "server_types": [{"server_type": "Server"}],
                    "server_pattern": NAME,
                    "agent_startup_timeout_minutes": 3,
                    "command_timeout_minutes": 5,
                }
            ).insert()
            frappe.db.commit()
            planned = [(r.server, r.server_doctype) for r in doc.servers]
            self.assertEqual(planned, [(NAME, "Server")])
            api.build_plan(doc.name, now=True)
            api.start(doc.name, now=True)
            frappe.db.commit()
            done = frappe.get_doc(codec.UPDATE_DOCTYPE, doc.name)
            (row,) = done.servers
            self.assertEqual((done.status, row.status), ("Success", "Success"), row.log)
            self.assertEqual(host.head(), commits.b)
            self.assertEqual(host.running_commit(), commits.b)  # what the web loaded
            self.assertEqual(row.current_commit, commits.a)
            self.assertEqual(frappe.db.get_value("Server", NAME, "halt_agent_jobs"), 0)
            self.assertNotIn(host.password, frappe.as_json(done.as_dict()))
