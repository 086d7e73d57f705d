"""Start and end the fleet's processes, by pid and process group only.

A fleet shares the machine with other work, so it never kills by name: it
remembers what it started, finds their descendants in /proc, and ends
exactly those. A zombie (state Z) counts as dead: on a container whose
pid 1 does not reap, an orphan can linger as one forever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


def spawn(
    argv: Sequence[str], log: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` under setsid (its own process group), output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def is_alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children_map() -> dict[int, list[int]]:
    """ppid → pids for the whole machine: one /proc scan, reusable across hosts."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry.name))
    return children


def descendants(roots: Iterable[int], children: dict[int, list[int]] | None = None) -> set[int]:
    """Every process below ``roots`` (roots excluded); pass ``children`` to skip the scan."""
    children = children_map() if children is None else children
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def send(pids: Iterable[int], sig: signal.Signals, groups: bool = False) -> None:
    for pid in pids:
        if pid <= 1:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if groups:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


def wait_dead(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait until every pid is dead or a zombie; return those still alive."""
    alive = {pid for pid in pids if is_alive(pid)}
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = {pid for pid in alive if is_alive(pid)}
    return alive


def reap(popens: Iterable[subprocess.Popen[bytes]]) -> None:
    """Collect exit statuses of our direct children so none stays a zombie."""
    for popen in popens:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=0.5)
