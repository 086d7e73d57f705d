"""Fast verdicts: what the programs did after the update command ended.

Once the command has ended, nothing is meant to restart an agent program
any more (docs/design.md §9): a pid that changes again is a crash, and a program
meant to restart that still runs its pre-command pid never will. Waiting
for the startup timeout (10 minutes by default) adds nothing in either
case. A crash at import never reaches FATAL under supervisor (the process
outlives ``startsecs``, then dies), so pids are the evidence, kept per
program as a short history of what each probe saw.

A slow but healthy start is never cut short: its pids stay stable, it is
only waiting for ``/ping``. Pure: no I/O, ``now`` is an input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise

from agent_update.rollout.observations import Programs

HISTORY_LIMIT = 16  # observations kept per program: the verdict comes long before


@dataclass(frozen=True)
class Seen:
    """One run of identical probes of a program: its state, pid and when first seen."""

    state: str
    pid: int | None
    at: float  # seconds after the command ended
    # When that process started, in seconds after the command ended (negative:
    # before), from supervisor's uptime; None when no uptime was shown.
    start: float | None = None

    def same(self, state: str, pid: int | None) -> bool:
        return self.state == state and self.pid == pid


History = dict[str, list[Seen]]


def load(text: str) -> History:
    """The history stored on a row (JSON), or an empty one."""
    if not text:
        return {}
    raw = json.loads(text)
    return {name: [Seen(*entry) for entry in entries] for name, entries in raw.items()}


def dump(history: History) -> str:
    data = {
        name: [[e.state, e.pid, e.at] + ([] if e.start is None else [e.start]) for e in entries]
        for name, entries in history.items()
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")) if data else ""


def record(
    history: History,
    programs: Programs,
    since_end: float,
    uptimes: dict[str, float] | None = None,
) -> History:
    """Add one probe's program states; a repeat of the last observation adds nothing.

    ``uptimes`` (supervisor's, seconds) date each new RUNNING process's start.
    """
    out = {name: list(entries) for name, entries in history.items()}
    at = round(max(since_end, 0.0), 1)
    for name, (state, pid) in programs.items():
        entries = out.setdefault(name, [])
        if entries and entries[-1].same(state, pid):
            continue
        up = (uptimes or {}).get(name) if state == "RUNNING" else None
        start = None if up is None else round(at - up, 1)
        entries.append(Seen(state, pid, at, start))
        del entries[:-HISTORY_LIMIT]
    return out


def deaths(entries: list[Seen]) -> int:
    """How often a process started after the command ended has died (see ``died``)."""
    return len(died(entries))


def died(entries: list[Seen]) -> list[tuple[Seen, Seen]]:
    """Each death of a process started after the command ended: (it, what came next).

    The first process seen may have been spawned before the command moved
    the checkout (supervisor retrying a crashed program while the command
    ran): its death proves nothing about the new code, so it is not counted.
    Every later process was spawned after the command ended. A RUNNING pid
    followed by anything else died; STARTING followed by BACKOFF or EXITED
    died while starting; a BACKOFF right after a RUNNING pid means the
    respawn died too.
    """
    out: list[tuple[Seen, Seen]] = []
    known = False  # is the current process one spawned after the first observation?
    for current, following in pairwise(entries):
        gone = current.state == "RUNNING" or (
            current.state == "STARTING" and following.state in ("BACKOFF", "EXITED")
        )
        if gone and known:
            out.append((current, following))
        if current.state == "RUNNING" and following.state == "BACKOFF":
            # the respawn after it died unseen, while starting
            out.append((Seen("STARTING", None, current.at), following))
        respawned = gone or (current.state not in ("STARTING", "RUNNING"))
        if respawned and following.state in ("STARTING", "RUNNING", "BACKOFF"):
            known = True
    return out


def total_deaths(history: History) -> int:
    return sum(deaths(entries) for entries in history.values())


def describe(entries: list[Seen]) -> str:
    """What was seen, compactly: pids when they changed, states otherwise."""
    pids = [e.pid for e in entries if e.state == "RUNNING" and e.pid is not None]
    if len(pids) >= 2:
        return "pid " + " → ".join(str(p) for p in pids)
    parts = []
    for e in entries[-6:]:
        what = f"RUNNING pid {e.pid}" if e.state == "RUNNING" else e.state
        parts.append(f"{what} at {e.at:g} s")
    return " → ".join(parts)


def crash_loop(history: History, pong: bool, since_end: float) -> str:
    """Why a program is crash-looping since the command ended, or ""."""
    for name in sorted(history):
        entries = history[name]
        died = deaths(entries)
        if died >= 2 or (died and not pong):
            seen = describe(entries)
            why = "" if died >= 2 else " while /ping is refused"
            return f"{name} crash-looping: {seen} in {since_end:.0f} s after the command ended{why}"
    return ""


def not_restarted(restart: list[str], before: dict[str, int], programs: Programs) -> str:
    """Programs meant to restart that still run their pre-command pid, or "".

    Called only once the command has ended: such a pid can no longer change.
    """
    stale = [
        f"{name} still runs pid {pid}"
        for name in restart
        if (pid := before.get(name)) is not None and programs.get(name) == ("RUNNING", pid)
    ]
    if not stale:
        return ""
    every = len(stale) == len([n for n in restart if n in before])
    head = "nothing restarted" if every else "not restarted"
    return f"{head} after the command ended: {', '.join(stale)} from before the command"


def still_down(history: History, programs: Programs, since_end: float, window: float) -> str:
    """A program still not RUNNING once the verdict window has passed, or "".

    A healthy program is RUNNING after supervisor's ``startsecs`` (seconds),
    however slowly it then answers; one still starting or exited after the
    window keeps dying, and one stopped has nothing left to start it.
    """
    if since_end < window:
        return ""
    for name, (state, _) in sorted(programs.items()):
        if state != "RUNNING":  # restarting, or stopped with nothing left to start it
            seen = describe(history.get(name, []))
            return (
                f"{name} is still {state} {since_end:.0f} s after the command ended (seen: {seen})"
            )
    return ""


def old_code(restart: list[str], before: dict[str, int], programs: Programs) -> str:
    """Programs the update was not asked to restart that still run their pre-command pid.

    Their pid is the one the precheck saw, so they started before the command
    moved the checkout: they run the code from before the update. "" when none.
    """
    stale = [
        f"{name} (pid {pid})"
        for name, (state, pid) in sorted(programs.items())
        if name not in restart and pid is not None and before.get(name) == pid
    ]
    if not stale:
        return ""
    return (
        "still running the code from before the update (not asked to restart; "
        f"pid unchanged since the precheck): {', '.join(stale)}"
    )
