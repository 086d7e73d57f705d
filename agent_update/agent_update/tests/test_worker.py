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
from agent_update.frappe_service import INLINE_FLAG, JobLauncher, app_queue, get_service, row_job_id
from agent_update.testing import procs

WORKER_START = 150.0  # seconds a worker may take to pick up a job (busy machine: 35 s a job)
MID_ROW = (("Running", "command_sent"), ("Verifying", "verify"))


class Worker:
    """One ``frappe worker`` on the app's queue, killed by process group."""

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
                app_queue(),
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


class WorkerCase(FleetCase):
    """A fleet driven by real ``frappe worker`` processes each test starts."""

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
        return frappe.db.get_value("Agent Rollout", name, "status")

    def row_statuses(self, name: str) -> list[tuple[str, str]]:
        return [(r.status, r.step) for r in self.load(name).servers]

    def killed_mid_row(self, commit: str) -> tuple[str, Any]:
        """A rollout on one worker, SIGKILLed while its first row is mid-update.

        Returns the update's name and that row as it was left (no cleanup ran).
        """
        worker = self.worker()
        doc = self.new_update(commit=commit)
        api.build_plan(doc.name)
        self.wait(lambda: self.status(doc.name) == "Pending", WORKER_START, "Build Plan")
        api.start(doc.name)
        self.wait(
            lambda: self.row_statuses(doc.name)[0] in MID_ROW,
            WORKER_START,
            "the first server mid-update",
            every=0.05,
        )
        worker.kill()  # SIGKILL: no cleanup, the row keeps its lease
        return doc.name, self.load(doc.name).servers[0]

    def wait_lease_expired(self, row: Any) -> None:
        self.wait(
            lambda: (
                frappe.db.get_value("Agent Rollout Server", row.name, "lease_expires") < time.time()
            ),
            10,
            "the lease to expire",
        )


class TestWithWorkers(WorkerCase):
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
        self.assertEqual((out["queued"], out["status"]), (False, "Paused"))
        self.assertEqual(self.status(doc.name), "Paused")  # stored in the request itself
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
        name, victim = self.killed_mid_row(slow)
        self.assertIn(victim.status, ("Running", "Verifying"))
        self.assertTrue(victim.lease_owner)
        self.assertEqual(self.status(name), "Running")

        self.wait_lease_expired(victim)
        self.worker()
        self.assertEqual(tasks.tick(), [name])  # enqueues the resumed row
        self.wait(lambda: self.status(name) == "Success", 120, "Success", every=0.3)
        done = self.load(name)
        for row in done.servers:
            self.assertEqual(row.status, "Success", row.log)
            self.assertEqual(self.running(row.server), slow)
        if victim.step == "command_sent":  # killed mid-command: looked before re-running
            self.assertIn("resumed", done.servers[0].log)
        self.assertEqual(tasks.tick(), [])  # settled: the watchdog finds nothing


