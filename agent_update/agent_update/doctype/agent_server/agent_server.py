"""Agent Server: the registry an Agent Update lists its servers from."""

from __future__ import annotations

import frappe
from frappe import _
from frappe.model.document import Document


class AgentServer(Document):
    def validate(self) -> None:
        """Catch typos here rather than as a failed row in the middle of a rollout."""
        self.host = (self.host or "").strip()
        self.agent_url = (self.agent_url or "").strip().rstrip("/")
        if not 0 < (self.ssh_port or 0) < 65536:
            frappe.throw(_("{0} must be between 1 and 65535").format(_("SSH Port")))
        if not self.agent_url.startswith(("http://", "https://")):
            frappe.throw(_("{0} must start with http:// or https://").format(_("Agent URL")))
        if not (self.agent_dir or "").startswith("/"):
            frappe.throw(_("{0} must be an absolute path").format(_("Agent Directory")))
