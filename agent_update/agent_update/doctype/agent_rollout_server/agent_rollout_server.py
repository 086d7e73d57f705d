"""Agent Rollout Server: one server's row in an Agent Rollout (engine: ``Row``)."""

from frappe.model.document import Document


class AgentRolloutServer(Document):
    """Written by the runner one field set at a time (see frappe_store)."""


def on_doctype_update() -> None:
    """Runner writes go by (parent, idx): index them, so one write locks one row."""
    import frappe

    frappe.db.add_index("Agent Rollout Server", ["parent", "idx"])
