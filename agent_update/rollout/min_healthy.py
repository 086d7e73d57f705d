"""Healthy means healthy for a while: the minimum healthy time of restarted programs.

One probe proves little: a web whose master dies a few seconds after each
start (supervisor restarts it forever, never FATAL) answers ``/ping`` between
deaths. So a row succeeds only once every program the update restarted has
kept one pid, RUNNING, for ``min_healthy_time`` seconds from that process's
start (Nomad's ``min_healthy_time``, Kubernetes' ``minReadySeconds``), on top
of the bake time. The age comes from supervisor's uptime when the status
shows one, else from when the pid was first seen after the command, else from
when the row was first seen healthy: never more than the truth.

A restarted program that dies inside that time fails the row at once. Only
deaths ``verdicts.died`` counts are taken: the first process seen after the
command may have been spawned before the command moved the checkout (a
rollback of a crash-looping commit), and its death says nothing about the
code now checked out. Pure: no I/O, times are inputs.
"""

from __future__ import annotations

from agent_update.rollout.observations import Programs
from agent_update.rollout.verdicts import History, describe, died


def age(
    name: str,
    programs: Programs,
    uptimes: dict[str, float] | None,
    history: History,
    since_end: float | None,
    healthy_for: float,
) -> float:
    """Seconds the program's current process has been up, as far as is known."""
    state, pid = programs.get(name, ("", None))
    if state != "RUNNING":
        return 0.0
    up = (uptimes or {}).get(name)
    if up is not None:
        return up
    entries = history.get(name, [])
    if since_end is not None and entries and entries[-1].same(state, pid):
        last = entries[-1]
        return since_end - (last.start if last.start is not None else last.at)
    return healthy_for


def too_young(
    restart: list[str],
    programs: Programs,
    uptimes: dict[str, float] | None,
    history: History,
    since_end: float | None,
    healthy_for: float,
    minimum: float,
) -> str:
    """The first restarted program not yet up ``minimum`` seconds, or ""."""
    for name in restart:
        if name not in programs:
            continue
        up = age(name, programs, uptimes, history, since_end, healthy_for)
        if up < minimum:
            pid = programs[name][1]
            return f"{name} (pid {pid}) up {up:.0f} s of the {minimum:g} s minimum healthy time"
    return ""


def died_young(history: History, restart: list[str], minimum: float) -> str:
    """A restarted program whose process died inside ``minimum`` seconds of its start, or ""."""
    for name in restart:
        entries = history.get(name, [])
        for it, following in died(entries):
            start = it.start if it.start is not None else it.at
            lived = max(following.at - start, 0.0)
            if lived < minimum:
                who = f"pid {it.pid}" if it.pid is not None else "a respawn"
                return (
                    f"{name} died {lived:.0f} s after it started ({who}, "
                    f"{following.at:g} s after the command ended), inside the "
                    f"{minimum:g} s minimum healthy time; seen: {describe(entries)}"
                )
    return ""
