"""Real RQ workers: the buttons enqueue, rows run as jobs, a killed worker is resumed.

Starts ``frappe worker`` processes for this bench (its own process group each,
so SIGKILL takes the job's forked work horse down too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from typing import Any

import frappe

from agent_update import api, tasks
from agent_update.agent_update.tests.support import FleetCase, wait_for
from agent_update.testing import procs

WORKER_START = 60.0  # seconds a worker may take to pick up its first job
MID_ROW = (("Running", "command_sent"), ("Verifying", "verify"))


class Worker:
    """One ``frappe worker`` on the default and long queues, killed by process group."""

    def __init__(self) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as the worker)
            prefix="agent-update-worker-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frappe.utils.bench_helper",
                "frappe",
                "worker",
                "--queue",
                "default,long",
            ],
            cwd=os.path.abspath(frappe.local.sites_path),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the worker and its work horses (RQ puts each in a session of its own)."""
        if self.proc.poll() is None:
            horses = procs.descendants([self.proc.pid])
            if sig == signal.SIGKILL:
                procs.send(horses, sig)
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            procs.send(procs.descendants([self.proc.pid]) | horses, signal.SIGKILL)
        self.log.close()

    def remove_log(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)

    def tail(self) -> str:
        with open(self.log.name, errors="replace") as handle:
            return handle.read()[-3000:]


class TestWithWorkers(FleetCase):
    FLEET_SIZE = 3
    SERVER_TYPE = "Loopback Worker"
    INLINE = False
    LEASE_TTL = 3.0  # a dead worker's rows become resumable quickly

    @classmethod
    def setUpClass(cls) -> None:
        others = _live_workers()
        if others:  # they would run our rows too, and never be killed by the test
            raise unittest.SkipTest(f"other workers consume this bench's queues: {others}")
        super().setUpClass()

    def setUp(self) -> None:
        super().setUp()
        self.workers: list[Worker] = []
        self.addCleanup(self._stop_workers)

    def _stop_workers(self) -> None:
        for worker in self.workers:
            worker.kill(signal.SIGTERM)
            worker.remove_log()

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, **kw: Any) -> Any:
        """wait_for, with the workers' logs in the failure message."""
        try:
            return wait_for(predicate, timeout, what, **kw)
        except AssertionError as exc:
            tails = "\n".join(w.tail() for w in self.workers)
            raise AssertionError(f"{exc}\nworker logs:\n{tails}") from None

    def worker(self) -> Worker:
        worker = Worker()
        self.workers.append(worker)
        return worker

    def status(self, name: str) -> str:
        return frappe.db.get_value("Agent Update", name, "status")

    def row_statuses(self, name: str) -> list[tuple[str, str]]:
        return [(r.status, r.step) for r in self.load(name).servers]

    def test_pause_and_resume_on_a_live_rollout(self) -> None:
        slow = self.fleet.commits.slow
        worker, _spare = self.worker(), self.worker()  # the Pause job must not wait for a row
        doc = self.new_update(commit=slow)
        api.build_plan(doc.name)
        self.wait(lambda: self.status(doc.name) == "Pending", WORKER_START, "Build Plan")
        api.start(doc.name)
        self.wait(
            lambda: self.row_statuses(doc.name)[0][0] in ("Running", "Verifying"),
            WORKER_START,
            "the first server to start",
        )
        out = api.pause(doc.name)
        self.assertTrue(out["queued"])
        self.wait(lambda: self.status(doc.name) == "Paused", 30, "Paused")
        in_flight = ("Running", "Verifying", "Rolling Back")
        self.wait(
            lambda: not any(s in in_flight for s, _ in self.row_statuses(doc.name)),
            60,
            "the servers in flight to finish",
        )
        settled = self.row_statuses(doc.name)
        time.sleep(2)  # nothing new starts while paused
        self.assertEqual(self.row_statuses(doc.name), settled, worker.tail())
        self.assertIn(("Pending", ""), settled)
        self.assertEqual(settled[0][0], "Success")
        self.assertEqual(self.status(doc.name), "Paused")

        api.resume(doc.name)
        self.wait(lambda: self.status(doc.name) == "Success", 90, "Success", every=0.3)
        for row in self.load(doc.name).servers:
            self.assertEqual(row.status, "Success", row.log)
            self.assertEqual(self.running(row.server), slow)

    def test_a_worker_killed_mid_row_is_resumed_by_the_tick(self) -> None:
        slow = self.fleet.commits.slow
        first_worker = self.worker()
        doc = self.new_update(commit=slow)
        api.build_plan(doc.name)
        self.wait(lambda: self.status(doc.name) == "Pending", WORKER_START, "Build Plan")
        api.start(doc.name)
        self.wait(
            lambda: self.row_statuses(doc.name)[0] in MID_ROW,
            WORKER_START,
            "the first server mid-update",
            every=0.05,
        )
        first_worker.kill()  # SIGKILL: no cleanup, the row keeps its lease
        victim = self.load(doc.name).servers[0]
        self.assertIn(victim.status, ("Running", "Verifying"))
        self.assertTrue(victim.lease_owner)
        self.assertEqual(self.status(doc.name), "Running")

        self.wait(
            lambda: (
                frappe.db.get_value("Agent Update Server", victim.name, "lease_expires")
                < time.time()
            ),
            10,
            "the lease to expire",
        )
        self.worker()
        self.assertEqual(tasks.tick(), [doc.name])  # enqueues the resumed row
        self.wait(lambda: self.status(doc.name) == "Success", 120, "Success", every=0.3)
        done = self.load(doc.name)
        for row in done.servers:
            self.assertEqual(row.status, "Success", row.log)
            self.assertEqual(self.running(row.server), slow)
        if victim.step == "command_sent":  # killed mid-command: looked before re-running
            self.assertIn("resumed", done.servers[0].log)
        self.assertEqual(tasks.tick(), [])  # settled: the watchdog finds nothing


def _live_workers() -> list[str]:
    """RQ workers of this bench alive on this machine (killed ones stay registered a while)."""
    from frappe.utils.background_jobs import generate_qname, get_workers

    ours = {generate_qname(q) for q in ("default", "long")}
    return [
        w.name
        for w in get_workers()
        if ours & set(w.queue_names())
        and w.hostname == socket.gethostname()
        and procs.is_alive(w.pid)
    ]
