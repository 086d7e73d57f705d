"""The app's tables as the Frappe store's SQL names them, and the status sets it filters by.

Kept apart so the store and its mixins (server queries, hooks on Press's side)
share one spelling of each table and of the row filter, without importing
one another.
"""

from __future__ import annotations

from agent_update import frappe_codec as codec
from agent_update.rollout.model import ENDED_ROW_STATUSES, IN_FLIGHT_ROW_STATUSES

UPDATE_TABLE = f"`tab{codec.UPDATE_DOCTYPE}`"
ROW_TABLE = f"`tab{codec.ROW_DOCTYPE}`"
TYPE_TABLE = f"`tab{codec.TYPE_DOCTYPE}`"
# an update's own rows: its servers table (parent = the update's name)
ROW_WHERE = "parent=%s AND parenttype='Agent Rollout' AND parentfield='servers'"
UNFINISHED = ("Planning", "Running", "Paused")
ENDED = tuple(s.value for s in ENDED_ROW_STATUSES)
IN_FLIGHT = tuple(s.value for s in IN_FLIGHT_ROW_STATUSES)
