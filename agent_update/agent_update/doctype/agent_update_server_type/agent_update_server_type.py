"""Agent Update Server Type: one server type an Agent Rollout includes."""

from frappe.model.document import Document


class AgentUpdateServerType(Document):
    """A plain child row: the engine reads it as ``Update.server_types``."""
