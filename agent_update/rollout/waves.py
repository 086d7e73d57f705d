"""Ramp-up waves: grow a rollout's concurrency in steps, each gated on the last.

One definition, shared by the form, the CLI and the engine: a text such as
``1, 5, 20%`` lists the sizes of the first waves (a count of servers, or a
percentage of the rows to update, rounded up); after them the rest runs up
to the lanes. Rows of a wave run up to the lanes at once, never more than the
wave holds. The next wave opens only when every row of the open one has
ended and the share of successes so far is at or above the threshold;
otherwise the rollout pauses (Resume accepts the gate once) or halts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Update
from agent_update.rollout.tally import Tally
from agent_update.rollout.words import count

MAX_WAVES = 20
MAX_WAVE_SIZE = 100_000  # servers in one wave: far past any fleet, well inside an int
_ITEM = re.compile(r"^([0-9]+)(%?)$", re.ASCII)


@dataclass(frozen=True)
class WaveSize:
    """A count of servers, or a percentage of the rows to update."""

    count: int = 0
    percent: float = 0.0

    def size(self, to_run: int) -> int:
        """Servers in this wave for a rollout of ``to_run`` rows (at least one)."""
        if self.percent:
            return max(1, math.ceil(self.percent * to_run / 100))
        return self.count

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent else str(self.count)


def parse_waves(text: str, field: str = "waves") -> tuple[WaveSize, ...]:
    """``"1, 5, 20%"`` -> wave sizes; a clear error naming ``field`` otherwise."""
    items = [part.strip() for part in (text or "").replace(";", ",").split(",")]
    if items == [""]:
        return ()
    if len(items) > MAX_WAVES:
        raise ValidationError(field, f"at most {MAX_WAVES} waves (the rest runs up to the lanes)")
    sizes = []
    for item in items:
        found = _ITEM.match(item.replace(" ", ""))
        if not found:
            raise ValidationError(
                field, f"{item!r} is not a number of servers or a percentage (e.g. 1, 5, 20%)"
            )
        number = int(found.group(1))
        if found.group(2):
            if not 0 < number <= 100:
                raise ValidationError(field, f"{item} must be a percentage from 1% to 100%")
            sizes.append(WaveSize(percent=float(number)))
        else:
            if number < 1:
                raise ValidationError(field, f"{item}: a wave holds at least one server")
            if number > MAX_WAVE_SIZE:
                raise ValidationError(
                    field, f"{item}: a wave holds at most {MAX_WAVE_SIZE:,} servers"
                )
            sizes.append(WaveSize(count=number))
    _check_growing(sizes, field)
    return tuple(sizes)


def _check_growing(sizes: list[WaveSize], field: str) -> None:
    """Waves ramp up: a count after a larger count (or a share after a larger share) shrinks.

    Counts and percentages are compared only with their own kind: which of
    ``5`` and ``10%`` is larger depends on the fleet, known only at Build Plan.
    """
    last: dict[bool, WaveSize] = {}
    for size in sizes:
        kind = bool(size.percent)
        before = last.get(kind)
        value = size.percent if kind else size.count
        if before is not None and value < (before.percent if kind else before.count):
            raise ValidationError(
                field,
                f"waves ramp up: {size} after {before} would shrink the rollout "
                "(list sizes in non-decreasing order; the rest runs up to the lanes)",
            )
        last[kind] = size


def validate(update: Update) -> None:
    """The wave settings of an update, each error naming its field."""
    parse_waves(update.waves)
    if not 0 <= update.wave_success_threshold <= 100:
        raise ValidationError("wave_success_threshold", "must be a percentage from 0 to 100")


def capacity(update: Update, to_run: int) -> int | None:
    """Rows the open wave holds, or None past the listed waves (up to the lanes)."""
    sizes = parse_waves(update.waves)
    if update.wave > len(sizes):
        return None
    return sizes[update.wave - 1].size(to_run)


def success_share(tally: Tally) -> tuple[int, int]:
    """(succeeded, ended) over the rows that ran and ended so far."""
    return tally.succeeded, tally.succeeded + tally.failed


def gate_reason(update: Update, tally: Tally) -> str:
    """Why the next wave may not open, or "" (the open wave has ended)."""
    succeeded, ended = success_share(tally)
    if not ended or succeeded * 100 >= update.wave_success_threshold * ended:
        return ""
    share = 100 * succeeded / ended
    return (
        f"wave {update.wave} ended with {share:.0f}% success so far ({succeeded} of {ended}), "
        f"below the {update.wave_success_threshold:g}% needed to open wave {update.wave + 1}"
    )


def open_next(update: Update, tally: Tally) -> dict[str, object]:
    """The update fields that open the wave after the open one."""
    return {
        "wave": update.wave + 1,
        "wave_started": 0,
        "wave_base_succeeded": tally.succeeded,
        "wave_base_failed": tally.failed,
        "gate_override": False,
        "pause_reason": "",
    }


def describe(update: Update, to_run: int) -> str:
    """E.g. "wave 2 of 3 (5 servers)" or "the rest, up to 20 lanes"."""
    sizes = parse_waves(update.waves)
    if not sizes or update.wave > len(sizes):
        return f"the rest, up to {update.lanes} lanes"
    size = sizes[update.wave - 1].size(to_run)
    return (
        f"wave {update.wave} of {len(sizes)} "
        f"({count(size, 'server')}, {min(size, update.lanes)} at once)"
    )
