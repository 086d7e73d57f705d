"""Ending what a run made: its processes by pid, its users, sudoers files and folder.

A run writes ``owner.json`` in its folder (``/tmp/ra-<tag>-*``): the pid and
start time of the process that owns it, its users, sudoers files and daemon
pids. A later run sweeps the folders whose owner is gone (a test process
killed with SIGKILL never reaches its own ``stop()``); a run whose owner
lives is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from agent_update.testing import procs

OWNER_FILE = "owner.json"
RUNS_DIR = Path(tempfile.gettempdir())  # each run's folder: RUNS_DIR/ra-<tag>-*
RUNS_GLOB = "ra-*"


def pwd_entry(user: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        return None


def started_at(pid: int) -> str | None:
    """The process's start time in clock ticks after boot: tells a reused pid apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()[19]


def proc_info(pid: int) -> tuple[int, str] | None:
    """(real uid, command line) of a live, non-zombie process; None when gone."""
    if not procs.is_alive(pid):
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    return int(uid_line.split()[1]), cmdline.strip()


def user_pids(user: str) -> set[int]:
    """Every live process running as ``user`` (none when the user does not exist)."""
    entry = pwd_entry(user)
    if entry is None:
        return set()
    found = set()
    for path in Path("/proc").iterdir():
        if path.name.isdigit():
            info = proc_info(int(path.name))
            if info is not None and info[0] == entry.pw_uid:
                found.add(int(path.name))
    return found


def remove_user(user: str, sudoers: Path) -> None:
    """Kill what still runs as ``user``, then delete the user, its home and sudoers file."""
    sudoers.unlink(missing_ok=True)
    left = user_pids(user)
    if left:
        procs.send(left, signal.SIGKILL)
        procs.wait_dead(left, 5)
    if pwd_entry(user) is not None:
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True, check=False)


def write_owner(root: Path, users: list[str], sudoers: list[Path], daemons: list[int]) -> None:
    me = os.getpid()
    record = {
        "pid": me,
        "started": started_at(me),
        "users": users,
        "sudoers": [str(path) for path in sudoers],
        "daemons": {str(pid): started_at(pid) for pid in daemons},
    }
    (root / OWNER_FILE).write_text(json.dumps(record))


def sweep_stale(tmp: Path = RUNS_DIR) -> list[str]:
    """Clean up after runs whose owner process is gone; return what was removed."""
    removed = []
    for owner_file in sorted(tmp.glob(f"{RUNS_GLOB}/{OWNER_FILE}")):
        try:
            record = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if procs.is_alive(record["pid"]) and started_at(record["pid"]) == record["started"]:
            continue  # a live run: not ours to touch
        for pid, at in record.get("daemons", {}).items():
            if started_at(int(pid)) == at:  # the same process, not a reused pid
                tree = {int(pid)} | procs.descendants([int(pid)])
                procs.send(tree, signal.SIGKILL)
                procs.wait_dead(tree, 5)
        for user, sudoers in zip(record["users"], record["sudoers"], strict=True):
            with contextlib.suppress(OSError):
                remove_user(user, Path(sudoers))
        shutil.rmtree(owner_file.parent, ignore_errors=True)
        removed.append(str(owner_file.parent))
    return removed
