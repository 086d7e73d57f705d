"""Split Update: K balanced, contiguous batches as independent updates."""

from __future__ import annotations

from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import Row, Update, UpdateStatus


def batch_sizes(count: int, batches: int) -> list[int]:
    """Sizes differing by at most one, larger first: 9 in 4 -> 3, 2, 2, 2."""
    base, extra = divmod(count, batches)
    return [base + (1 if i < extra else 0) for i in range(batches)]


def split(update: Update, rows: list[Row], batches: int) -> list[tuple[Update, list[Row]]]:
    """Return K (update, rows) pairs; the first is the original, the rest new.

    New updates copy the source and config, keep their rows' plan, start
    Pending and point back at the original through ``split_from``.
    """
    if update.status is not UpdateStatus.PENDING:
        raise TransitionError(f"Split Update needs a Pending update, not {update.status.value}")
    if not 2 <= batches <= len(rows):
        raise ValidationError("batches", f"must be between 2 and {len(rows)} (the number of rows)")
    ordered = sorted(rows, key=lambda r: r.idx)
    out: list[tuple[Update, list[Row]]] = []
    start = 0
    for number, size in enumerate(batch_sizes(len(ordered), batches)):
        chunk = [r.copy(idx=i) for i, r in enumerate(ordered[start : start + size], start=1)]
        start += size
        if number == 0:
            out.append((update, chunk))
        else:
            fresh = update.copy(name="", split_from=update.name, started_at=None, ended_at=None)
            out.append((fresh, chunk))
    return out
