"""Agent Server: the registry an Agent Rollout lists its servers from."""

from __future__ import annotations

import frappe
from frappe import _
from frappe.model.document import Document

from agent_update.frappe_codec import server_from
from agent_update.rollout import rules
from agent_update.rollout.errors import ValidationError


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
        self.host = server.host
        self.ssh_user = server.ssh_user
        self.agent_user = server.agent_user
        self.agent_dir = server.agent_dir
        self.agent_url = server.agent_url
