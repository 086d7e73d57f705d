"""Agent Server Lease: which rollout's row holds a server now (one rollout per server).

Written by the engine only (agent_update.frappe_leases, compare-and-set SQL).
"""

from __future__ import annotations

from frappe.model.document import Document


class AgentServerLease(Document):
    pass
