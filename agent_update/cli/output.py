"""What `agent-update` prints: status tables, JSON for scripts, live progress.

Pure formatting (lines from data) apart from ``LiveView``, which redraws a
block of lines in place on a terminal and stays quiet elsewhere.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from enum import Enum
from typing import Any, TextIO

from agent_update.rollout.model import Row, RowStatus, Server, Step, Update

SECRET_FIELDS = {"agent_password"}
MAX_LIVE_ROWS = 12  # rows in flight listed under the progress line


# ------------------------------------------------------------------ values
def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def row_seconds(row: Row, now: float) -> float | None:
    if row.started_at is None:
        return None
    return (row.ended_at or now) - row.started_at


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def as_json(obj: Any, hide: set[str] = frozenset()) -> dict[str, Any]:
    data = {k: _plain(v) for k, v in asdict(obj).items()}
    for key in hide & data.keys():
        data[key] = bool(data[key])  # says whether one is set, never what it is
    return data


def dump(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2), file=out or sys.stdout)


# ----------------------------------------------------------------- updates
def update_json(update: Update, rows: list[Row]) -> dict[str, Any]:
    data = as_json(update)
    data["counts"] = dict(Counter(r.status.value for r in rows))
    data["rows"] = [as_json(r) for r in rows]
    return data


def update_lines(update: Update, rows: list[Row], now: float | None = None) -> list[str]:
    """The status table: the update's line, why it halted or is stuck, one line per row."""
    now = time.time() if now is None else now
    head = f"{update.name}  {update.status.value}  commit {update.commit[:12]}"
    head += f"  lanes {update.lanes}  {summary(rows)}" + ("  (repair)" if update.repair else "")
    lines = [head]
    if update.halt_reason:
        lines.append(f"  halted: {update.halt_reason}")
    if update.overlap_warning:
        lines.append(f"  warning: {update.overlap_warning}")
    if update.why_stuck:
        lines.append("  stuck at planning:")
        lines += [f"    {line}" for line in update.why_stuck.splitlines()]
    if rows:
        lines.append(f"  {'#':>4}  {'server':<20} {'status':<13} {'before':<8} {'after':<8}   time")
    for row in rows:
        lines.append("  " + row_line(row, now))
    return lines


def row_line(row: Row, now: float) -> str:
    text = (
        f"{row.idx:>4}  {row.server:<20} {row.status.value:<13} "
        f"{row.current_commit[:8]:<8} {row.reported_commit[:8]:<8} "
        f"{duration(row_seconds(row, now)):>7}"
    )
    return f"{text}  {row.reason}" if row.reason else text.rstrip()


def summary(rows: list[Row]) -> str:
    """Counts by status in the order a rollout moves: ``3/10 ended: 2 Success, 1 Skipped``."""
    counts = Counter(r.status for r in rows)
    ended = sum(n for status, n in counts.items() if status.ended)
    parts = [f"{counts[s]} {s.value}" for s in RowStatus if counts[s]]
    return f"{ended}/{len(rows)} ended" + (f": {', '.join(parts)}" if parts else "")


# ----------------------------------------------------------------- servers
def server_json(server: Server) -> dict[str, Any]:
    return as_json(server, hide=SECRET_FIELDS)


def server_lines(servers: list[Server]) -> list[str]:
    """One line per server; every registry field, the password only as set or not."""
    lines = []
    for server in servers:
        data = as_json(server, hide=SECRET_FIELDS)
        ssh = f"{data.pop('ssh_user')}@{data.pop('host')}:{data.pop('ssh_port')}"
        base = (
            f"{data.pop('name'):<16} type={data.pop('server_type')} "
            f"status={data.pop('status')} ssh={ssh}"
        )
        rest = " ".join(f"{k}={_flat(v)}" for k, v in data.items())
        lines.append(f"{base} {rest}")
    return lines or ["no servers yet; add one with: agent-update server-add NAME --host HOST …"]


def _flat(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if value not in ("", None) else "-"


# ---------------------------------------------------------------- progress
def progress_lines(update: Update, rows: list[Row], now: float, note: str = "") -> list[str]:
    """A live block: the counts, then each row in flight with its time so far."""
    started = update.started_at
    elapsed = f"  {duration(now - started)}" if started else ""
    lines = [f"{update.name} {update.status.value}{elapsed}  {summary(rows)}"]
    moving = [r for r in rows if r.status.in_flight or (r.lease_owner and not r.status.ended)]
    for row in moving[:MAX_LIVE_ROWS]:
        label = "Starting" if row.step is Step.PRECHECK else row.status.value
        lines.append(f"  {row.server:<20} {label:<13} {duration(row_seconds(row, now))}".rstrip())
    if len(moving) > MAX_LIVE_ROWS:
        lines.append(f"  … and {len(moving) - MAX_LIVE_ROWS} more in flight")
    if note:
        lines.append(f"  {note}")
    return lines


class LiveView:
    """Redraws a block of lines in place on a terminal; silent when not one."""

    def __init__(self, out: TextIO | None = None, enabled: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.enabled = self.out.isatty() if enabled is None else enabled
        self._drawn = 0
        self._last: list[str] = []

    def draw(self, lines: list[str]) -> None:
        if not self.enabled or lines == self._last:
            return
        self.clear()
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self._drawn, self._last = len(lines), lines

    def clear(self) -> None:
        if self.enabled and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # up N lines, erase to the end
            self.out.flush()
        self._drawn, self._last = 0, []

    def say(self, line: str) -> None:
        """A note that stays (on stderr), printed above the live block."""
        last = self._last
        self.clear()
        print(line, file=sys.stderr, flush=True)
        if last:
            self.draw(last)
