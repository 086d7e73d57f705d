"""The engine's Service wired to this site: settings, store, jobs, hooks and realtime.

Everything the buttons, the jobs and the scheduler do goes through
``get_service()``, so the engine's rules are never re-implemented here.

Inline mode: with ``frappe.flags.agent_update_inline`` set (the API's
``now=True``, and the tests), the launcher runs each row in this process
instead of enqueueing an RQ job, so a rollout completes without a worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import frappe
from frappe import _
from frappe.utils import cint, flt

from agent_update import frappe_codec as codec
from agent_update import frappe_job_holds as job_holds
from agent_update.frappe_log import app_log
from agent_update.frappe_machines import shared_keys
from agent_update.frappe_press import PressDefaults, press_defaults
from agent_update.frappe_store import FrappeStore
from agent_update.rollout.errors import TransitionError, ValidationError
from agent_update.rollout.model import EngineSettings, Row, Update
from agent_update.rollout.runner import Connector, Runner
from agent_update.rollout.store import NotFound
from agent_update.service import Service

INLINE_FLAG = "agent_update_inline"
ROW_EVENT = "agent_update_row"  # one row changed: {"name", "row": {doc fields}}
UPDATE_EVENT = "agent_update_status"  # the update changed: {"name", "status"}
BEFORE_SERVER_HOOK = "agent_update_before_server"
AFTER_SERVER_HOOK = "agent_update_after_server"
ROW_JOB_MARGIN = 300  # seconds an RQ row job gets beyond its command and verify windows


def inline() -> bool:
    return bool(frappe.flags.get(INLINE_FLAG))


def engine_settings() -> EngineSettings:
    """Agent Update Settings as the engine's knobs (engine defaults for blanks).

    On a Press site, Press Settings fill the repo, branch and git token this
    app's settings leave empty (frappe_press.py).
    """
    doc = frappe.get_single(codec.SETTINGS_DOCTYPE)
    base = EngineSettings()
    press = press_defaults() or PressDefaults("", "", "")

    def positive(field: str, default: float) -> float:
        value = flt(doc.get(field))
        return value if value > 0 else default

    return EngineSettings(
        ssh_private_key=doc.get_password("ssh_private_key", raise_exception=False) or "",
        known_hosts=doc.known_hosts or "",
        update_command_template=(doc.update_command_template or "").strip(),
        status_command=(doc.status_command or "").strip() or base.status_command,
        git_token=doc.get_password("git_token", raise_exception=False) or press.git_token,
        git_cache_dir=os.path.abspath(frappe.get_site_path("private", "agent-update-git")),
        poll_interval=positive("poll_interval", base.poll_interval),
        probe_timeout=positive("probe_timeout", base.probe_timeout),
        connect_timeout=positive("connect_timeout", base.connect_timeout),
        lease_ttl=positive("lease_ttl", base.lease_ttl),
        plan_concurrency=cint(positive("plan_concurrency", base.plan_concurrency)),
        default_repo=(doc.default_repo or "").strip() or press.repo,
        default_branch=(doc.default_branch or "").strip() or press.branch,
        agent_ca_file=ca_file(doc.get("agent_ca_bundle") or ""),
    )


def ca_file(pem: str) -> str:
    """The CA bundle as a file of the site's private folder (requests takes a path).

    Named by its content's hash, so a changed bundle is a new file and a
    running row keeps the one it started with; "" when no bundle is set.
    """
    pem = pem.strip()
    if not pem:
        return ""
    digest = hashlib.sha256(pem.encode()).hexdigest()[:16]
    path = os.path.abspath(frappe.get_site_path("private", f"agent-update-ca-{digest}.pem"))
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp"
        with open(partial, "w") as f:
            f.write(pem + "\n")
        os.replace(partial, path)
    return path


# -------------------------------------------------------------------- queue

APP_QUEUE = "agent_update"  # the app's own RQ queue: framework jobs never delay ours
FALLBACK_QUEUE = "long"


@dataclass(frozen=True)
class QueueInfo:
    """Where the app's jobs go, how many workers take them, and what is wrong with that."""

    queue: str
    configured: bool
    workers: int

    def needed(self, lanes: int) -> int:
        """One worker per lane, plus one so Build Plan, Start and Resume never wait."""
        return max(lanes, 1) + 1

    def warning(self, lanes: int) -> str:
        notes = []
        if not self.configured:
            notes.append(
                _(
                    "The {0} queue is not configured: jobs run on {1}, behind the "
                    "framework's jobs (see docs/frappe.md)."
                ).format(APP_QUEUE, FALLBACK_QUEUE)
            )
        if self.workers < self.needed(lanes):
            notes.append(
                _(
                    "{0} lanes need {1} workers on the {2} queue; {3} available: "
                    "servers will run fewer at a time."
                ).format(lanes, self.needed(lanes), self.queue, self.workers)
            )
        return " ".join(notes)


def app_queue() -> str:
    """``agent_update`` when common_site_config's ``workers`` declares it, else ``long``."""
    from frappe.utils.background_jobs import get_queues_timeout

    if APP_QUEUE in get_queues_timeout():
        return APP_QUEUE
    if not _warned:
        _warned.append(True)
        app_log().warning(
            f"queue {APP_QUEUE!r} is not in common_site_config workers: using {FALLBACK_QUEUE!r}"
        )
    return FALLBACK_QUEUE


_warned: list[bool] = []  # the fallback is logged once per process


