"""What a stored change says, as one log line: the engine's trail for operators.

The runner stores every step of a row before the next (docs/design.md,
"Crash safety"); it logs each stored change with the line made here, so a
process's log tells which server went through which step, and why, without
reading the database. Pure: the runner does the logging.
"""

from __future__ import annotations

from agent_update.rollout.model import Row, Update

LINE_LIMIT = 600  # characters of a row's new log text in one log line (command output is long)
# The update fields worth a line when the update-level decision changes them.
UPDATE_FIELDS = ("status", "halt_reason", "wave", "pause_reason", "paused_for_test_mode")


def added_log(old: str, new: str) -> str:
    """The text ``new`` appended to ``old`` (the row's log keeps only its tail)."""
    if new == old:
        return ""
    if new.startswith(old):
        return new[len(old) :].lstrip("\n")
    # Trimmed at the front (model.LOG_LIMIT): the old text's tail starts the new one.
    for cut in range(1, len(old)):
        if new.startswith(old[cut:]):
            return new[len(old) - cut :].lstrip("\n")
    return new


def where(row: Row) -> str:
    """``Running/command``: the row's status and step (the step only while it has one)."""
    step = row.step.value
    return f"{row.status.value}/{step}" if step else row.status.value


def row_line(name: str, old: Row, new: Row, note: str = "") -> str | None:
    """``AU-1 #2 host1: Pending/precheck -> Running/command: precheck ok …``; None: nothing new.

    ``note`` says what the row's fields do not (e.g. which runner took its lease).
    """
    text = shorten([line for line in added_log(old.log, new.log).splitlines() if line.strip()])
    moved = where(old) != where(new)
    if moved and text == new.status.value:  # an end without a reason: the move says it
        text = ""
    if not (moved or text or note):
        return None
    state = f"{where(old)} -> {where(new)}" if moved else where(new)
    tail = (f": {text}" if text else "") + (f" ({note})" if note else "")
    return f"{name} #{new.idx} {new.server}: {state}{tail}"


def shorten(lines: list[str]) -> str:
    """The lines on one line; when too long, the first (what happened) and the last (why)."""
    text = " | ".join(lines)
    if len(text) <= LINE_LIMIT:
        return text
    head = lines[0][: LINE_LIMIT // 3]
    room, kept = LINE_LIMIT - len(head), []
    for line in reversed(lines[1:]):
        if len(line) + 3 > room:
            break
        kept.insert(0, line)
        room -= len(line) + 3
    return " | ".join([head, "…", *kept])


def update_line(old: Update, new: Update) -> str | None:
    """``AU-1: Running -> Success`` or what else changed that an operator follows."""
    parts = []
    if new.status != old.status:
        parts.append(f"{old.status.value} -> {new.status.value}")
    if new.halt_reason and new.halt_reason != old.halt_reason:
        parts.append(f"halted: {new.halt_reason}")
    if new.wave != old.wave:
        parts.append(f"wave {new.wave} opens")
    if new.pause_reason and new.pause_reason != old.pause_reason:
        parts.append(f"paused: {new.pause_reason}")
    if new.paused_for_test_mode and not old.paused_for_test_mode:
        parts.append("paused for test mode")
    return f"{new.name}: " + "; ".join(parts) if parts else None
