"""The watchdog: what the scheduled tick does for every rollout, mixed into Service.

A tick starts rollouts whose scheduled time came, plans again what a dead
planner left, and kicks every unfinished rollout so rows a dead runner held
are taken over once their lease expires (Runner.kick); a rollout it cannot
read or resume is logged and named in a TickError after the others had their
turn. ``stalls`` only reports: nothing is done to any server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent_update.rollout import approval, stall
from agent_update.rollout.errors import AgentUpdateError, TickError
from agent_update.rollout.model import Update, UpdateStatus
from agent_update.rollout.runner import Runner
from agent_update.rollout.store import Store

log = logging.getLogger(__name__)


class Watchdog:
    """Mixed into Service, which gives the store, the clock, the runner and the buttons."""

    store: Store
    runner: Runner
    clock: Callable[[], float]

    def start_if_ready(self, name: str, *, resume: bool = False, user: str = "") -> Update:
        raise NotImplementedError

    def build_plan(self, name: str) -> Update:
        raise NotImplementedError

    def tick(self) -> list[str]:
        """Resume what dead workers left; nothing for healthy rollouts."""
        touched = []
        now = self.clock()
        for name in self.store.scheduled_updates(now):
            update = self.store.get_update(name)
            if approval.waiting(update):
                continue  # its start waits for an approval, whatever the time
            try:
                self.start_if_ready(name, user=update.start_requested_by)
            except AgentUpdateError as exc:  # e.g. a rollback commit gone: say so, go on
                log.warning("%s: scheduled start refused: %s", name, exc)
                stuck = f"scheduled start: {exc}"
                if stuck != update.why_stuck:  # once, not at every tick
                    self.store.save_update(update.copy(why_stuck=stuck), ["why_stuck"])
                continue
            log.info("%s: started at its scheduled time", name)
            touched.append(name)
        failed: dict[str, str] = {}
        for name in self.store.unfinished_updates():
            try:  # one rollout that cannot be read or resumed must not starve the others
                if self._resume(name, now) and name not in touched:
                    touched.append(name)
            except Exception as exc:
                log.exception("tick: %s not resumed; the next tick tries again", name)
                failed[name] = f"{type(exc).__name__}: {exc}"
        if touched:
            log.info("tick: resumed %s", ", ".join(touched))
        if failed:
            raise TickError(failed, touched)
        return touched

    def _resume(self, name: str, now: float) -> bool:
        """A planner that died is planned again; anything else gets a kick (see Runner.kick)."""
        update = self.store.get_update(name)
        if update.status is UpdateStatus.PLANNING:
            if update.lease_expires is None or update.lease_expires <= now:
                self.build_plan(name)
                return True
            return False
        return bool(self.runner.kick(name))

    def stalls(self) -> list[stall.Stall]:
        """Running rollouts where no server ended for their stall time; each told once.

        Only reports (and records that it did): nothing is done to any server.
        """
        found = []
        now = self.clock()
        for name in self.store.unfinished_updates():
            update = self.store.get_update(name)
            if not update.stall_minutes or update.status is not UpdateStatus.RUNNING:
                continue
            in_flight = len(self.store.tally(name, 0).active)
            alert = stall.check(update, self.store.row_times(name).last_end, in_flight, now)
            if alert is not None:
                with self.store.locked(name):
                    self.store.save_update(
                        update.copy(stall_notified_at=now), ["stall_notified_at"]
                    )
                log.info("stalled: %s", alert.message)
                found.append(alert)
        return found
