"""The stall alert: a Running rollout where no server ended for a while.

It only tells (Frappe: a notification to the managers and followers; CLI: a
line and a non-zero exit); it never acts on servers: a slow RQ restart can be
legitimate, and only an operator knows. One alert per quiet spell: a row
ending starts a new spell.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_update.rollout.model import Update, UpdateStatus


@dataclass(frozen=True)
class Stall:
    """A rollout found stalled: which, since when, and a sentence for people."""

    name: str
    since: float
    message: str


def quiet_since(update: Update, last_row_end: float | None) -> float | None:
    """Since when nothing ended: the last row's end, or the start if none ended."""
    times = [t for t in (last_row_end, update.started_at) if t is not None]
    return max(times) if times else None


def check(update: Update, last_row_end: float | None, in_flight: int, now: float) -> Stall | None:
    """A Stall to report now, or None (off, not running, recent, or already told)."""
    if not update.stall_minutes or update.status is not UpdateStatus.RUNNING:
        return None
    since = quiet_since(update, last_row_end)
    if since is None or now - since < update.stall_minutes * 60:
        return None
    if update.stall_notified_at is not None and update.stall_notified_at >= since:
        return None
    minutes = (now - since) / 60
    message = (
        f"{update.name}: no server ended in {minutes:.0f} min "
        f"(alert after {update.stall_minutes:g} min); {in_flight} in flight. "
        "Nothing was done to the servers: look at the rows in flight, then Pause or Abort."
    )
    return Stall(update.name, since, message)
