"""Agent Update Settings: credentials and knobs shared by every rollout.

The SSH private key is a Password field (stored encrypted by Frappe) kept
off the form: the desk pastes it through ``agent_update.api.set_ssh_private_key``
(a multi-line dialog) and shows only its fingerprint.
"""

from __future__ import annotations

import ssl

import frappe
from frappe import _
from frappe.model.document import Document

from agent_update import press_rules
from agent_update.frappe_log import app_log
from agent_update.keytext import describe_key, normalize_key
from agent_update.remote import script
from agent_update.rollout import refs
from agent_update.rollout.errors import AgentUpdateError, ValidationError


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
            press_rules.validate_access(
                press_rules.PressAccess.of(
                    self.press_agent_url, self.press_agent_dir, self.press_agent_user
                )
            )
            self.agent_ca_bundle = check_ca_bundle(self.agent_ca_bundle or "")
        except ValidationError as exc:
            frappe.throw(_("{0}: {1}").format(_(self.meta.get_label(exc.field)), exc.message))
        self.check_ssh_key()

    def check_ssh_key(self) -> None:
        """A new key is repaired, loaded and fingerprinted here, before Frappe encrypts it.

        Asterisks mean unchanged (Frappe's placeholder for a stored password);
        empty means removed. The fingerprint is all the form ever shows.
        """
        key = self.ssh_private_key or ""
        if not key:
            self.ssh_key_fingerprint = ""
            return
        if self.is_dummy_password(key):
            return
        key = normalize_key(key)
        try:
            self.ssh_key_fingerprint = describe_key(key)
        except Exception as exc:  # a damaged key can fail deep in the parser, not only cleanly
            why = exc if isinstance(exc, AgentUpdateError) else _("not a readable private key")
            # The type only: the message of a key parser may quote the key.
            app_log().warning(f"ssh_private_key refused: {type(exc).__name__}")
            label = _(self.meta.get_label("ssh_private_key"))
            frappe.throw(_("{0}: {1}").format(label, why), title=_("Invalid {0}").format(label))
        self.ssh_private_key = key


def check_ca_bundle(pem: str) -> str:
    """PEM certificates that Python's TLS loads (trimmed), else an error naming the field."""
    pem = pem.strip()
    if not pem:
        return ""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValidationError("agent_ca_bundle", "must hold PEM certificates (BEGIN CERTIFICATE)")
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ValidationError("agent_ca_bundle", f"not a readable CA bundle: {exc}") from exc
    return pem
