"""Shared setup of the Frappe tests: a loopback fleet registered as Agent Servers.

Each test class starts its own fleet (real sshd, supervisord and test agent
per host on 127.0.0.N), points Agent Update Settings at it, registers its
hosts as Agent Servers of a server type of its own, and removes all of that
again at the end. With ``INLINE`` (the default) every row runs in the test's
process (frappe.flags.agent_update_inline), so a Start returns when the
rollout has settled; a class with ``INLINE = False`` runs real RQ workers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import frappe
from frappe.tests.utils import FrappeTestCase

from agent_update import frappe_codec as codec
from agent_update.frappe_service import INLINE_FLAG
from agent_update.rollout.commands import PlanOutcome
from agent_update.rollout.model import Server, Update
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs
from agent_update.testing import Fleet, FleetHost

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll (in a fresh transaction each time) until ``predicate`` is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        frappe.db.commit()  # a new snapshot: see what the workers committed
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def override_settings(values: dict[str, Any]) -> Callable[[], None]:
    """Set Agent Update Settings' ``values``; returns what puts the old ones back."""
    settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
    plain = [f for f in values if f != "ssh_private_key"]
    before = {f: settings.get(f) for f in plain}
    if "ssh_private_key" in values:
        before["ssh_private_key"] = (
            settings.get_password("ssh_private_key", raise_exception=False) or ""
        )
    settings.update(values)
    settings.save(ignore_permissions=True)

    def restore() -> None:
        old = frappe.get_single(codec.SETTINGS_DOCTYPE)
        old.update(before)
        old.flags.ignore_mandatory = True
        old.save(ignore_permissions=True)
        frappe.db.commit()

    return restore


