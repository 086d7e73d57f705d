"""The desk path at fleet scale (docs/desk-bench.md); prints figures, never asserts.

Zero-time simulated servers (simserver.py) and the same update, run side by
side in one process of the bench:

* the CLI path: the SQLite store, rows in threads (as ``agent-update run``);
* the desk path: the Frappe store, Build Plan and Start through the API and
  every row a job of real RQ workers on the ``agent_update`` queue, at 100
  and at 2,000 rows; then the 100 rows again with workers that preload the
  app (what the per-job import costs);

then the form of the large update (load, and the poll it repeats while
running) and the list view with 1,000 updates stored. Everything it made
(updates, Agent Servers, workers) is removed at the end.

Run from the bench's sites directory with the bench's Python, on a site of
its own with the app installed and the agent_update queue configured
(scripts/frappe-bench.sh does all of that: AGENT_UPDATE_DESK_BENCH=1):

    ../env/bin/python /path/to/benchmarks/desk.py --site bench.localhost
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import frappe
from desk_pool import Workers
from desk_runs import Run, cli_run, desk_run

from agent_update import frappe_codec as codec
from agent_update import frappe_machines
from agent_update.agent_update.tests import desk_fleet, desk_views
from agent_update.frappe_service import APP_QUEUE, app_queue, engine_settings, get_service
from agent_update.remote.resolve import addresses
from agent_update.rollout import machines
from agent_update.rollout.model import Server, UpdateStatus

PREFIX = "Desk Bench"  # every server type (and so every update) this benchmark makes
TYPE = f"{PREFIX} Fleet"
TARGET_FORM, TARGET_LIST = 2.0, 1.0  # seconds (issue 15)
SETTINGS = {"poll_interval": 0.01}  # both paths: a row is probed again at once


def median(timings: list[desk_views.Timing]) -> desk_views.Timing:
    return desk_views.Timing(
        statistics.median(t.seconds for t in timings),
        statistics.median(t.cpu for t in timings),
        timings[-1].body,
    )


def took(timing: desk_views.Timing) -> str:
    return f"{timing.seconds:.2f}s (CPU {timing.cpu:.2f}s)"


def mark(seconds: float, target: float) -> str:
    return f"{'under' if seconds < target else 'OVER'} the {target:g} s target"


def kb(size: int) -> str:
    return f"{size / 1024:,.0f} KB"


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


# ----------------------------------------------------------------- report


def show(label: str, run: Run) -> None:
    line = (
        f"  {label:<38}{run.servers:>5} servers: plan {run.plan:.1f}s, run {run.run:.1f}s"
        f" = {1000 * run.per_server:.1f} ms/server, CPU {1000 * run.cpu:.1f} ms/server,"
        f" {run.writes:.2f} writes/server"
    )
    if run.jobs:
        line += f" ({run.statements:.2f} SQL), {run.jobs} jobs of {run.in_jobs / run.jobs:.2f}s"
    print(f"{line}; {run.outcome()}", flush=True)


def compare(cli: Run, small: Run, large: Run, preloaded: Run) -> None:
    print(
        f"  desk / CLI orchestration cost per server, {large.servers} servers: "
        f"{large.per_server / cli.per_server:.0f}x the time, {large.cpu / cli.cpu:.0f}x the CPU; "
        f"stock / preloading workers, {small.servers} servers: "
        f"{small.per_server / preloaded.per_server:.1f}x the time, "
        f"{small.cpu / preloaded.cpu:.1f}x the CPU"
    )
    print(
        f"  desk writes per server: {small.writes:.2f} at {small.servers} rows, "
        f"{large.writes:.2f} at {large.servers} rows (all SQL: {small.statements:.2f}, "
        f"{large.statements:.2f}); CLI path {cli.writes:.2f}"
    )


def report_form(name: str, rows: int, polls: list[desk_views.Timing]) -> None:
    got = median([desk_views.get_doc(name) for _ in range(3)])
    form = median([desk_views.form_load(name) for _ in range(3)])
    poll = median([desk_views.form_poll(name) for _ in range(3)])
    eta = median([desk_views.form_eta(name) for _ in range(3)])
    logs = sum(len(r.get("log") or "") for r in json.loads(form.body)["docs"][0]["servers"])
    print(f"  form of the {rows}-row update (median of 3):")
    print(
        f"    load    getdoc {took(form)}, {kb(form.size)} of which the rows' logs {kb(logs)} "
        f"({mark(form.seconds, TARGET_FORM)}); frappe.get_doc alone {took(got)}"
    )
    print(
        f"    refresh api.state {took(poll)}, {kb(poll.size)} "
        f"({mark(poll.seconds, TARGET_FORM)}); api.eta {took(eta)}"
    )
    if polls:
        print(
            f"    refresh while it ran: median {took(median(polls))}, max "
            f"{max(p.seconds for p in polls):.2f}s over {len(polls)} polls"
        )


def fill_updates(total: int, entries: list[Server]) -> float:
    """Updates of ``entries`` until ``total`` are stored; seconds it took."""
    began = time.perf_counter()
    statuses = ("Success", "Draft", "Partial Success", "Failure")
    have = frappe.db.count(codec.UPDATE_DOCTYPE)
    for i in range(max(0, total - have)):
        status = UpdateStatus(statuses[i % len(statuses)])
        desk_fleet.new_update(entries, TYPE, 1, status=status)
    return time.perf_counter() - began


def report_list(total: int, entries: list[Server]) -> None:
    filled = fill_updates(total, entries)
    page = median([desk_views.list_view() for _ in range(5)])
    count = median([desk_views.list_count() for _ in range(5)])
    stored = frappe.db.count(codec.UPDATE_DOCTYPE)
    rows = frappe.db.count(codec.ROW_DOCTYPE)
    print(
        f"  list view, {stored} updates stored ({rows} server rows; "
        f"stored in {filled:.0f}s), median of 5:"
    )
    print(
        f"    reportview.get {took(page)} for {desk_views.LIST_PAGE} rows, {kb(page.size)} "
        f"({mark(page.seconds, TARGET_LIST)}); get_count {took(count)}"
    )


# ------------------------------------------------------------------- main


def report_index(entries: list[Server], rounds: int = 5) -> None:
    """What each row job pays to learn which machine its server is (rollout/machines.py):
    the whole registry listed and resolved, against the index the site's jobs share."""
    store = get_service().store

    def warm(memo: machines.Memo | None) -> float:
        frappe.local.cache = {}  # a new job's process starts with none
        began = time.perf_counter()
        machines.MachineIndex(store.list_servers, addresses, memo=memo).warm()
        return time.perf_counter() - began

    computed = statistics.median(warm(None) for _ in range(rounds))
    warm(frappe_machines.shared_keys)  # the first job of this registry state computes it
    shared = statistics.median(warm(frappe_machines.shared_keys) for _ in range(rounds))
    print(
        f"  registry index per row job, {len(entries)} entries (median of {rounds}): "
        f"listed and resolved {computed * 1000:.1f} ms, shared from the site's cache "
        f"{shared * 1000:.1f} ms ({computed / shared:.0f}x less)",
        flush=True,
    )


