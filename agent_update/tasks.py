"""RQ job entry points (the buttons' work, one job per row) and the watchdog tick.

The API enqueues these on the app's queue (Pause and Resume change the
status in the request; Resume then queues a kick); each builds the engine's Service for the site and
calls it. A row job walks its server to an end state and then kicks the
update, which enqueues the next row at once: no waiting for a tick. The
scheduler's ``tick`` (every minute) only resumes what a dead worker left:
rows whose lease expired, a Build Plan whose planner died.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import frappe
from frappe.desk.doctype.notification_log.notification_log import enqueue_create_notification

from agent_update import frappe_codec as codec
from agent_update import frappe_job_holds as job_holds
from agent_update.frappe_log import app_log
from agent_update.frappe_service import get_service, notify_update
from agent_update.rollout.errors import AgentUpdateError, tick_outcome
from agent_update.rollout.stall import Stall


@contextlib.contextmanager
def _reported(name: str, action: str) -> Iterator[None]:
    """An engine refusal ends the job quietly, logged and shown to whoever clicked."""
    try:
        yield
    except AgentUpdateError as exc:
        frappe.db.rollback()
        message = f"{action} of {name}: {exc}"
        app_log().warning(message)
        frappe.log_error(title=f"Agent Update: {action} failed", message=message)
        frappe.publish_realtime("msgprint", message, user=frappe.session.user)
        frappe.db.commit()
    finally:
        notify_update(name)


def run_row(name: str, idx: int, owner: str) -> None:
    """Walk one claimed row to its end (the runner's launcher enqueues this)."""
    get_service().runner.run_row(name, idx, owner)


def kick(name: str) -> None:
    """Take the update-level decision now and launch what it starts (Resume queues this)."""
    with _reported(name, "Resume"):
        get_service().runner.kick(name)


def build_plan(name: str) -> None:
    with _reported(name, "Build Plan"):
        get_service().build_plan(name)


def start(name: str) -> None:
    """Start as the user who clicked (an approval, when required, comes from someone else).

    The watchdog tick may have started it already (api.start keeps the click
    as the scheduled start): then this finds it Running and only drives it.
    """
    with _reported(name, "Start"):
        service = get_service()
        service.start_if_ready(name, user=frappe.session.user)
        service.runner.kick(name)


def force_continue(name: str) -> None:
    with _reported(name, "Force Continue"):
        get_service().force_continue(name)


def split(name: str, batches: int) -> list[str]:
    names: list[str] = []
    with _reported(name, "Split Update"):
        names = get_service().split(name, int(batches))
        for other in names[1:]:
            notify_update(other)
    return names


def tick() -> list[str]:
    """Scheduler (every minute): resume rollouts a dead worker left; report stalls.

    First, servers whose agent jobs a dead runner's row left halted get their
    switch back (frappe_job_holds.sweep); rows still in flight keep theirs.
    A rollout the tick could not resume (TickError) does not keep the others
    or the stall alerts from their turn; the job then fails, so the scheduler's
    log shows it.
    """
    job_holds.sweep()
    service = get_service()
    touched, failure = tick_outcome(service.tick)
    for alert in service.stalls():
        notify_stall(alert)
    if failure is not None:
        raise failure
    return touched


STALL_ROLE = "Agent Update Manager"
SYSTEM_USERS = ("Administrator", "Guest")


def stall_recipients(name: str) -> list[str]:
    """The users an update's stall alert goes to (see notify_stall)."""
    doc = frappe.db.get_value(
        codec.UPDATE_DOCTYPE, name, ["owner", "start_requested_by", "approved_by"], as_dict=True
    )
    followers = frappe.get_all(
        "Document Follow",
        filters={"ref_doctype": codec.UPDATE_DOCTYPE, "ref_docname": name},
        pluck="user",
    )
    people = {u for u in (*(doc.values() if doc else ()), *followers) if u}
    if not people - set(SYSTEM_USERS):
        people |= set(
            frappe.get_all(
                "Has Role", filters={"role": STALL_ROLE, "parenttype": "User"}, pluck="parent"
            )
        )
    return sorted(people - {"Guest"})


def notify_stall(alert: Stall) -> None:
    """A Notification Log (and its email) for the people of this update.

    Who created it, who started or approved it and who follows it; the Agent
    Update Managers only when the update names nobody (nobody would hear).
    """
    people = stall_recipients(alert.name)
    emails = (
        frappe.get_all("User", filters={"name": ("in", people), "enabled": 1}, pluck="email")
        if people
        else []
    )
    frappe.get_doc(  # on the form's timeline too, whoever reads it later
        {
            "doctype": "Comment",
            "comment_type": "Info",
            "reference_doctype": codec.UPDATE_DOCTYPE,
            "reference_name": alert.name,
            "content": alert.message,
        }
    ).insert(ignore_permissions=True)
    if not emails:
        return
    enqueue_create_notification(
        [e for e in emails if e],
        {
            "type": "Alert",
            "document_type": codec.UPDATE_DOCTYPE,
            "document_name": alert.name,
            "subject": f"Agent Rollout {alert.name} stalled",
            "email_content": alert.message,
        },
    )
