"""guard.py run by a local sh: the lock, the time limit, the watch on the session.

The same wrapper runs over SSH in the fleet tests; here its mechanics are
checked directly, with the processes it leaves (or not) read from /proc.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from agent_update.remote import guard
from agent_update.remote.guard import RunAs
from agent_update.rollout.errors import ValidationError
from agent_update.testing import procs

ME = RunAs(ssh_user="u", agent_user="u")


def _wrapper(agent_dir: Path, body: str, **kw: float) -> list[str]:
    return ["sh", "-c", guard.guarded(body, agent_dir=str(agent_dir), run_as=ME, **kw)]  # as sshd


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Like an SSH channel: the input stays open until the command has ended."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, text=True)
        try:
            code = proc.wait(timeout=timeout)
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=timeout)
        out.seek(0)
        return subprocess.CompletedProcess(argv, code, out.read(), "")


def _wait_for(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text().strip()


def test_runs_the_body_and_passes_its_exit_code(tmp_path: Path) -> None:
    done = _run(_wrapper(tmp_path, "echo hello; exit 3", time_limit=30))
    assert done.returncode == 3
    assert done.stdout.splitlines() == [guard.STARTED, "hello"]
    assert (tmp_path / guard.LOCK_NAME).exists()
    assert not guard.never_started(3, done.stdout)


def test_a_second_command_waits_for_the_lock_and_never_overlaps(tmp_path: Path) -> None:
    log = tmp_path / "log"
    body = f"echo start >> {log}; sleep 1.5; echo end >> {log}"
    first = subprocess.Popen(_wrapper(tmp_path, body, time_limit=30), stdin=subprocess.PIPE)
    _wait_for(log)
    second = _run(_wrapper(tmp_path, body, time_limit=30, lock_wait=20))
    assert first.wait(timeout=30) == 0 and second.returncode == 0
    assert log.read_text().split() == ["start", "end", "start", "end"]


def test_a_busy_server_refuses_after_the_wait_and_runs_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    first = subprocess.Popen(
        _wrapper(tmp_path, f"echo first >> {log}; sleep 4", time_limit=30),
        stdin=subprocess.PIPE,
    )
    try:
        _wait_for(log)
        second = _run(_wrapper(tmp_path, f"echo second >> {log}", time_limit=30, lock_wait=1))
    finally:
        first.stdin.close()  # type: ignore[union-attr]
        first.wait(timeout=30)
    assert second.returncode == guard.EXIT_BUSY
    assert guard.refused_by_lock(second.returncode, second.stdout)
    assert "another update is running on this server" in second.stdout
    assert log.read_text().split() == ["first"]


def test_the_time_limit_stops_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    body = f"sleep 60 & echo $! > {pids}; wait"
    began = time.monotonic()
    done = _run(_wrapper(tmp_path, body, time_limit=1, kill_grace=1))
    print(f"time limit 1 s: the command ended after {time.monotonic() - began:.1f} s")
    assert done.returncode == 124
    assert guard.stopped_by_time_limit(done.returncode, done.stdout)
    child = int(pids.read_text())
    assert procs.wait_dead([child], 5) == set(), "the command's child outlived the time limit"


@pytest.mark.parametrize("how", ["eof", "kill"])
def test_a_cut_session_stops_the_command(tmp_path: Path, how: str) -> None:
    """The session's end (stdin closes, the client may be gone) stops everything it ran."""
    pids = tmp_path / "pids"
    body = f"sleep 60 & echo $! > {pids}; sleep 61"
    wrapper = subprocess.Popen(
        _wrapper(tmp_path, body, time_limit=600, kill_grace=1),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    child = int(_wait_for(pids))
    group = procs.descendants([wrapper.pid]) | {wrapper.pid}
    if how == "kill":  # the whole client side dies: only the pipe's end remains
        os.kill(wrapper.pid, 9)
    wrapper.stdin.close()  # type: ignore[union-attr]
    wrapper.wait(timeout=30)
    left = procs.wait_dead(group | {child}, 10)
    assert left == set(), f"still running after the session ended: {left}"
    # and the lock is free again at once
    again = _run(_wrapper(tmp_path, "true", time_limit=5, lock_wait=1))
    assert again.returncode == 0, again.stdout


def test_run_as_another_user_goes_through_sudo_n() -> None:
    text = guard.as_agent_user("echo hi", RunAs(ssh_user="root", agent_user="frappe"))
    assert text == "sudo -n -u frappe -H -- sh -c 'echo hi'"
    assert guard.as_agent_user("echo hi", RunAs("frappe", "frappe")) == "sh -c 'echo hi'"
    with pytest.raises(ValidationError) as info:
        guard.as_agent_user("echo hi", RunAs("root", "frappe; id"))
    assert info.value.field == "agent_user"


def test_a_refusal_before_the_start_marker_is_never_started() -> None:
    assert guard.never_started(1, "sudo: a password is required\n")
    assert not guard.never_started(1, f"{guard.STARTED}\nboom\n")
    assert not guard.never_started(None, "")  # timed out: it may have run
    assert not guard.never_started(-1, "")  # session lost: it may have run
    assert not guard.never_started(1, "x" * guard.NEVER_STARTED_OUTPUT)  # head may be lost


def test_a_session_gone_before_the_command_began_still_stops_it(tmp_path: Path) -> None:
    """EOF at once: the watcher may signal before ``timeout`` leads its group."""
    marker = f"sleep 97{os.getpid()}.5"
    done = subprocess.run(
        _wrapper(tmp_path, marker, time_limit=600, kill_grace=1),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert procs.wait_dead(_carrying(marker), 5) == set()


def _carrying(marker: str) -> set[int]:
    """Live processes whose command line holds ``marker``."""
    found = set()
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:  # gone meanwhile
            continue
    return {pid for pid in found if procs.is_alive(pid)}