def bench(args: argparse.Namespace) -> None:
    lanes, workers = args.lanes, args.workers or args.lanes + 1
    entries = desk_fleet.servers(args.rows, TYPE)
    desk_fleet.register(entries)
    print(
        f"desk path at fleet scale: {args.rows} simulated servers, {lanes} lanes, "
        f"{workers} RQ workers on {APP_QUEUE}; {load()}",
        flush=True,
    )
    report_index(entries)
    cli = cli_run(entries, TYPE, lanes, engine_settings())
    show("CLI path (SQLite store, threads)", cli)
    small_rows = entries[: args.small]
    with Workers(args.site, workers) as pool:
        small = desk_run(pool, small_rows, TYPE, lanes, args.timeout)
        show("desk path (Frappe store, RQ jobs)", small)
        large = desk_run(pool, entries, TYPE, lanes, args.timeout, poll=True)
        show("desk path (Frappe store, RQ jobs)", large)
    with Workers(args.site, workers, preload=True) as pool:
        preloaded = desk_run(pool, small_rows, TYPE, lanes, args.timeout)
        show("desk path, workers preloading the app", preloaded)
    compare(cli, small, large, preloaded)
    report_form(large.name, args.rows, large.polls)
    report_list(args.list, entries[:10])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="bench.localhost")
    parser.add_argument("--rows", type=int, default=2000, help="servers of the large update")
    parser.add_argument("--small", type=int, default=100, help="servers of the small update")
    parser.add_argument("--lanes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0, help="RQ workers (default: lanes + 1)")
    parser.add_argument("--list", type=int, default=1000, help="updates stored for the list view")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds per rollout")
    args = parser.parse_args(argv)
    frappe.init(site=args.site)
    frappe.connect()
    frappe.set_user("Administrator")
    settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
    before = {k: settings.get(k) for k in SETTINGS}
    try:
        if app_queue() != APP_QUEUE:
            print(
                f"desk bench: SKIPPED ({args.site} sends the app's jobs to {app_queue()}: "
                "give it the agent_update queue, docs/desk-bench.md)"
            )
            return 0
        desk_fleet.clean_up(PREFIX)  # what an interrupted run left
        settings.update(SETTINGS)
        settings.flags.ignore_mandatory = True
        settings.save(ignore_permissions=True)
        frappe.db.commit()
        bench(args)
    finally:
        frappe.db.rollback()
        removed = desk_fleet.clean_up(PREFIX)
        settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
        settings.update(before)
        settings.flags.ignore_mandatory = True
        settings.save(ignore_permissions=True)
        frappe.db.commit()
        print(f"  {load()}; removed {removed} updates, their servers and the workers")
        frappe.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