class FleetCase(FrappeTestCase):
    """A fleet of ``FLEET_SIZE`` hosts as the Agent Servers of ``SERVER_TYPE``."""

    FLEET_SIZE = 4
    SERVER_TYPE = "Loopback Test"
    INLINE = True
    LEASE_TTL = 20.0
    fleet: ClassVar[Fleet]
    servers: ClassVar[dict[str, FleetHost]]  # Agent Server name -> fleet host

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.fleet = cls.make_fleet().start()
        cls.addClassCleanup(cls.fleet.stop)
        cls._configure_settings()
        cls.servers = {}
        for host in cls.fleet.hosts:
            name = cls.server_name(host)
            cls.register(name, host)
            cls.servers[name] = host
        frappe.flags[INLINE_FLAG] = cls.INLINE
        frappe.db.commit()
        cls.addClassCleanup(cls._clean_up)

    @classmethod
    def make_fleet(cls) -> Fleet:
        return Fleet(cls.FLEET_SIZE, start_timeout=90)

    @classmethod
    def server_name(cls, host: FleetHost) -> str:
        return f"{cls.SERVER_TYPE} {host.name}"

    @classmethod
    def _configure_settings(cls) -> None:
        restore = override_settings(
            {
                "default_repo": cls.fleet.upstream_url,
                "default_branch": cls.fleet.branch,
                "ssh_private_key": cls.fleet.client_key,
                "known_hosts": cls.fleet.known_hosts,
                "poll_interval": 0.1,
                "probe_timeout": 3,
                "connect_timeout": 5,
                "lease_ttl": cls.LEASE_TTL,
                "default_lanes": 1,  # whatever the site's operators chose
            }
        )
        cls.addClassCleanup(restore)

    @classmethod
    def register(cls, name: str, host: FleetHost, **extra: Any) -> None:
        if frappe.db.exists(codec.SERVER_DOCTYPE, name):
            frappe.delete_doc(codec.SERVER_DOCTYPE, name, force=True, ignore_permissions=True)
        frappe.get_doc(
            {
                "doctype": codec.SERVER_DOCTYPE,
                "server_name": name,
                "host": host.address,
                "ssh_port": host.ssh_port,
                "ssh_user": host.ssh_user,
                "server_type": cls.SERVER_TYPE,
                "agent_dir": host.agent_dir,
                "agent_user": host.agent_user,
                "agent_url": host.agent_url,
                "agent_password": host.agent_password,
                **extra,
            }
        ).insert(ignore_permissions=True)

    @classmethod
    def _clean_up(cls) -> None:
        frappe.set_user("Administrator")
        frappe.db.rollback()
        names = cls.updates_of_class()
        # A failed test may leave one Running: end it so it can go (and no tick resumes it).
        frappe.db.sql("UPDATE `tabAgent Rollout` SET status='Failure' WHERE name IN %s", [names])
        for name in names:
            frappe.delete_doc(codec.UPDATE_DOCTYPE, name, force=True, ignore_permissions=True)
        for name in frappe.get_all(
            codec.SERVER_DOCTYPE,
            filters={"server_type": ["like", cls.SERVER_TYPE + "%"]},
            pluck="name",
        ):
            frappe.delete_doc(codec.SERVER_DOCTYPE, name, force=True, ignore_permissions=True)
        frappe.db.commit()

    @classmethod
    def updates_of_class(cls) -> list[str]:
        """Updates of this class's server types, all starting with SERVER_TYPE."""
        return frappe.db.sql_list(
            "SELECT DISTINCT parent FROM `tabAgent Update Server Type` "
            "WHERE server_type LIKE %s AND parenttype='Agent Rollout'",
            cls.SERVER_TYPE + "%",
        ) or [""]

    def setUp(self) -> None:
        frappe.set_user("Administrator")
        self.fleet.reset()

    # ---------------------------------------------------------- helpers
    def new_update(self, commit: str = "", hosts: int | None = None, **fields: Any) -> Any:
        """Insert an Agent Rollout of this class's servers (the first ``hosts`` only)."""
        values = {
            "doctype": codec.UPDATE_DOCTYPE,
            "commit_hash": commit,
            "agent_startup_timeout_minutes": 0.25,
            "command_timeout_minutes": 1,
            "failed_command_grace": 4,
            "min_healthy_time": 1,  # as the engine's fleet tests (testing.harness)
            "server_types": [{"server_type": self.SERVER_TYPE}],
            **fields,
        }
        doc = frappe.get_doc(values).insert()
        if hosts is not None:
            doc.servers = doc.servers[:hosts]
            doc.save()
        frappe.db.commit()
        return doc

    def load(self, name: str) -> Any:
        frappe.db.commit()
        return frappe.get_doc(codec.UPDATE_DOCTYPE, name)

    def rows(self, name: str) -> dict[str, Any]:
        return {r.server: r for r in self.load(name).servers}

    def host(self, server: str) -> FleetHost:
        return self.servers[server]

    def running(self, server: str) -> str:
        return self.fleet.running_commit(self.host(server))

    def unsabotage(self, host: FleetHost) -> None:
        """Undo Fleet.sabotage: the host's agent no longer crashes on any commit."""
        config = Path(host.agent_dir) / "config.json"
        data = json.loads(config.read_text())
        data["crash_commits"] = []
        config.write_text(json.dumps(data))


class FakeConnector:
    """Servers that always update cleanly, for counting writes without I/O."""

    def __init__(self, base: str) -> None:
        self.commits: dict[str, str] = {}
        self.base = base

    def plan_probe(self, server: Server) -> PlanOutcome:
        return PlanOutcome(commit=self.commits.get(server.name, self.base))

    def open(self, server: Server, update: Update) -> _FakeLink:
        return _FakeLink(self, server.name)


class _FakeLink:
    def __init__(self, connector: FakeConnector, name: str) -> None:
        self.connector, self.name, self.pid = connector, name, 100

    def _commit(self) -> str:
        return self.connector.commits.get(self.name, self.connector.base)

    def precheck(self) -> PrecheckObs:
        return PrecheckObs(programs={"agent:web": ("RUNNING", self.pid)}, commit=self._commit())

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        self.connector.commits[self.name] = commit
        self.pid += 1
        return CommandObs(exit_code=0, output="ok")

    def probe(self) -> ProbeObs:
        programs = {"agent:web": ("RUNNING", self.pid)}
        return ProbeObs(pong=True, commit=self._commit(), programs=programs)

    def close(self) -> None:
        return None
