"""What each server went through, and how to take a finished update back (undo).

Pure: built from stored updates and rows. A row knows what its server ran
before (``rollback_commit`` when the row started, else ``current_commit``
from Build Plan) and what the update installed, so the per-server history
and ``undo`` need nothing from the servers themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_update.rollout.model import Row, RowStatus, Update, UpdateStatus

# Statuses that may be deleted without losing track of a server: nothing in flight.
DELETABLE_UNFINISHED = frozenset({UpdateStatus.DRAFT, UpdateStatus.PENDING})
# Rows whose server may run the update's commit now: undo takes these back.
CHANGED = frozenset({RowStatus.SUCCESS, RowStatus.FATAL})
# The settings an undo copies from the update it takes back (not its state).
CONFIG_FIELDS = (
    "repo",
    "branch",
    "exclude_self_hosted",
    "restart_web",
    "restart_rq",
    "restart_redis",
    "startup_timeout",
    "command_timeout",
    "failed_command_grace",
    "verdict_window",
    "bake_time",
    "min_healthy_time",
    "lanes",
    "failure_budget",
    "failure_budget_percent",
    "failure_min_sample",
    "waves",
    "wave_success_threshold",
    "wave_gate_action",
    "stall_minutes",
    "auto_rollback",
    "stop_after_single_rollback",
)


@dataclass(frozen=True)
class Entry:
    """One row that touched a server: which update, from what to what, how it ended."""

    update: str
    server: str
    status: str
    before: str  # the commit the server ran before ("" unknown)
    target: str  # what the update installs
    after: str  # what the server ran when the row ended ("" unknown or not ended)
    started_at: float | None
    ended_at: float | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def before(row: Row, update: Update) -> str:
    """The commit the row's server ran before the update touched it, or ""."""
    if row.rollback_commit and not update.rollback_to_specific:
        return row.rollback_commit  # decided from what ran when the row started
    return row.current_commit


def after(row: Row, update: Update) -> str:
    """What the server ran when the row ended, as far as the row knows."""
    if row.status is RowStatus.SUCCESS:
        return update.commit
    if row.status is RowStatus.ROLLED_BACK:
        return row.rollback_commit or row.reported_commit
    if row.status in (RowStatus.FAILURE, RowStatus.FATAL):
        return row.reported_commit
    if row.status is RowStatus.SKIPPED:
        return row.current_commit
    return ""


def entry(update: Update, row: Row) -> Entry:
    return Entry(
        update=update.name,
        server=row.server,
        status=row.status.value,
        before=before(row, update),
        target=update.commit,
        after=after(row, update),
        started_at=row.started_at,
        ended_at=row.ended_at,
        reason=row.reason,
    )


def sort_newest_first(entries: list[Entry]) -> list[Entry]:
    """Rows that started come first, newest on top; never-started ones after them."""
    return sorted(entries, key=lambda e: (e.started_at is None, -(e.started_at or 0.0)))


@dataclass(frozen=True)
class UndoPlan:
    """One new update per commit to go back to (usually one), and the servers left out."""

    groups: dict[str, list[Row]]  # commit -> rows of the new update (Draft, renumbered)
    left_out: list[tuple[str, str]]  # (server, why)


def undo_plan(update: Update, rows: list[Row]) -> UndoPlan:
    """Every server the update changed, back to the commit it ran before (per server)."""
    if not update.status.is_final:
        from agent_update.rollout.errors import TransitionError

        raise TransitionError(
            f"Undo needs a finished update; {update.name} is {update.status.value}"
        )
    groups: dict[str, list[Row]] = {}
    left_out: list[tuple[str, str]] = []
    for row in rows:
        if row.status not in CHANGED:
            continue
        previous = before(row, update)
        if not previous:
            left_out.append((row.server, "the commit it ran before is unknown"))
        elif previous == update.commit:
            left_out.append((row.server, "it already ran this commit before the update"))
        else:
            group = groups.setdefault(previous, [])
            group.append(Row(idx=len(group) + 1, server=row.server, server_type=row.server_type))
    return UndoPlan(groups, left_out)


def undo_update(update: Update, commit: str) -> Update:
    """A new Draft with the original's settings, rolling ``commit`` out (no test mode)."""
    config = {name: getattr(update, name) for name in CONFIG_FIELDS}
    return Update(**config, commit=commit)
