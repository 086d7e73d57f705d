"""Simulated servers through the Frappe store: the desk benchmark's fleet and its jobs.

benchmarks/desk.py measures the desk path (Frappe store, one RQ job per
server, the form's poll) on servers that answer at once, so what it times is
the orchestration alone. These are its pieces: registry entries and updates
built the same way for the Frappe store and the SQLite one (so both paths
run the same rows), ``simulated`` (the app's jobs reach those servers
instead of SSH and count their database writes, per update, in Redis: the
jobs run in RQ work horses, the counts are read by the benchmark), and the
clean-up. test_desk_bench.py keeps them working.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import frappe

from agent_update import frappe_codec as codec
from agent_update.frappe_store import FrappeStore
from agent_update.rollout import commands
from agent_update.rollout.links import Connector
from agent_update.rollout.model import Server, Update

TARGET = "f" * 40  # what the simulated servers are updated to (benchmarks/simserver.py)
REPO, BRANCH = "/srv/agent.git", "master"  # never read: the commit is given
JOBS = ("run_row", "kick", "build_plan", "start")  # the app's RQ entry points (tasks.py)
WRITE = re.compile(r"^\s*(UPDATE|INSERT|DELETE|REPLACE)\b", re.IGNORECASE)
# Records that name an update: its timeline (comments, versions).
TIMELINE = (
    ("Comment", "reference_doctype", "reference_name"),
    ("Version", "ref_doctype", "docname"),
)
COUNTS_TTL = 24 * 3600  # seconds: counts an interrupted run left go away by themselves


# ---------------------------------------------------------------- the fleet


def servers(count: int, server_type: str) -> list[Server]:
    """``count`` registry entries of ``server_type``, one machine each (own agent directory)."""
    slug = re.sub(r"[^a-z0-9]+", "-", server_type.lower()).strip("-")
    return [
        Server(
            name=f"{server_type} {i:05d}",
            host="127.0.0.1",
            server_type=server_type,
            agent_dir=f"/srv/{slug}/{i:05d}/agent",
            agent_url="http://127.0.0.1",
        )
        for i in range(count)
    ]


def update_for(server_type: str, lanes: int) -> Update:
    """The update both paths run: engine defaults but the minimum healthy time.

    A simulated program's pid never ages (no supervisor uptime), so with the
    default 10 s every row would wait 10 s: the orchestration is what is timed.
    """
    return Update(
        repo=REPO,
        branch=BRANCH,
        commit=TARGET,
        lanes=lanes,
        server_types=(server_type,),
        min_healthy_time=0.0,
    )


def register(entries: list[Server]) -> None:
    """Agent Servers for ``entries``.

    Without the form's duplicate-machine check: it reads the whole registry
    on each save (O(N^2) for N entries), and these are distinct by construction.
    """
    for server in entries:
        doc = frappe.new_doc(codec.SERVER_DOCTYPE)
        doc.update(
            {c.column: c.to_doc(getattr(server, n)) for n, c in codec.SERVER_COLUMNS.items()}
        )
        doc.server_name = server.name
        doc.flags.ignore_validate = True
        doc.insert(ignore_permissions=True)
    frappe.db.commit()


def new_update(entries: list[Server], server_type: str, lanes: int, **values: Any) -> str:
    """A Draft Agent Rollout over ``entries``, stored as the engine stores one (Service.create)."""
    update = update_for(server_type, lanes).copy(**values)
    rows = commands.rows_from_registry(update, entries)
    name = FrappeStore().insert_update(update, rows).name
    frappe.db.commit()
    return name


def updates_of(prefix: str) -> list[str]:
    """The updates whose server types start with ``prefix``."""
    return frappe.db.sql_list(
        f"SELECT DISTINCT parent FROM `tab{codec.TYPE_DOCTYPE}` "  # noqa: S608
        "WHERE server_type LIKE %s AND parenttype=%s",
        [prefix + "%", codec.UPDATE_DOCTYPE],
    )


def clean_up(prefix: str) -> int:
    """Remove the updates and Agent Servers of server types starting with ``prefix``.

    By SQL, child tables found from the doctype's meta: deleting thousands of
    documents one by one would take longer than the benchmark. Returns the
    number of updates removed.
    """
    names = updates_of(prefix)
    tables = [df.options for df in frappe.get_meta(codec.UPDATE_DOCTYPE).get_table_fields()]
    for start in range(0, len(names), 500):
        chunk = tuple(names[start : start + 500])
        for child in tables:
            frappe.db.sql(
                f"DELETE FROM `tab{child}` WHERE parenttype=%s AND parent IN %s",  # noqa: S608
                [codec.UPDATE_DOCTYPE, chunk],
            )
        for table, doctype_column, name_column in TIMELINE:
            frappe.db.sql(
                f"DELETE FROM `tab{table}` WHERE {doctype_column}=%s AND {name_column} IN %s",  # noqa: S608
                [codec.UPDATE_DOCTYPE, chunk],
            )
        frappe.db.sql(
            f"DELETE FROM `tab{codec.UPDATE_DOCTYPE}` WHERE name IN %s",  # noqa: S608
            [chunk],
        )
    frappe.db.sql(
        f"DELETE FROM `tab{codec.SERVER_DOCTYPE}` WHERE server_type LIKE %s",  # noqa: S608
        [prefix + "%"],
    )
    frappe.db.commit()
    return len(names)


# ------------------------------------------------------ the jobs, simulated


class _Statements:
    """Data-changing SQL statements of this process (all threads: lease heartbeats too)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def add(self) -> None:
        with self._lock:
            self.count += 1

    def take(self) -> int:
        with self._lock:
            count, self.count = self.count, 0
            return count


