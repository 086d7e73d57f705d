"""Desk walkthrough on a Frappe Press site: one Agent Rollout over three loopback
servers that exist only as Press records. Takes docs/press-*.png (docs/press.md,
"Desk walkthrough"). Not part of CI: run by hand when the desk changes.

Needs a bench with Press and this app installed on a site of its own (made as
scripts/frappe-bench.sh makes test.localhost, with CI=1), the app's queue
declared (``bench set-config -g -p workers '{"agent_update": {"timeout": 7200}}'``),
the desk's assets built (``bench build``), Debian's chromium
(``apt-get install chromium``) and Playwright for Python in the bench's env
(Press's requirements bring it). Rerun, from the bench's sites folder:

    cd BENCH/sites && ../env/bin/python CHECKOUT/scripts/press_walkthrough.py \\
        --site shots.localhost --out CHECKOUT/docs

It starts, and stops at the end, a 3-host loopback fleet (every agent on one
port), ``frappe serve`` on --port and two RQ workers on the agent_update queue
(one lane needs two); it writes Agent Update Settings (SSH key, known hosts,
the fleet's repo and branch, the Press templates) and one ``Server``, one
``Database Server`` and one ``Proxy Server`` record as the Press tests do
(press_support.press_record), logs in as Administrator and clicks through the
desk. At the end each host must run the rolled-out commit; it prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import frappe
from desk_browser import (
    add_server_type,
    click_button,
    click_save,
    close_row,
    confirm,
    log,
    open_form,
    open_row,
    save_png,
    scroll_to,
    wait_form,
    wait_saved,
)
from playwright.sync_api import Page, sync_playwright

from agent_update import frappe_codec as codec
from agent_update.frappe_service import APP_QUEUE, app_queue
from agent_update.testing import Fleet

KINDS = ("Server", "Database Server", "Proxy Server")
DOMAIN = "shots.press.test"
IN_FLIGHT = ("Running", "Verifying", "Rolling Back")


# -- the site: settings and Press records ------------------------------------


def fresh() -> None:
    """A new snapshot: see what the workers committed."""
    frappe.db.commit()


def ready_site() -> None:
    """A fresh site opens on the setup wizard: mark it done, as after the wizard. The
    forms' scripts are cached with their doctypes: clear, so the desk runs this checkout's."""
    if not frappe.db.get_single_value("System Settings", "setup_complete"):
        values = {"setup_complete": 1, "time_zone": "Etc/UTC", "language": "en"}
        frappe.db.set_value("System Settings", "System Settings", values)
        frappe.db.commit()
    frappe.clear_cache()


def configure(fleet: Fleet) -> dict[str, str]:
    """Settings as the Press tests set them; one Press record per host. Name -> doctype."""
    from agent_update.agent_update.tests.press_support import press_record  # needs a site

    settings = frappe.get_single(codec.SETTINGS_DOCTYPE)
    settings.update(
        {
            "default_repo": fleet.upstream_url,
            "default_branch": fleet.branch,
            "ssh_private_key": fleet.client_key,
            "known_hosts": fleet.known_hosts,
            "poll_interval": 0.5,
            "probe_timeout": 3,
            "connect_timeout": 5,
            "default_lanes": 1,
            "press_agent_url": f"http://{{ip}}:{fleet.agent_port}",
            "press_agent_dir": f"{fleet.root}/{{hostname}}/agent",
            "press_agent_user": "{ssh_user}",
            "agent_ca_bundle": "",
        }
    )
    settings.save(ignore_permissions=True)
    # Rollouts of earlier runs (another fleet, same names) would be shown as overlapping.
    rows = frappe.get_all(codec.ROW_DOCTYPE, {"server": ["like", f"%.{DOMAIN}"]}, pluck="parent")
    for name in set(rows):
        frappe.db.delete(codec.ROW_DOCTYPE, {"parent": name})
        frappe.db.delete(codec.UPDATE_DOCTYPE, {"name": name})
    for doctype in ("Agent Server Hold", "Agent Server Lease"):
        frappe.db.delete(doctype, {"server": ["like", f"%.{DOMAIN}"]})
    kinds = {}
    for kind, host in zip(KINDS, fleet.hosts, strict=True):
        name = f"h{host.address.rsplit('.', 1)[1]}.{DOMAIN}"
        press_record(kind, name, host.address, host.ssh_user, host.ssh_port, host.agent_password)
        kinds[name] = kind
    frappe.db.commit()
    return kinds


# -- processes ---------------------------------------------------------------


@contextlib.contextmanager
def started(argv: list[str], cwd: str, logfile: Path) -> Iterator[subprocess.Popen]:
    """A process in a session of its own, its whole group ended on the way out."""
    with logfile.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_http(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (http://127.0.0.1)
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer in {timeout:g} s")
        time.sleep(1)


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        fresh()
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.3)


# -- the walkthrough ---------------------------------------------------------


def walkthrough(page: Page, out: Path, fleet: Fleet, kinds: dict[str, str]) -> str:
    """Settings, a Press server, a new rollout saved, planned, running, done. Its name."""
    server_of = {kind: name for name, kind in kinds.items()}

    open_form(page, "agent-update-settings", codec.SETTINGS_DOCTYPE)
    section = page.locator('.form-section[data-fieldname="press_section"]')
    if section.locator(".section-body:visible").count() == 0:
        section.locator(".section-head").click()
    scroll_to(page, "press_section")
    save_png(page, out, "settings")

    open_form(page, f"server/{server_of['Server']}", "Server")
    scroll_to(page, "status", 150)
    save_png(page, out, "server")

    open_form(page, "agent-rollout/new", codec.UPDATE_DOCTYPE)
    page.locator('input[data-fieldname="commit_hash"]').fill(fleet.commits.good)
    for kind in KINDS:
        add_server_type(page, kind)
    # longer than the default: time to look at a server while its row holds it
    page.locator('input[data-fieldname="bake_time"]').fill("20")
    page.locator('input[data-fieldname="bake_time"]').blur()
    scroll_to(page, "source_section")
    save_png(page, out, "rollout-new")
    click_save(page)
    name = wait_saved(page, len(kinds))
    log(f"saved {name}: {page.evaluate('cur_frm.doc.servers.map(r => r.server)')}")
    scroll_to(page, "servers_section")
    save_png(page, out, "rollout-saved")
    open_row(page, 2)
    save_png(page, out, "rollout-row")
    close_row(page)

    click_button(page, "Build Plan")
    confirm(page)
    wait_form(page, "cur_frm.doc.status === 'Pending' && !cur_frm.is_dirty()", 300)
    scroll_to(page, "servers_section")
    save_png(page, out, "rollout-planned")

    # Press's own Agent Update form (its warning, press_hooks.py) is not shown: the desk
    # routes /app/agent-update/<name> to this app's workspace "Agent Update", whose name
    # takes that slug, so Press's form does not open (docs/press.md, Desk walkthrough).

    other = page.context.new_page()  # a second tab on the desk, to look at a server mid-row
    other.goto("/app/server")
    other.wait_for_function("window.frappe && (frappe.get_route?.() || [])[0] === 'List'")

    open_form(page, f"agent-rollout/{name}", codec.UPDATE_DOCTYPE)
    click_button(page, "Start")
    confirm(page)

    def held() -> str:
        """The server of a row in flight once the row has set its halt_agent_jobs."""
        rows = frappe.get_all(
            codec.ROW_DOCTYPE, {"parent": name, "status": ["in", IN_FLIGHT]}, pluck="server"
        )
        return next((r for r in rows if frappe.db.get_value(kinds[r], r, "halt_agent_jobs")), "")

    busy = wait(held, 300, "a row in flight holding its server's agent jobs")
    other.evaluate("([dt, dn]) => frappe.set_route('Form', dt, dn)", [kinds[busy], busy])
    other.wait_for_function(
        "dn => window.cur_frm && cur_frm.doc.name === dn && cur_frm.doc.halt_agent_jobs === 1",
        arg=busy,
    )
    other.wait_for_timeout(800)
    scroll_to(other, "halt_agent_jobs", 420)
    save_png(other, out, "server-halted")
    other.close()
    log(f"{busy} in flight, halt_agent_jobs = 1 in its {kinds[busy]} form")
    wait_form(
        page, "cur_frm.doc.servers.some(r => ['Running', 'Verifying'].includes(r.status))", 120
    )
    scroll_to(page, "servers_section")
    save_png(page, out, "rollout-running")

    wait_form(
        page,
        "['Success', 'Partial Success', 'Failure', 'Aborted'].includes(cur_frm.doc.status)",
        900,
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(500)
    save_png(page, out, "rollout-done")
    scroll_to(page, "servers_section")
    save_png(page, out, "rollout-done-rows")
    return name


def check_end_state(fleet: Fleet, kinds: dict[str, str], name: str) -> bool:
    fresh()
    status = frappe.db.get_value(codec.UPDATE_DOCTYPE, name, "status")
    rows = frappe.get_all(
        codec.ROW_DOCTYPE,
        {"parent": name},
        ["server", "server_doctype", "status", "reported_commit"],
    )
    good = fleet.commits.good
    ok = status == "Success" and len(rows) == len(kinds)
    log(f"{name}: {status}; target {good}")
    by_name = {row.server: row for row in rows}
    for host in fleet.hosts:
        server = next(n for n in kinds if n.startswith(f"h{host.address.rsplit('.', 1)[1]}."))
        row = by_name.get(server)
        runs = fleet.running_commit(host)
        halted = frappe.db.get_value(kinds[server], server, "halt_agent_jobs")
        status, registry = (row.status, row.server_doctype) if row else ("-", "-")
        log(
            f"  {server:<24} {kinds[server]:<16} row {status:<8} registry {registry:<16} "
            f"runs {runs} halt_agent_jobs {halted}"
        )
        ok = ok and row is not None and row.status == "Success" and runs == good and not halted
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--site", required=True)
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--password", default="admin", help="Administrator's password")
    parser.add_argument("--out", required=True, help="where the PNGs go (docs/)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    logs_default = "/tmp/press-walkthrough"  # noqa: S108 (logs only, by hand)
    parser.add_argument("--logs", default=logs_default, help="the processes' logs")
    args = parser.parse_args()
    sites = os.getcwd()
    out = Path(args.out).resolve()
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    frappe.init(site=args.site, sites_path=sites)
    frappe.connect()
    if app_queue() != APP_QUEUE:
        raise SystemExit(f"declare the {APP_QUEUE} queue first (see this script's docstring)")
    ready_site()
    helper = [sys.executable, "-m", "frappe.utils.bench_helper", "frappe"]
    url = f"http://127.0.0.1:{args.port}"
    with contextlib.ExitStack() as stack:
        fleet = stack.enter_context(Fleet(3, start_timeout=90, same_agent_port=True))
        log(f"fleet up: {[h.address for h in fleet.hosts]}, agents on port {fleet.agent_port}")
        kinds = configure(fleet)
        serve = [*helper, "--site", args.site, "serve", "--port", str(args.port), "--noreload"]
        stack.enter_context(started(serve, sites, logs / "serve.log"))
        for index in range(2):
            worker = [*helper, "worker", "--queue", APP_QUEUE]
            stack.enter_context(started(worker, sites, logs / f"worker-{index}.log"))
        wait_http(f"{url}/api/method/ping")
        log(f"serving {url}; logs in {logs}")
        with sync_playwright() as play:
            browser = play.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=url)
            context.set_default_timeout(120_000)  # a loaded machine: the desk is slow
            page = context.new_page()
            page.on("pageerror", lambda error: log(f"page error: {error.stack}"))
            page.on("console", lambda m: m.type == "error" and log(f"console: {m.text[:2000]}"))
            answer = page.request.post(
                "/api/method/login", form={"usr": "Administrator", "pwd": args.password}
            )
            if not answer.ok:
                raise SystemExit(f"login refused: {answer.status} {answer.text()[:200]}")
            try:
                name = walkthrough(page, out, fleet, kinds)
            except Exception:
                page.screenshot(path=str(logs / "failed.png"))
                log(f"failed: the page as it was is {logs / 'failed.png'}")
                raise
            browser.close()
        ok = check_end_state(fleet, kinds, name)
    frappe.destroy()
    log("every host runs the new commit" if ok else "END STATE WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
