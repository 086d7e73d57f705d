"""Which commit a failed row rolls back to: decided at its precheck, from what runs.

Not at Build Plan: another rollout may have moved the server since (rolling
back to the commit seen at plan would silently undo it). Not ``/version``
alone: it shows the checkout, and a checkout moved without a restart (a
half-done earlier attempt) is not what the programs run. The programs the
update restarts tell: each runs the commit HEAD pointed at when it started
(the HEAD reflog and supervisor's uptimes, ``rollout.running``). Never the
commit the row is about to install: when nothing else ran there, there is
nothing to roll back to, and a failure ends the row instead of re-running
the failing commit. A rollback commit set by the operator wins. Pure.
"""

from __future__ import annotations

from agent_update.rollout.model import Update
from agent_update.rollout.running import RunningObs, commit_at, started_at


def choose(
    update: Update, restart: list[str], checkout: str | None, running: RunningObs | None
) -> tuple[str, str]:
    """(the rollback commit, or "" when there is none; a line for the row's log)."""
    if update.rollback_to_specific and update.rollback_commit:
        return update.rollback_commit, f"rollback commit {update.rollback_commit[:12]} (set)"
    if not checkout:
        return "", "nothing to roll back to: the agent reported no commit"
    runs = _programs_commits(restart, checkout, running)
    if not runs:
        ran, what = checkout, "the checkout (program start times unknown)"
    else:
        others = [run for run in runs if run[2] != update.commit]
        _, name, ran = min(others or runs)  # the longest-running code first
        moved = "" if ran == checkout else " (checkout moved since it started)"
        what = f"what {name} runs{moved}"
    if ran == update.commit:
        return "", f"nothing to roll back to: {what} is already {ran[:12]}, the target"
    return ran, f"rollback commit {ran[:12]}: {what}"


def _programs_commits(
    restart: list[str], checkout: str, running: RunningObs | None
) -> list[tuple[float, str, str]]:
    """(start, program, commit it runs) of each restarted program whose start is known."""
    if running is None:
        return []
    out = []
    for name in restart:
        start = started_at(running, name)
        if start is not None:
            out.append((start, name, commit_at(running, checkout, start)))
    return out
