"""Agent Server: the registry an Agent Rollout lists its servers from."""

from __future__ import annotations

import frappe
from frappe import _
from frappe.model.document import Document

from agent_update import press_servers
from agent_update.frappe_codec import server_from
from agent_update.remote.resolve import addresses
from agent_update.rollout import machines, rules
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Server


class AgentServer(Document):
    def validate(self) -> None:
        """The engine's own rules for every field that reaches a shell, SSH or a URL.

        Caught here rather than as a failed row in the middle of a rollout;
        the message names the field by this form's label.
        """
        try:
            candidate = server_from(self)
            server = rules.validate_server(
                candidate.copy(name=self.name or self.server_name or candidate.name)
            )
        except ValidationError as exc:
            frappe.throw(_("{0}: {1}").format(_(self.meta.get_label(exc.field)), exc.message))
        self._refuse_a_second_entry(server)
        self._refuse_a_press_name(server.name)
        self.host = server.host
        self.ssh_user = server.ssh_user
        self.agent_user = server.agent_user
        self.agent_dir = server.agent_dir
        self.agent_url = server.agent_url

    def _refuse_a_press_name(self, name: str) -> None:
        """Press's servers are the registry where Press runs: never register one twice."""
        doctype = press_servers.doctype_of(name)
        if doctype:
            frappe.throw(
                _("{0}: Frappe Press already has a {1} named {2}; rollouts use it").format(
                    _(self.meta.get_label("server_name")), _(doctype), name
                ),
                title=_("Registered in Press"),
            )

    def _refuse_a_second_entry(self, server: Server) -> None:
        """One machine, one registry entry: same resolved address, SSH port and agent directory.

        Two entries for one machine would let two rollouts run on it at once
        (the server lease is keyed by the machine too, for entries saved before).
        """
        columns = ["name", "host", "ssh_port", "agent_dir", "status"]
        others = [
            server_from(r)
            for r in frappe.get_all(
                "Agent Server", fields=columns, filters={"name": ["!=", server.name]}
            )
        ]
        found = machines.duplicate_of(server, others, addresses)
        if found is not None:
            other, where = found
            frappe.throw(
                _("{0}: {1}").format(
                    _(self.meta.get_label("host")), machines.duplicate_message(server, other, where)
                ),
                title=_("Duplicate server"),
            )
