"""The operations behind the form's buttons, for any store (SQLite or Frappe).

The CLI, the demo, the tests and the Frappe app all call these, so the
rules live in one place: validate (again) before every step that acts,
transition with the pure commands, write only what changed, then kick the
runner so work starts at once. Each operator action is logged at INFO
(logger ``agent_update.service``); the runner logs what follows. The
watchdog's tick and stall alerts are mixed in from watchdog.py.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent_update.rollout import (
    approval,
    commands,
    history,
    planner,
    refs,
    rules,
    server_leases,
)
from agent_update.rollout.errors import (
    TransitionError,
    ValidationError,
)
from agent_update.rollout.eta import Eta, estimate
from agent_update.rollout.machines import Memo, Resolve
from agent_update.rollout.model import EngineSettings, Row, Update, UpdateStatus
from agent_update.rollout.runner import Connector, Launcher, Listener, RowHooks, Runner
from agent_update.rollout.split import split as split_rows
from agent_update.rollout.store import Store
from agent_update.watchdog import Watchdog

log = logging.getLogger(__name__)

STATUS_FIELDS = ["status", "started_at", "ended_at", "halted", "halt_reason"]
WAVE_FIELDS = [
    "wave_started",
    "wave_base_succeeded",
    "wave_base_failed",
    "gate_override",
    "paused_at_gate",
    "pause_reason",
]


class Service(Watchdog):
    """One store, one set of settings, one way to reach servers."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        *,
        connector: Connector | None = None,
        launcher: Launcher | None = None,
        hooks: RowHooks | None = None,
        listener: Listener | None = None,
        clock: Callable[[], float] = time.time,
        resolve: Resolve | None = None,
        machine_memo: Memo | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        if resolve is None:  # host addresses as SSH resolves them (one machine, one server)
            from agent_update.remote.resolve import addresses as resolve
        if connector is None:
            from agent_update.remote.connector import SshConnector

            connector = SshConnector(settings)
        self.connector = connector
        self.clock = clock
        self.runner = Runner(
            store,
            connector,
            settings,
            launcher=launcher,
            hooks=hooks,
            listener=listener,
            clock=clock,
            resolve=resolve,
            machine_memo=machine_memo,
        )
        self._git = None

    # ------------------------------------------------------------------ source
    @property
    def git(self):
        if self._git is None:
            from agent_update.remote.git_source import GitSource

            cache = self.settings.git_cache_dir or str(
                Path(tempfile.gettempdir()) / "agent-update-git"
            )
            self._git = GitSource(Path(cache), token=self.settings.git_token or None)
        return self._git

    def prepare(self, update: Update) -> Update:
        """Defaults, validation, then the commit (branch head) and its message."""
        update = rules.apply_defaults(update, self.settings)
        rules.validate_update(update)
        resolved = self.git.resolve(update.repo, update.branch, update.commit or None)
        update = update.copy(commit=resolved.commit, commit_message=resolved.message)
        self.check_rollback_commit(update)
        rules.validate_update(update, need_commit=True)
        if update.repair:  # its restart needs the status command's supervisorctl
            from agent_update.remote.script import supervisorctl_of

            supervisorctl_of(self.settings.status_command)
        return update

    def check_rollback_commit(self, update: Update) -> None:
        """The specific rollback commit (when one is set) must still exist upstream.

        Checked at create, and again at Build Plan and Start: a force push may
        have removed it since, and a rollback to nothing is no rollback.
        """
        if not (update.rollback_to_specific and update.rollback_commit):
            return
        # A value stored behind the rules' back is named by its own field, not "commit".
        refs.validate_commit(update.rollback_commit, "rollback_commit")
        if not self.git.commit_exists(update.repo, update.rollback_commit):
            raise ValidationError(
                "rollback_commit",
                f"{update.rollback_commit} does not exist in {update.repo} (any more); "
                "set another rollback commit",
            )

    # ------------------------------------------------------------------ create
    def create(self, update: Update, rows: list[Row] | None = None) -> Update:
        """Insert a Draft update with its servers filled from the registry."""
        rules.validate_deadline(update, self.clock())  # before any git work
        servers = self.store.list_servers() if rows is None else []
        if rows is None:
            rules.validate_server_types(update, servers)
        update = self.prepare(update).copy(status=UpdateStatus.DRAFT)
        if rows is None:
            rows = commands.rows_from_registry(update, servers)
        created = self.store.insert_update(update, rows)
        log.info("%s: created (%d servers, commit %s)", created.name, len(rows), update.commit[:12])
        return created

    def build_plan(self, name: str) -> Update:
        update = self.store.get_update(name)
        rules.validate_update(update, need_commit=True)  # later edits are re-checked
        self.check_rollback_commit(update)
        planned = planner.build_plan(self.store, self.connector, name, self.settings, self.clock)
        log.info("%s: plan built: %s", name, planned.status.value)
        return self._warn_overlap(planned)

    def _warn_overlap(self, update: Update) -> Update:
        """Name the other unfinished updates sharing servers with this one (or clear it)."""
        warning = server_leases.overlap_warning(self.store.overlaps(update.name))
        if warning != update.overlap_warning:
            update = update.copy(overlap_warning=warning)
            self.store.save_update(update, ["overlap_warning"])
        return update

    # ------------------------------------------------------------------- walk
    def start(self, name: str, user: str = "") -> Update:
        """Start now; with approval required and none yet, record who asked and wait."""
        self.check_rollback_commit(self.store.get_update(name))  # git, outside the lock
        with self.store.locked(name):
            update = self.store.get_update(name)
            if self._awaits_approval(update, user):
                return self.store.get_update(name)
            rules.validate_update(update, need_commit=True)
            if update.status is UpdateStatus.PENDING:
                rules.validate_deadline(update, self.clock())
            started = commands.start(update, self.store.get_rows(name), self.clock())
            if user and update.status is UpdateStatus.PENDING:  # who started it (alerts, history)
                started = started.copy(start_requested_by=user)
            self.store.save_update(started, started.changed_fields(update))
            self._warn_overlap(started)
        log.info("%s: started", name)
        self.runner.kick(name)
        return self.store.get_update(name)

    def _awaits_approval(self, update: Update, user: str) -> bool:
        """Under the lock: True (and who asked recorded) when Start must wait for approval."""
        if update.status is not UpdateStatus.PENDING or not update.approval_required:
            return False
        approval.check_start(update, user)
        if not approval.waiting(update):
            return False
        asked = approval.request_start(update, user)
        if asked.start_requested_by != update.start_requested_by:
            self.store.save_update(asked, ["start_requested_by"])
            log.info("%s: start asked by %s, awaiting approval", update.name, user or "?")
        return True

    def approve(self, name: str, user: str) -> Update:
        """Record an approval by ``user``; a start already asked for goes ahead (or at start_at)."""
        with self.store.locked(name):
            update = self.store.get_update(name)
            approved = approval.approve(update, user, self.clock())
            self.store.save_update(approved, ["approved_by", "approved_at"])
        log.info("%s: approved by %s", name, user)
        due = approved.start_at is None or approved.start_at <= self.clock()
        if approved.start_requested_by and approved.status is UpdateStatus.PENDING and due:
            self.start(name, approved.start_requested_by)
        return self.store.get_update(name)

    def start_if_ready(self, name: str, *, resume: bool = False, user: str = "") -> Update:
        """Start a Pending update (resume a Paused one when asked), else leave it.

        The status is read under the lock, so two callers racing on one
        Pending update both succeed: one starts it, the other finds it
        Running and follows it. Draft and Planning updates are refused.
        """
        update = self.store.get_update(name)
        if update.status in (UpdateStatus.PENDING, UpdateStatus.PAUSED):
            self.check_rollback_commit(update)  # git, outside the lock
        with self.store.locked(name):
            update = self.store.get_update(name)
            if update.status is UpdateStatus.DRAFT:
                raise TransitionError(f"{name} is Draft: it needs a plan first (Build Plan)")
            if update.status is UpdateStatus.PLANNING:
                raise TransitionError(f"{name} is being planned: wait for Build Plan to end")
            if self._awaits_approval(update, user):
                return self.store.get_update(name)
            if update.status is UpdateStatus.PENDING or (
                resume and update.status is UpdateStatus.PAUSED
            ):
                rules.validate_update(update, need_commit=True)
                if update.status is UpdateStatus.PENDING:
                    rules.validate_deadline(update, self.clock())
                started = commands.start(update, self.store.get_rows(name), self.clock())
                if user and update.status is UpdateStatus.PENDING:  # who started it
                    started = started.copy(start_requested_by=user)
                self.store.save_update(started, started.changed_fields(update))
                log.info("%s: %s -> %s", name, update.status.value, started.status.value)
        return self.store.get_update(name)

    def pause(self, name: str) -> Update:
        with self.store.locked(name):
            update = commands.pause(self.store.get_update(name))
            self.store.save_update(update, ["status"])
        log.info("%s: paused", name)
        return update

    def resume(self, name: str, kick: bool = True) -> Update:
        """Paused -> Running under the lock; ``kick=False`` leaves the kick to a job."""
        with self.store.locked(name):
            update = self.store.get_update(name)
            resumed = commands.resume(update)
            self.store.save_update(resumed, resumed.changed_fields(update))
        log.info("%s: resumed", name)
        if kick:
            self.runner.kick(name)
        return self.store.get_update(name)

    def abort(
        self, name: str, *, rollback: bool = False, reason: str = "", kick: bool = True
    ) -> Update:
        """Stop for good (see commands.abort); the runner winds down what is in flight.

        ``kick=False`` leaves the kick to a job (the desk writes the state in the request).
        """
        with self.store.locked(name):
            update = self.store.get_update(name)
            aborted = commands.abort(update, self.clock(), rollback=rollback, reason=reason)
            self.store.save_update(aborted, aborted.changed_fields(update))
        back = " with rollback" if rollback else ""
        log.info("%s: aborted%s%s", name, back, f": {reason}" if reason else "")
        if kick:
            self.runner.kick(name)
        return self.store.get_update(name)

    def force_continue(self, name: str) -> Update:
        with self.store.locked(name):
            update = self.store.get_update(name)
            # Past its deadline the rollout would end at once, its rows reset for nothing.
            rules.validate_deadline(update, self.clock())
            rows = self.store.get_rows(name)
            by_idx = {r.idx: r for r in rows}
            continued, changed = commands.force_continue(update, rows)
            for row in changed:
                self.store.save_row(name, row, row.changed_fields(by_idx[row.idx]))
            self.store.save_update(continued, STATUS_FIELDS + WAVE_FIELDS)
        log.info("%s: force continue (%d rows reset)", name, len(changed))
        self.runner.kick(name)
        return self.store.get_update(name)

    def split(self, name: str, batches: int) -> list[str]:
        """The original keeps batch 1; returns every batch's update name."""
        with self.store.locked(name):
            update = self.store.get_update(name)
            parts = split_rows(update, self.store.get_rows(name), batches)
            self.store.replace_rows(name, parts[0][1])
            names = [name]
            for fresh, rows in parts[1:]:
                names.append(self.store.insert_update(fresh, rows).name)
        log.info("%s: split into %s", name, ", ".join(names))
        return names

    # ------------------------------------------------------- history, undo
    def delete(self, name: str, *, finished: bool = False) -> None:
        """Remove a Draft or Pending update, or a finished one when asked; never one in flight.

        A Pending update has touched no server yet; a finished one is history
        and kept unless ``finished`` says otherwise.
        """
        with self.store.locked(name):
            update = self.store.get_update(name)
            if update.status.is_final and not finished:
                raise TransitionError(
                    f"{name} is {update.status.value}: finished updates are kept as history; "
                    "delete it with --finished"
                )
            if not update.status.is_final and update.status not in history.DELETABLE_UNFINISHED:
                raise TransitionError(
                    f"{name} is {update.status.value}: only a Draft, Pending or finished update "
                    "may be deleted (abort it first and let it end)"
                )
            if update.status is UpdateStatus.PENDING and self.store.tally(name, 0).started:
                raise TransitionError(f"{name} has servers that started: abort it first")
            self.store.delete_update(name)  # type: ignore[attr-defined]
        log.info("%s: deleted (it was %s)", name, update.status.value)

    def undo(self, name: str, *, plan: bool = True) -> tuple[list[Update], list[tuple[str, str]]]:
        """New updates taking every server ``name`` changed back to what it ran before.

        One update per commit to go back to (one, unless the servers ran
        different commits before), with the original's settings, planned
        (Build Plan; ``plan=False`` leaves that to a job, as the desk does)
        and left Pending for Start. Returns them and the servers left out with why.
        """
        update = self.store.get_update(name)
        found = history.undo_plan(update, self.store.get_rows(name))
        if not found.groups:
            why = "; ".join(f"{s}: {w}" for s, w in found.left_out) or "no server was changed"
            raise TransitionError(f"nothing to undo in {name} ({why})")
        made = []
        for commit, rows in found.groups.items():
            created = self.create(history.undo_update(update, commit), rows)
            made.append(self.build_plan(created.name) if plan else created)
            log.info("%s: undo of %s, %d servers back to %s", created.name, name, len(rows), commit)
        return made, found.left_out

    def eta(self, name: str) -> Eta:
        """The expected time left, from the servers so far and the waves to come."""
        update = self.store.get_update(name)
        return estimate(update, self.store.tally(name, 0), self.store.row_times(name))

    def drive(self, name: str, timeout: float | None = None) -> Update:
        """Kick and wait in this process until the rollout settles (CLI, tests)."""
        return self.runner.drive(name, timeout)
