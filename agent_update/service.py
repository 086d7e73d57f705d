"""The operations behind the form's buttons, for any store (SQLite or Frappe).

The CLI, the demo, the tests and the Frappe app all call these, so the
rules live in one place: validate (again) before every step that acts,
transition with the pure commands, write only what changed, then kick the
runner so work starts at once.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent_update.rollout import commands, planner, rules, server_leases
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import EngineSettings, Row, Update, UpdateStatus
from agent_update.rollout.runner import Connector, Launcher, Listener, RowHooks, Runner
from agent_update.rollout.split import split as split_rows
from agent_update.rollout.store import Store

STATUS_FIELDS = ["status", "started_at", "ended_at", "halted", "halt_reason"]


class Service:
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
    ) -> None:
        self.store = store
        self.settings = settings
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
        if update.rollback_to_specific and not self.git.commit_exists(
            update.repo, update.rollback_commit
        ):
            raise ValidationError(
                "rollback_commit", f"{update.rollback_commit} does not exist in {update.repo}"
            )
        rules.validate_update(update, need_commit=True)
        return update

    # ------------------------------------------------------------------ create
    def create(self, update: Update, rows: list[Row] | None = None) -> Update:
        """Insert a Draft update with its servers filled from the registry."""
        update = self.prepare(update).copy(status=UpdateStatus.DRAFT)
        if rows is None:
            rows = commands.rows_from_registry(update, self.store.list_servers())
        return self.store.insert_update(update, rows)

    def build_plan(self, name: str) -> Update:
        update = self.store.get_update(name)
        rules.validate_update(update, need_commit=True)  # later edits are re-checked
        planned = planner.build_plan(self.store, self.connector, name, self.settings, self.clock)
        return self._warn_overlap(planned)

    def _warn_overlap(self, update: Update) -> Update:
        """Name the other unfinished updates sharing servers with this one (or clear it)."""
        warning = server_leases.overlap_warning(self.store.overlaps(update.name))
        if warning != update.overlap_warning:
            update = update.copy(overlap_warning=warning)
            self.store.save_update(update, ["overlap_warning"])
        return update

    # ------------------------------------------------------------------- walk
    def start(self, name: str) -> Update:
        with self.store.locked(name):
            update = self.store.get_update(name)
            rules.validate_update(update, need_commit=True)
            started = commands.start(update, self.store.get_rows(name), self.clock())
            self.store.save_update(started, started.changed_fields(update))
            self._warn_overlap(started)
        self.runner.kick(name)
        return self.store.get_update(name)

    def pause(self, name: str) -> Update:
        with self.store.locked(name):
            update = commands.pause(self.store.get_update(name))
            self.store.save_update(update, ["status"])
        return update

    def resume(self, name: str) -> Update:
        with self.store.locked(name):
            update = commands.resume(self.store.get_update(name))
            self.store.save_update(update, ["status"])
        self.runner.kick(name)
        return self.store.get_update(name)

    def force_continue(self, name: str) -> Update:
        with self.store.locked(name):
            update = self.store.get_update(name)
            rows = self.store.get_rows(name)
            by_idx = {r.idx: r for r in rows}
            continued, changed = commands.force_continue(update, rows)
            for row in changed:
                self.store.save_row(name, row, row.changed_fields(by_idx[row.idx]))
            self.store.save_update(continued, STATUS_FIELDS)
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
        return names

    # --------------------------------------------------------------- watchdog
    def tick(self) -> list[str]:
        """Resume what dead workers left; nothing for healthy rollouts."""
        touched = []
        now = self.clock()
        for name in self.store.unfinished_updates():
            update = self.store.get_update(name)
            if update.status is UpdateStatus.PLANNING:
                if update.lease_expires is None or update.lease_expires <= now:
                    self.build_plan(name)
                    touched.append(name)
            elif self.runner.kick(name):
                touched.append(name)
        return touched

    def drive(self, name: str, timeout: float | None = None) -> Update:
        """Kick and wait in this process until the rollout settles (CLI, tests)."""
        return self.runner.drive(name, timeout)