def queue_info() -> QueueInfo:
    """The app's queue and the live workers that listen on it (0 when Redis is down)."""
    from frappe.utils.background_jobs import get_queue, get_workers

    queue = app_queue()
    try:
        workers = len(get_workers(get_queue(queue)))
    except Exception:  # Redis down: no worker takes anything
        app_log().warning(f"cannot count the workers of queue {queue!r}: taken as 0", exc_info=True)
        workers = 0
    return QueueInfo(queue=queue, configured=queue == APP_QUEUE, workers=workers)


# ------------------------------------------------------------------ launcher


def row_job_id(name: str, idx: int, owner: str) -> str:
    """One job per claim of a row: a resumed row gets a new owner, hence a new job."""
    return f"agent_update::{name}::row{idx}::{owner}"


class JobLauncher:
    """The runner's launcher: an RQ job on the app's queue per claimed row."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def __call__(self, name: str, idx: int, owner: str) -> None:
        if inline():
            assert self.runner is not None
            self.runner.run_row(name, idx, owner)
            return
        frappe.enqueue(
            "agent_update.tasks.run_row",
            queue=app_queue(),
            timeout=row_timeout(name),
            job_id=row_job_id(name, idx, owner),
            deduplicate=True,
            name=name,
            idx=idx,
            owner=owner,
        )


def row_timeout(name: str) -> int:
    """Command, verify and rollback windows of the update, plus a margin."""
    minutes = frappe.db.get_value(
        codec.UPDATE_DOCTYPE,
        name,
        ["command_timeout_minutes", "agent_startup_timeout_minutes", "bake_time"],
        as_dict=True,
    )
    if not minutes:
        return 3600
    windows = flt(minutes.command_timeout_minutes) + flt(minutes.agent_startup_timeout_minutes)
    return int(2 * 60 * windows + 2 * flt(minutes.bake_time) + ROW_JOB_MARGIN)


# --------------------------------------------------------- hooks and events


class FrappeRowHooks:
    """Around each server: halt its agent jobs, then call other apps' hooks.

    The server's switch (Press's ``halt_agent_jobs``, an Agent Server's
    ``agent_jobs_halted``) is set for the row's update and rollback, then
    put back to what it was (frappe_job_holds.py). Subscribers are listed in
    an app's hooks.py::

        agent_update_before_server = ["myapp.agents.hold_jobs"]
        agent_update_after_server = ["myapp.agents.release_jobs"]

    and called as ``fn(update=Update, row=Row)`` (engine dataclasses: the
    server's name is ``row.server``). "before" runs once the precheck has
    passed, just before the update command; "after" runs when the row has
    ended, whatever the outcome. A subscriber's error is logged (Error Log)
    and never stops the rollout.
    """

    def before_update(self, update: Update, row: Row) -> None:
        job_holds.hold(row.server, update.name, row.idx)
        _call_hooks(BEFORE_SERVER_HOOK, update, row)

    def after_update(self, update: Update, row: Row) -> None:
        _call_hooks(AFTER_SERVER_HOOK, update, row)
        job_holds.release(row.server, update.name, row.idx)


def _call_hooks(hook: str, update: Update, row: Row) -> None:
    for path in frappe.get_hooks(hook):
        try:
            frappe.get_attr(path)(update=update, row=row)
            frappe.db.commit()
        except Exception:
            title = f"{hook}: {path} failed for {row.server} ({update.name})"
            app_log().exception(title)
            frappe.db.rollback()
            frappe.log_error(title=title)
            frappe.db.commit()


def publish(name: str, row: Row | None, update: Update | None) -> None:
    """The runner's listener: push each change to the forms that show it.

    A form that misses an event catches up by polling, so a failure here is
    logged and never stops the row that caused it.
    """
    try:
        if row is not None:
            frappe.publish_realtime(
                ROW_EVENT,
                {"name": name, "row": codec.row_payload(row)},
                doctype=codec.UPDATE_DOCTYPE,
                docname=name,
            )
        if update is not None:
            notify_update(name, update.status.value)
    except Exception:
        what = f"row {row.idx}" if row is not None else "status"
        app_log().exception(f"{name}: realtime event for {what} not sent")


def notify_update(name: str, status: str | None = None) -> None:
    """Tell the form (reload) and the list view that the update changed."""
    if status is None:
        status = frappe.db.get_value(codec.UPDATE_DOCTYPE, name, "status")
    frappe.publish_realtime(
        UPDATE_EVENT,
        {"name": name, "status": status},
        doctype=codec.UPDATE_DOCTYPE,
        docname=name,
    )
    frappe.publish_realtime(
        "list_update", {"doctype": codec.UPDATE_DOCTYPE, "name": name}, doctype=codec.UPDATE_DOCTYPE
    )


# ------------------------------------------------------------------ service


def get_service(connector: Connector | None = None) -> Service:
    """A Service over frappe.db with this site's settings (SSH connector by default)."""
    app_log()  # the engine's lines go to logs/agent_update.log, at the site's level
    launcher = JobLauncher()
    service = Service(
        FrappeStore(),
        engine_settings(),
        connector=connector,
        launcher=launcher,
        hooks=FrappeRowHooks(),
        listener=publish,
        machine_memo=shared_keys,  # one registry index per registry state, not per job
    )
    launcher.runner = service.runner
    return service


@contextlib.contextmanager
def frappe_errors() -> Iterator[None]:
    """Engine errors as frappe.throw, naming the form's label of the field."""
    try:
        yield
    except ValidationError as exc:
        frappe.throw(
            _("{0}: {1}").format(_(codec.label(exc.field)), exc.message),
            title=_("Invalid {0}").format(_(codec.label(exc.field))),
        )
    except TransitionError as exc:
        frappe.throw(str(exc), title=_("Not Allowed Now"))
    except NotFound as exc:
        frappe.throw(exc.args[0] if exc.args else str(exc), frappe.DoesNotExistError)
