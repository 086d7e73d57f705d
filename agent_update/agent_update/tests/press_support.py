"""A loopback fleet registered only as Frappe Press server records (Press site only).

Each host becomes a record of one of Press's server doctypes (``Server``,
``Database Server``, ``Proxy Server``) named ``h<N>.<tag>.press.test``, with
its ``ip``, ``ssh_user``, ``ssh_port`` and an encrypted ``agent_password``,
and no Agent Server anywhere. Records are written as Press's own provisioning
leaves them (``db_insert``: Press's controller would create DNS records and
firewalls), the password through Frappe's encrypted store. Agent Update
Settings' Press templates point at the fleet: every agent on one port
(``Fleet(same_agent_port=True)``), each host's directory by its hostname.
"""

from __future__ import annotations

from typing import Any, ClassVar

import frappe
from frappe.utils.password import set_encrypted_password

from agent_update.agent_update.tests.support import FleetCase, override_settings
from agent_update.testing import Fleet, FleetHost

PRESS = "press" in frappe.get_installed_apps()
KINDS = ("Server", "Database Server", "Proxy Server")


class PressFleetCase(FleetCase):
    """FleetCase whose servers exist only in Press (``KIND_OF`` picks each host's doctype)."""

    TAG = "fleet"  # the records' domain: <tag>.press.test (one per class)
    KIND_OF: ClassVar[tuple[str, ...]] = ("Server", "Server", "Database Server", "Proxy Server")
    kinds: ClassVar[dict[str, str]]  # server name -> its Press doctype

    @classmethod
    def setUpClass(cls) -> None:
        cls.kinds = {}
        super().setUpClass()

    @classmethod
    def make_fleet(cls) -> Fleet:
        return Fleet(cls.FLEET_SIZE, start_timeout=90, same_agent_port=True)

    @classmethod
    def server_name(cls, host: FleetHost) -> str:
        return f"h{host.address.rsplit('.', 1)[1]}.{cls.TAG}.press.test"

    @classmethod
    def _configure_settings(cls) -> None:
        super()._configure_settings()
        restore = override_settings(
            {
                "press_agent_url": f"http://{{ip}}:{cls.fleet.agent_port}",
                "press_agent_dir": f"{cls.fleet.root}/{{hostname}}/agent",
                "press_agent_user": "{ssh_user}",
                "agent_ca_bundle": "",
            }
        )
        cls.addClassCleanup(restore)

    @classmethod
    def register(cls, name: str, host: FleetHost, **extra: Any) -> None:
        index = len(cls.kinds)
        doctype = extra.pop("doctype", None) or cls.KIND_OF[index % len(cls.KIND_OF)]
        press_record(
            doctype, name, host.address, host.ssh_user, host.ssh_port, host.agent_password, **extra
        )
        cls.kinds[name] = doctype

    @classmethod
    def _clean_up(cls) -> None:
        super()._clean_up()
        for name, doctype in cls.kinds.items():
            remove_press_record(doctype, name)
            frappe.db.delete("Agent Server Hold", {"server": name})
            frappe.db.delete("Agent Server Lease", {"name": name})
        frappe.db.commit()

    @classmethod
    def updates_of_class(cls) -> list[str]:
        return frappe.db.sql_list(
            "SELECT DISTINCT parent FROM `tabAgent Rollout Server` WHERE server LIKE %s",
            f"%.{cls.TAG}.press.test",
        ) or [""]

    def new_update(self, commit: str = "", hosts: int | None = None, **fields: Any) -> Any:
        values = {
            "server_types": [{"server_type": k} for k in KINDS],
            "server_pattern": f"*.{self.TAG}.press.test",
            **fields,
        }
        return super().new_update(commit, hosts, **values)

    def switch(self, server: str, fresh: bool = True) -> int:
        """Press's halt_agent_jobs on the server's record (``fresh``: as committed now)."""
        if fresh:
            frappe.db.commit()
        return int(frappe.db.get_value(self.kinds[server], server, "halt_agent_jobs") or 0)

    def set_record(self, server: str, **values: Any) -> None:
        frappe.db.set_value(self.kinds[server], server, values, update_modified=False)
        frappe.db.commit()


def press_record(
    doctype: str, name: str, ip: str, ssh_user: str, ssh_port: int, password: str, **extra: Any
) -> None:
    """A Press server record as provisioning leaves it, password encrypted by Frappe."""
    frappe.db.delete(doctype, {"name": name})
    hostname, domain = name.split(".", 1)
    doc = frappe.get_doc(
        {
            "doctype": doctype,
            "name": name,
            "hostname": hostname,
            "domain": domain,
            "ip": ip,
            "ssh_user": ssh_user,
            "ssh_port": ssh_port,
            "status": "Active",
            "provider": "Generic",
            **extra,
        }
    )
    doc.db_insert()
    set_encrypted_password(doctype, name, password, "agent_password")
    frappe.db.commit()


def remove_press_record(doctype: str, name: str) -> None:
    frappe.db.delete(doctype, {"name": name})
    frappe.db.delete("__Auth", {"doctype": doctype, "name": name})