def counts_key(name: str, site: str | None = None) -> str:
    return f"agent_update:desk_bench:{site or frappe.local.site}:{name}"


def _redis() -> Any:
    from frappe.utils.background_jobs import get_redis_conn

    return get_redis_conn()


def add_counts(
    name: str, values: dict[str, int], redis: Any = None, site: str | None = None
) -> None:
    """Add ``values`` to the counts of ``name`` (a job's, as it ends)."""
    pipe = (redis or _redis()).pipeline()
    key = counts_key(name, site)
    for what, value in values.items():
        pipe.hincrby(key, what, value)
    pipe.expire(key, COUNTS_TTL)
    pipe.execute()


COUNTED = ("store", "sql", "jobs", "ms", "cpu_ms")


def counts(name: str) -> dict[str, int]:
    """What the simulated jobs did for ``name`` so far.

    store: FrappeStore.writes; sql: data-changing statements; jobs; ms: time
    inside the jobs' functions; cpu_ms: CPU of their work horses (benchmarks/
    desk_worker.py adds it: imports and frappe.init included).
    """
    found = _redis().hgetall(counts_key(name))
    out = {k.decode(): int(v) for k, v in found.items()}
    return {k: out.get(k, 0) for k in COUNTED}


def reset_counts(name: str) -> None:
    _redis().delete(counts_key(name))


@contextlib.contextmanager
def simulated(connector: Callable[[], Connector]) -> Iterator[None]:
    """While open, the app's jobs reach ``connector()``'s servers and count their writes.

    Each job (tasks.run_row, kick, build_plan, start) builds its Service with
    a fresh connector instead of SSH; when it ends, the writes of its
    FrappeStore and every data-changing SQL statement of the process are
    added to the update's counts. benchmarks/desk_worker.py opens it in each
    work horse, around its job; a test, around its calls.
    """
    from frappe.database.database import Database

    from agent_update import frappe_service, tasks

    made: list[Any] = []
    statements = _Statements()
    depth = [0]

    def get_service(given: Connector | None = None) -> Any:
        service = frappe_service.get_service(given or connector())
        made.append(service)
        return service

    def counted(job: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(job)
        def run(*args: Any, **kwargs: Any) -> Any:
            outer = depth[0] == 0  # a job that calls another (inline) is counted once
            depth[0] += 1
            if outer:
                made.clear()
                statements.take()
            began = time.perf_counter()
            try:
                return job(*args, **kwargs)
            finally:
                depth[0] -= 1
                if outer:
                    took = round(1000 * (time.perf_counter() - began))
                    writes = sum(s.store.writes for s in made)
                    values = {"store": writes, "sql": statements.take(), "jobs": 1, "ms": took}
                    add_counts(kwargs.get("name") or args[0], values)

        return run

    original_sql = Database.sql

    @functools.wraps(original_sql)
    def sql(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if WRITE.match(str(query)):
            statements.add()
        return original_sql(self, query, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(tasks, "get_service", get_service))
        for job in JOBS:
            stack.enter_context(mock.patch.object(tasks, job, counted(getattr(tasks, job))))
        stack.enter_context(mock.patch.object(Database, "sql", sql))
        yield
