"""Agent Update Server: one server's row in an Agent Update (engine: ``Row``)."""

from frappe.model.document import Document


class AgentUpdateServer(Document):
    """Written by the runner one field set at a time (see frappe_store)."""


def on_doctype_update() -> None:
    """Runner writes go by (parent, idx): index them, so one write locks one row."""
    import frappe

    frappe.db.add_index("Agent Update Server", ["parent", "idx"])