class TestPauseRace(WorkerCase):
    """Pause means no new server, with one worker and with several (issue 7 item 3)."""

    FLEET_SIZE = 3
    SERVER_TYPE = "Loopback Pause"
    LEASE_TTL = 60.0  # no worker dies here: a claim waiting for its job must not expire

    def untouched(self) -> dict[str, tuple[str, str, dict]]:
        """What each host runs, has checked out and its program pids, right now."""
        return {
            name: (
                self.fleet.running_commit(host),
                self.fleet.checked_out_commit(host),
                self.fleet.program_states(host),
            )
            for name, host in self.servers.items()
        }

    def job_done(self, job_id: str) -> bool:
        from frappe.utils.background_jobs import create_job_id, get_redis_conn
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            job = Job.fetch(create_job_id(job_id), connection=get_redis_conn())
        except NoSuchJobError:  # not queued yet (results are kept 10 minutes)
            return False
        return job.get_status() in ("finished", "failed", "stopped", "canceled")

    def assert_never_started(self, row: object, before: tuple) -> None:
        self.assertEqual((row.status, row.step, row.attempts), ("Pending", "", 0), row.log)
        self.assertFalse(row.start)
        self.assertNotIn("precheck", row.log or "")
        self.assertEqual(self.untouched()[row.server], before, row.server)

    def test_pause_while_verifying_with_one_worker_starts_no_new_server(self) -> None:
        slow, base = self.fleet.commits.slow, self.fleet.commits.base
        worker = self.worker()  # ONE worker: the Pause must not queue behind the row job
        doc = self.new_update(commit=slow, lanes=1)
        api.build_plan(doc.name)
        self.wait(lambda: self.status(doc.name) == "Pending", WORKER_START, "Build Plan")
        before = self.untouched()
        api.start(doc.name)
        first = self.wait(
            lambda: next((r for r in self.load(doc.name).servers if r.status == "Verifying"), None),
            WORKER_START,
            "the first server to verify",
            every=0.05,
        )
        job_id = row_job_id(doc.name, first.idx, first.lease_owner)
        out = api.pause(doc.name)
        self.assertEqual(out["status"], "Paused")
        self.assertEqual(self.status(doc.name), "Paused")  # at once, not after the row job
        self.wait(lambda: self.job_done(job_id), 90, "the row job (and its kick) to end")
        rows = self.load(doc.name).servers
        self.assertEqual(rows[0].status, "Success", rows[0].log + worker.tail())
        self.assertEqual(self.running(rows[0].server), slow)
        for row in rows[1:]:
            self.assert_never_started(row, before[row.server])
            self.assertEqual(self.running(row.server), base)
        self.assertEqual(self.status(doc.name), "Paused")

        api.resume(doc.name)
        self.assertEqual(self.status(doc.name), "Running")  # in the request; the kick is queued
        self.wait(lambda: self.status(doc.name) == "Success", 120, "Success", every=0.3)
        for row in self.load(doc.name).servers:
            self.assertEqual((row.status, self.running(row.server)), ("Success", slow), row.log)
        notes = frappe.get_all(
            "Comment",
            filters={"reference_name": doc.name, "comment_type": "Info"},
            fields=["owner", "content"],
            order_by="creation asc",
        )
        self.assertEqual(
            [(n.owner, n.content) for n in notes],
            [("Administrator", "paused this update"), ("Administrator", "resumed this update")],
        )

    def test_rows_claimed_before_pause_go_back_to_pending_with_several_workers(self) -> None:
        slow = self.fleet.commits.slow
        doc = self.new_update(commit=slow, lanes=2)
        api.build_plan(doc.name, now=True)
        frappe.flags[INLINE_FLAG] = False  # from here on, rows run as jobs
        before = self.untouched()
        claims: list[tuple[str, int, str]] = []
        service = get_service()
        service.runner.launcher = lambda *claim: claims.append(claim)
        service.start(doc.name)  # rows 1 and 2 claimed; their jobs not yet queued
        self.assertEqual([idx for _, idx, _ in claims], [1, 2])
        api.pause(doc.name)
        for _ in range(3):
            self.worker()
        launch = JobLauncher()
        for claim in claims:  # the jobs the claims would have queued, now behind the Pause
            launch(*claim)
        for claim in claims:
            self.wait(lambda c=claim: self.job_done(row_job_id(*c)), 90, "the held-back row jobs")
        rows = self.load(doc.name).servers
        for row in rows:
            self.assert_never_started(row, before[row.server])
            self.assertFalse(row.lease_owner)
        self.assertIn("back to Pending", rows[0].log)
        self.assertEqual(self.status(doc.name), "Paused")

        api.resume(doc.name)
        self.wait(lambda: self.status(doc.name) == "Success", 120, "Success", every=0.3)
        for row in self.load(doc.name).servers:
            self.assertEqual((row.status, self.running(row.server)), ("Success", slow), row.log)


def _live_workers() -> list[str]:
    """RQ workers of this bench alive on this machine (killed ones stay registered a while)."""
    from frappe.utils.background_jobs import generate_qname, get_workers

    ours = {generate_qname(q) for q in ("default", "long", app_queue())}
    return [
        w.name
        for w in get_workers()
        if ours & set(w.queue_names())
        and w.hostname == socket.gethostname()
        and procs.is_alive(w.pid)
    ]
