"""What `status`, `plan` and the run commands print about one update."""

from __future__ import annotations

import time

from agent_update.cli.output import dump, update_json, update_lines
from agent_update.rollout import approval, schedule, waves
from agent_update.rollout.model import Update, UpdateStatus
from agent_update.service import Service


def show(service: Service, name: str, as_json: bool = False) -> Update:
    update = service.store.get_update(name)
    rows = service.store.get_rows(name)
    if as_json:
        data = update_json(update, rows)
        if update.status in (UpdateStatus.RUNNING, UpdateStatus.PAUSED):
            data["eta"] = service.eta(name).text(time.time())
        dump(data)
    else:
        lines = update_lines(update, rows)
        lines[1:1] = ramp_lines(service, update, rows)
        print("\n".join(lines))
    return update


def ramp_lines(service: Service, update: Update, rows: list) -> list[str]:
    """Why it paused, where the waves stand, and the ETA, under the update's line."""
    lines = []
    if update.pause_reason:
        lines.append(f"  paused: {update.pause_reason}")
    if update.status is UpdateStatus.PENDING and update.start_at is not None:
        lines.append(f"  scheduled: starts at {schedule.when(update.start_at)}")
    if approval.note(update) and not update.status.is_final:
        lines.append(f"  {approval.note(update)}")
    elif update.approved_by:
        lines.append(f"  approved by {update.approved_by}")
    if update.waiting_reason and update.status is UpdateStatus.RUNNING:
        lines.append(f"  waiting: {update.waiting_reason}")
    if update.waves and not update.status.is_final:
        to_run = service.store.tally(update.name, 0).to_run
        lines.append(f"  waves {update.waves}: now {waves.describe(update, to_run)}")
    if update.status in (UpdateStatus.RUNNING, UpdateStatus.PAUSED):
        lines.append(f"  ETA: {service.eta(update.name).text(time.time())}")
    return lines
