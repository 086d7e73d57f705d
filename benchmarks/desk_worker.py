"""One RQ worker of the bench on the app's queue, its jobs reaching simulated servers.

What ``bench worker --queue agent_update`` runs (frappe's start_worker: the
same rq Worker, a work horse forked per job, the same niceness), except that
each work horse, before its job, points the app's jobs at benchmarks/
simserver.py's servers instead of SSH and counts their writes
(desk_fleet.simulated). The app is imported in the work horse, as a stock
worker imports it: per job. With ``--preload`` the worker imports the app's
modules once, before forking, so its horses inherit them (what a worker
that preloads the app would save). Started by benchmarks/desk.py from the
bench's sites directory:

    ../env/bin/python /path/to/benchmarks/desk_worker.py SITE [--preload]

Refuses to start unless the site sends the app's jobs to ``agent_update``:
on the ``long`` fallback it would also take other sites' jobs.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import frappe
from frappe.utils import background_jobs as jobs

HERE = Path(__file__).resolve().parent
PR_SET_PDEATHSIG = 1  # prctl(2)
PARENT_ENV = "AGENT_UPDATE_DESK_BENCH_PARENT"  # the benchmark's pid (desk_pool.py)
QUEUE = "agent_update"  # frappe_service.APP_QUEUE, not imported: a stock worker has no app loaded
# What a row job imports: its entry point, the SSH connector, the controllers it loads.
PRELOAD = (
    "agent_update.tasks",
    "agent_update.remote.connector",
    "agent_update.agent_update.doctype.agent_update_settings.agent_update_settings",
    "agent_update.agent_update.doctype.agent_rollout.agent_rollout",
    "agent_update.agent_update.tests.desk_fleet",
    "simserver",
)


class DeskWorker(jobs.Worker):
    """rq's Worker; each work horse runs its job with the servers simulated.

    When the job ends, the horse's CPU since the fork (imports, frappe.init,
    the job) is added to its update's counts.
    """

    def perform_job(self, job: Any, queue: Any) -> bool:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        from simserver import SimConnector

        from agent_update.agent_update.tests.desk_fleet import add_counts, simulated

        try:
            with simulated(SimConnector):
                return super().perform_job(job, queue)
        finally:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu = round(1000 * (usage.ru_utime + usage.ru_stime))
            args = job.kwargs or {}
            name = (args.get("kwargs") or {}).get("name")
            if name:
                add_counts(name, {"cpu_ms": cpu}, redis=self.connection, site=args.get("site"))


def die_with_parent() -> None:
    """SIGTERM (RQ's warm shutdown) when the benchmark that started this worker ends."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the benchmark stops its workers itself
        return
    parent = os.environ.get(PARENT_ENV)
    if parent and int(parent) != os.getppid():  # it ended before the line above
        sys.exit("desk worker: the benchmark has ended")


def main(site: str, preload: bool) -> None:
    die_with_parent()
    frappe.init(site=site)
    try:
        if QUEUE not in jobs.get_queues_timeout():
            sys.exit(f"desk worker: {site} has no {QUEUE!r} queue in its workers config")
        connection = jobs.get_redis_conn()
        queues = jobs.get_queue_list([QUEUE], build_queue_name=True)
        jobs.set_niceness()
    finally:
        frappe.destroy()
    if preload:
        sys.path.insert(0, str(HERE))
        for module in PRELOAD:
            importlib.import_module(module)
    DeskWorker(queues, connection=connection).work(
        logging_level="WARNING",
        date_format="%Y-%m-%d %H:%M:%S",
        log_format="%(asctime)s,%(msecs)03d %(message)s",
    )


if __name__ == "__main__":
    main(sys.argv[1], "--preload" in sys.argv[2:])
