"""Agent Update Settings: credentials and knobs shared by every rollout."""

from __future__ import annotations

import frappe
from frappe import _
from frappe.model.document import Document

from agent_update.remote import script
from agent_update.rollout import refs
from agent_update.rollout.errors import ValidationError


class AgentUpdateSettings(Document):
    def validate(self) -> None:
        """The engine's own validators, reported by this form's labels."""
        try:
            if self.default_repo:
                self.default_repo = refs.validate_repo_url(
                    self.default_repo.strip(), "default_repo"
                )
            if self.default_branch:
                self.default_branch = refs.validate_branch(
                    self.default_branch.strip(), "default_branch"
                )
            # Rendered with sample values and parsed by sh: a template that
            # cannot be built never reaches a server.
            script.validate_template(self.update_command_template or "")
            if self.status_command:
                script.render_status_command(self.status_command)
        except ValidationError as exc:
            frappe.throw(_("{0}: {1}").format(_(self.meta.get_label(exc.field)), exc.message))
        key = self.ssh_private_key or ""
        if key and set(key) != {"*"}:  # asterisks: unchanged, kept encrypted
            from agent_update.remote.ssh import load_private_key

            try:
                load_private_key(key)
            except Exception as exc:
                frappe.throw(_("{0}: {1}").format(_("SSH Private Key"), exc))
