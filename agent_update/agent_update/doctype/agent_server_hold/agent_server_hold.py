"""Agent Server Hold: a server's agent jobs halted by a rollout's row.

Written by agent_update.frappe_job_holds before the switch moves, with the
value to put back when the row ends; the form only shows it.
"""

from __future__ import annotations

from frappe.model.document import Document


class AgentServerHold(Document):
    pass
