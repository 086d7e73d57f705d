"""When a rollout may touch servers: a scheduled start and a maintenance window.

A window is written the way operators say it: ``22:00-04:00`` (every day,
across midnight), ``Sat,Sun 01:00-05:00`` or ``Mon-Fri 21:30-23:00``, in the
local time of the machine that runs the engine (the Frappe site's time zone
in the desk). Servers start only inside it; a server already in flight when
the window closes finishes and is verified (never left half-done). Pure:
``now`` is an input; local time comes from ``time.localtime``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from agent_update.rollout.errors import ValidationError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^(?:(?P<days>[A-Za-z]{3}(?:\s*[-,]\s*[A-Za-z]{3})*)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$",
    re.ASCII,
)
MINUTES_A_DAY = 24 * 60


@dataclass(frozen=True)
class Window:
    """Days it opens on (0 = Monday) and its span in minutes after midnight."""

    days: frozenset[int]
    start: int
    end: int  # may be <= start: the window runs past midnight into the next day

    def length(self) -> int:
        return (self.end - self.start) % MINUTES_A_DAY or MINUTES_A_DAY


def parse_window(text: str, field: str = "window") -> Window | None:
    """``"Mon-Fri 22:00-04:00"`` -> Window; "" -> None; a clear error naming ``field``."""
    text = " ".join((text or "").split())
    if not text:
        return None
    found = _WINDOW.match(text)
    if not found:
        raise ValidationError(
            field, f"{text!r} is not a window like 22:00-04:00 or Mon-Fri 21:30-23:00"
        )
    start, end = (_minutes(found[key], field) for key in ("start", "end"))
    if start == end:
        raise ValidationError(field, f"{text!r} opens and closes at the same minute")
    return Window(_days(found["days"], field), start, end)


def _minutes(text: str, field: str) -> int:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours > 23 or minutes > 59:
        raise ValidationError(field, f"{text} is not a time of day (00:00 … 23:59)")
    return hours * 60 + minutes


def _days(text: str | None, field: str) -> frozenset[int]:
    if not text:
        return frozenset(range(7))
    days: set[int] = set()
    for part in re.split(r"\s*,\s*", text.lower()):
        ends = [p.strip() for p in part.split("-")]
        for day in ends:
            if day not in DAYS:
                raise ValidationError(field, f"{day!r} is not a day (Mon, Tue, … Sun)")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        span = (last - first) % 7
        days.update((first + i) % 7 for i in range(span + 1))
    return frozenset(days)


def _local(now: float) -> tuple[int, int]:
    """(weekday, minute of the day) of ``now`` in local time."""
    moment = time.localtime(now)
    return moment.tm_wday, moment.tm_hour * 60 + moment.tm_min


def inside(window: Window | None, now: float) -> bool:
    """Whether servers may start at ``now`` (always, without a window)."""
    if window is None:
        return True
    day, minute = _local(now)
    if window.start < window.end:
        return day in window.days and window.start <= minute < window.end
    # Across midnight: the evening part belongs to its day, the morning to the day before.
    if minute >= window.start:
        return day in window.days
    return minute < window.end and (day - 1) % 7 in window.days


def next_opening(window: Window, now: float) -> float:
    """The first moment at or after ``now`` inside the window (a minute's precision)."""
    start = now - now % 60
    for step in range(0, 8 * MINUTES_A_DAY):
        moment = start + step * 60
        if moment >= now - 60 and inside(window, moment):
            return max(moment, now)
    raise ValidationError("window", "the window never opens")


def when(epoch: float) -> str:
    return time.strftime("%a %Y-%m-%d %H:%M %Z", time.localtime(epoch))


def waiting_reason(text: str, now: float) -> str:
    """Why no server starts now: outside the window, and when it opens; "" inside it."""
    window = parse_window(text)
    if window is None or inside(window, now):
        return ""
    opens = when(next_opening(window, now))
    return f"outside the maintenance window {text}: servers start again at {opens}"


def validate(start_at: float | None, window_text: str) -> None:
    """The window's form (the start time is checked against the clock at create and Start)."""
    parse_window(window_text)
    if start_at is not None and not start_at > 0:
        raise ValidationError("start_at", "is not a time")
