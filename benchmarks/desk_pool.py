"""The desk benchmark's RQ workers: started, counted on the queue, stopped (by pid).

Each is benchmarks/desk_worker.py in a session of its own, run by the bench's
Python from its sites directory; stopping sends SIGTERM (RQ's warm shutdown:
the job under way ends first), then SIGKILL to its group if it has not ended 30 s later.
A worker asks for SIGTERM when the benchmark dies (desk_worker.py), so even
a killed benchmark leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import frappe
from frappe.utils.background_jobs import get_queue, get_workers

from agent_update.frappe_service import APP_QUEUE

WORKER = Path(__file__).resolve().parent / "desk_worker.py"
START_TIMEOUT = 300.0  # seconds for every worker to register (imports on 2 busy cores)


def listening() -> int:
    """Workers registered on the app's queue now."""
    return len(get_workers(get_queue(APP_QUEUE)))


class Workers:
    """``count`` desk workers for ``site``; a context manager that stops them on exit."""

    def __init__(self, site: str, count: int, preload: bool = False) -> None:
        self.site, self.count, self.preload = site, count, preload
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.before = 0

    def __enter__(self) -> Workers:
        get_queue(APP_QUEUE).empty()  # jobs an interrupted run left
        self.before = listening()
        sites = os.path.abspath(frappe.local.sites_path)
        for _ in range(self.count):
            handle, log = tempfile.mkstemp(prefix="agent-update-desk-worker-", suffix=".log")
            self.logs.append(Path(log))
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), self.site, *(["--preload"] * self.preload)],
                    cwd=sites,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "AGENT_UPDATE_DESK_BENCH_PARENT": str(os.getpid())},
                )
            )
            os.close(handle)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:  # what the workers said is the first thing to read
            print(self.tail(), file=sys.stderr)
        self.stop()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while listening() < self.before + self.count:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a desk worker exited ({dead[0].returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"desk workers not all listening after {START_TIMEOUT:g}s")
            time.sleep(0.5)

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until no job is queued or under way (a job's counts are added as it ends)."""
        queue = get_queue(APP_QUEUE)
        deadline = time.monotonic() + timeout
        while queue.count or any(w.get_state() == "busy" for w in get_workers(queue)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs still queued or running after {timeout:g}s")
            time.sleep(0.1)

    def tail(self, chars: int = 2000) -> str:
        """The end of each worker log that has anything in it."""
        parts = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                text = log.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {log.name}\n{text[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # stuck: it and its work horse go at once
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                log.unlink()
        self.logs = []
