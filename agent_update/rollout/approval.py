"""Four eyes before any server is touched: Start by one person, approval by another.

Pure: who asked and who approved are recorded on the update; the desk
checks roles (Agent Update Manager) before calling these, the CLI records
the name it is given. Whichever comes first, the two names must differ.
"""

from __future__ import annotations

from agent_update.rollout.errors import TransitionError
from agent_update.rollout.model import Update, UpdateStatus

OPEN = (UpdateStatus.DRAFT, UpdateStatus.PLANNING, UpdateStatus.PENDING)


def waiting(update: Update) -> bool:
    """Whether the update may not start yet for want of an approval."""
    return update.approval_required and not update.approved_by


def request_start(update: Update, user: str) -> Update:
    """Start pressed while approval is pending: remember who pressed it."""
    if update.approved_by and same(update.approved_by, user):
        raise TransitionError(
            f"{update.name} was approved by {update.approved_by}: its start must come "
            "from someone else (four eyes)"
        )
    return update.copy(start_requested_by=user)


def check_start(update: Update, user: str) -> None:
    """An approved update started by its own approver is refused."""
    if update.approval_required and update.approved_by and same(update.approved_by, user):
        raise TransitionError(
            f"{update.name} was approved by {update.approved_by}: its start must come "
            "from someone else (four eyes)"
        )


def approve(update: Update, user: str, now: float) -> Update:
    """Record the approval; refused when not needed, repeated, or from the one who started it."""
    if not update.approval_required:
        raise TransitionError(f"{update.name} needs no approval (approval is not required)")
    if update.status not in OPEN:
        raise TransitionError(f"Approve needs a Draft or Pending update, not {update.status.value}")
    if not user:
        raise TransitionError("approve: who approves is not known (give --user)")
    if update.approved_by:
        raise TransitionError(f"{update.name} is already approved by {update.approved_by}")
    if update.start_requested_by and same(update.start_requested_by, user):
        raise TransitionError(
            f"{user} asked for the start of {update.name}: the approval must come from "
            "another Agent Update Manager (four eyes)"
        )
    return update.copy(approved_by=user, approved_at=now)


def same(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def note(update: Update) -> str:
    """What the update waits for, in one line ("" when nothing)."""
    if not waiting(update):
        return ""
    if update.start_requested_by:
        return (
            f"awaiting approval: {update.start_requested_by} asked to start it; "
            "another Agent Update Manager must approve"
        )
    return "needs approval by an Agent Update Manager before it can start"
