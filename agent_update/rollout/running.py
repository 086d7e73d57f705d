"""Does a server run what it has checked out? The skip rule of Build Plan.

``/version`` reports the commit checked out, not the code running (docs/design.md
§9): after a checkout without restart it already shows the new commit. A
server counts as "already on the target" only when every agent program
started after the checkout last moved. Times are the server's own clock
(epoch seconds; supervisor shows uptimes to the second), so no clock skew
between the orchestrator and the server enters the comparison. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunningObs:
    """What one SSH look at a server showed: its clock, HEAD's last move, programs."""

    now: float | None = None  # the server's clock right after the status was read
    head_moved_at: float | None = None  # newest of the HEAD reflog entry and HEAD's mtime
    programs: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # state, uptime
    error: str = ""  # why the status could not be read
    # The newest HEAD reflog entries, oldest first: (time, old commit, new commit).
    reflog: tuple[tuple[float, str, str], ...] = ()


def stale_reason(obs: RunningObs, restarted: Iterable[str] | None = None) -> str:
    """Why the checkout may not be what runs ("" when it does).

    Every program must be RUNNING, and those an update would restart
    (``restarted``; all when None) must have started after the checkout moved.
    Programs the update would not restart (e.g. Redis) cannot be fixed by it.
    """
    if obs.error:
        return f"could not read the agent's programs ({obs.error}): will update"
    if not obs.programs:
        return "no agent program found: will update"
    if obs.now is None or obs.head_moved_at is None:
        return "could not read when the checkout last moved: will update"
    for name, (state, uptime) in sorted(obs.programs.items()):
        if state != "RUNNING" or uptime is None:
            return f"checkout on target but {name} is {state}: will update"
        if restarted is not None and name not in restarted:
            continue
        started = obs.now - uptime
        if started < obs.head_moved_at:
            ago = obs.now - obs.head_moved_at
            return (
                f"checkout on target but {name} started before it "
                f"(up {uptime:.0f} s, checkout moved {ago:.0f} s ago): will update"
            )
    return ""


def started_at(obs: RunningObs, name: str) -> float | None:
    """When a RUNNING program started, on the server's clock; None when unknown."""
    state, uptime = obs.programs.get(name, ("", None))
    if state != "RUNNING" or uptime is None or obs.now is None:
        return None
    return obs.now - uptime


def commit_at(obs: RunningObs, checkout: str, started: float) -> str:
    """The commit HEAD pointed at when a program started: the code it runs.

    That is the old side of the first HEAD move after the start, or the
    checkout when HEAD has not moved since (a move in the start's second
    counts as before it, as in ``stale_reason``).
    """
    for when, old, _new in obs.reflog:
        if when > started:
            return old
    return checkout
