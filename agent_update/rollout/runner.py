"""Carries the machine's decisions out: leases, lanes, idempotent row steps.

Event-driven: ``kick`` takes the update-level decision under the store's
lock and launches the rows to start or resume; ``run_row`` walks one row to
its end and kicks again at once, so the next server starts without waiting
for a tick. Every step is stored before the next begins, with the row's
lease as a fence, so any runner may die anywhere and the next one resumes.
Each stored change of a row or an update is logged at INFO (``steplog``
makes the line); an exception caught here is logged at WARNING or above.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent_update.rollout import machine, machines, server_leases, steplog
from agent_update.rollout.errors import LeaseLost
from agent_update.rollout.links import (
    Connector,
    Launcher,
    Listener,
    MissingServer,
    NoHooks,
    RowHooks,
    ServerLink,
    new_owner,
    skip_reason,
)
from agent_update.rollout.machine import RowAction
from agent_update.rollout.model import (
    EngineSettings,
    Row,
    RowStatus,
    Server,
    Step,
    Update,
    UpdateStatus,
    append_log,
    last_log_line,
)
from agent_update.rollout.observations import PrecheckObs
from agent_update.rollout.store import Store
from agent_update.rollout.threads import Heartbeat, ThreadLauncher

log = logging.getLogger(__name__)


class Runner:
    """Drives updates stored in ``store`` through ``connector``."""

    def __init__(
        self,
        store: Store,
        connector: Connector,
        settings: EngineSettings | None = None,
        *,
        launcher: Launcher | None = None,
        hooks: RowHooks | None = None,
        listener: Listener | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        resolve: machines.Resolve = machines.literal,
        machine_memo: machines.Memo | None = None,
    ) -> None:
        self.store = store
        # Server leases are per machine: two registry names of one machine share one.
        self.machines = machines.MachineIndex(store.list_servers, resolve, memo=machine_memo)
        self.connector = connector
        self.settings = settings or EngineSettings()
        self.launcher = launcher or ThreadLauncher(self)
        self.hooks = hooks or NoHooks()
        self.listener = listener
        self.clock = clock
        self.sleep = sleep
        # Graceful stop (first Ctrl-C): start nothing new, let rows in flight end.
        self.stopping = threading.Event()
        # Abandon (second Ctrl-C): stop renewing and writing; leases handed back.
        self.abandoned = threading.Event()
        self._held: dict[tuple[str, int], str] = {}
        self._held_lock = threading.Lock()

    # ------------------------------------------------------------ stopping
    def stop_starting(self) -> None:
        """Start no new row and take over none; rows in flight finish."""
        self.stopping.set()

    def abandon(self) -> list[tuple[str, int]]:
        """Stop at once: hand back every lease this runner holds.

        The rows keep their stored step, so the next runner resumes them
        immediately (re-observing first) instead of waiting out the lease.
        """
        self.stopping.set()
        self.abandoned.set()
        with self._held_lock:  # a heartbeat renews under this lock: none re-claims after
            held = dict(self._held)
            for (name, idx), owner in held.items():
                try:
                    self.store.release_row(name, idx, owner)
                except Exception:  # its lease expires instead: resumed a little later
                    log.warning("%s #%d: could not hand back its lease", name, idx, exc_info=True)
                else:
                    log.info("%s #%d: lease handed back (stopped at once)", name, idx)
        return sorted(held)

    def held(self) -> list[tuple[str, int]]:
        """The rows this runner is working on now."""
        with self._held_lock:
            return sorted(self._held)

    # ------------------------------------------------------------ update level
    def kick(self, name: str, owner: str | None = None) -> list[int]:
        """Decide under the lock, claim rows, then launch them (outside the lock)."""
        if self.abandoned.is_set():
            return []
        owner = owner or new_owner()
        ttl = self.settings.lease_ttl
        claimed: list[int] = []
        self.machines.warm()  # any lookup of host addresses before the lock, not under it
        with self.store.locked(name):
            update = self.store.get_update(name)
            tally = self.store.tally(name, update.lanes)
            now = self.clock()
            busy = self._busy(name, now)
            if busy:  # their rows wait: look a little further for rows that can start
                tally = self.store.tally(name, update.lanes + len(busy))
            decision = machine.decide(update, tally, now, busy)
            if decision.changes:
                update, before = update.copy(**decision.changes), update
                self.store.save_update(update, decision.changes)
                line = steplog.update_line(before, update)
                if line:
                    log.info("%s", line, extra={"update": name})
            by_idx = {r.idx: r for r in (*tally.active, *tally.pending)}
            if self.stopping.is_set():
                decision.resume, decision.start, decision.rollback = [], [], []
            for idx in decision.resume:
                if self.store.claim_row(name, idx, owner, now, ttl):
                    old = self.store.get_row(name, idx)
                    row = machine.resumed(old, owner, by_idx[idx].lease_owner)
                    row = self._resume_server(name, row, now, ttl)
                    self.store.save_row(name, row, ["log"], owner)
                    self._logged(name, old, row)
                    claimed.append(idx)
            for idx in decision.start:
                row = by_idx[idx]
                if not self.store.claim_row(name, idx, owner, now, ttl):
                    continue
                other = self.store.claim_server(self._key(row.server), name, idx, now, ttl)
                if other:  # taken by another update since we looked: wait for it
                    self.store.release_row(name, idx, owner)
                    busy[row.server] = other
                    log.info("%s #%d %s: server busy in %s", name, idx, row.server, other)
                    continue
                claimed_row = machine.claim(row)
                self.store.save_row(name, claimed_row, ["step"], owner)
                self._logged(name, row, claimed_row, f"lease taken by {owner}")
                claimed.append(idx)
            for idx in decision.rollback:
                if self.store.claim_row(name, idx, owner, now, ttl):
                    row = self.store.get_row(name, idx)  # whole: its log is kept
                    other = self.store.claim_server(self._key(row.server), name, idx, now, ttl)
                    if other:  # the abort's rollback waits for the other update
                        self.store.release_row(name, idx, owner)
                        continue
                    back = machine.abort_rollback(row)
                    self.store.save_row(name, back, back.changed_fields(row), owner)
                    self._logged(name, row, back)
                    claimed.append(idx)
            if update.status is UpdateStatus.RUNNING and busy:
                self._note_waiting(name, busy)
        if isinstance(self.launcher, ThreadLauncher):  # rows run here: held from the claim on
            with self._held_lock:
                self._held.update({(name, idx): owner for idx in claimed})
        if decision.changes:
            self._notify(name, None, update)
        for idx in claimed:
            self.launcher(name, idx, owner)
        return claimed

    def _resume_server(self, name: str, row: Row, now: float, ttl: float) -> Row:
        """A resumed row in flight takes its server's lease back now, under the lock.

        Its lease and its server's expired together; another update may have
        taken the server meanwhile. Then the row says at once, in the same
        write as its resumption, that it waits (``_hold_server`` waits): never
        two rows on one server that both look at work.
        """
        if not row.status.in_flight:
            return row  # not started on its server yet: _hold_server decides
        other = self.store.claim_server(self._key(row.server), name, row.idx, now, ttl)
        if not other:
            return row
        note = server_leases.waiting_note(row.server, other)
        log.info("%s #%d %s: resumed, %s", name, row.idx, row.server, note)
        return row.copy(log=append_log(row.log, note))

    def _busy(self, name: str, now: float) -> dict[str, str]:
        """Servers held by another update's row (few: those in flight elsewhere), by every name."""
        busy = {}
        for key, (other, _) in self.store.foreign_leases(name, now).items():
            busy.update(dict.fromkeys(self.machines.aliases(key), other))
        return busy

    def _key(self, server: str) -> str:
        """The name the server lease of ``server``'s machine is held under."""
        return self.machines.key(server)

    def _note_waiting(self, name: str, busy: dict[str, str]) -> None:
        """Say on each waiting row which update holds its server (only when it changes)."""
        for row in self.store.pending_on(name, busy):
            note = server_leases.waiting_note(row.server, busy[row.server])
            if row.step is Step.NONE and row.reason != note:
                self._note(name, row.copy(reason=note))

    def _server_freed(self, name: str, server: str) -> None:
        """Tell the rollouts waiting for ``server`` (their notes cleared, then kicked)."""
        names = self.machines.aliases(server)
        for other in sorted({u for alias in names for u in self.store.waiting_for(alias)}):
            if other == name:
                continue
            for row in self.store.pending_on(other, names):
                if row.reason.startswith("waiting: "):
                    self._note(other, row.copy(reason=""))
            self.kick(other)  # notes again what is still busy (e.g. in a third update)

    # --------------------------------------------------------------- row level
    def run_row(self, name: str, idx: int, owner: str) -> Row:
        """Walk one claimed row to its end; then start what comes next."""
        try:
            held = self._hold_back(name, idx, owner)
        except LeaseLost as lost:
            log.warning("%s #%d: lease lost before its precheck: %s", name, idx, lost)
            return self.store.get_row(name, idx)
        if held is not None:  # untouched: its server is free for other updates at once
            self.store.release_server(self._key(held.server), name, idx)
            self.store.release_row(name, idx, owner)
            self.kick(name)
            return self.store.get_row(name, idx)
        update = self.store.get_update(name)
        row = self.store.get_row(name, idx)
        server = self.store.get_server(row.server)
        link: ServerLink = (
            MissingServer(row.server) if server is None else self.connector.open(server, update)
        )
        key = self._key(row.server)
        beat = Heartbeat(self, name, idx, owner, key)
        signalled = False
        with self._held_lock:
            self._held[(name, idx)] = owner
        try:
            beat.start()
            held = self._hold_server(update, row, owner, beat, key)
            if held is None:
                return self.store.get_row(name, idx)
            row, beat.holds_server = held, True
            while True:
                action = machine.row_action(row)
                if action is RowAction.NONE:
                    break
                if action is RowAction.PRECHECK and self.stopping.is_set():
                    break  # not started yet: handed back untouched, the next runner takes it
                if action is not RowAction.PRECHECK and not signalled:
                    self.hooks.before_update(update, row)
                    signalled = True
                row = self._step(update, row, action, link, server, owner, beat)
            if signalled:
                self.hooks.after_update(update, row)
        except LeaseLost as lost:  # handed back (Ctrl-C twice), or another runner goes on
            level = logging.INFO if self.abandoned.is_set() else logging.WARNING
            log.log(level, "%s #%d %s: stopped working on it: %s", name, idx, row.server, lost)
            return self.store.get_row(name, idx)
        finally:
            beat.stop()
            link.close()
            if not machine.is_active(row):  # ended: the server is free for others
                self.store.release_server(key, name, idx)
            self.store.release_row(name, idx, owner)
            with self._held_lock:
                self._held.pop((name, idx), None)
        self.kick(name)
        if not machine.is_active(row):
            self._server_freed(name, row.server)
        return row

    def _hold_back(self, name: str, idx: int, owner: str) -> Row | None:
        """Under the lock Pause takes: a row not prechecked yet waits if the update stopped."""
        with self.store.locked(name):
            row = self.store.get_row(name, idx)
            held = machine.held_back(self.store.get_update(name), row)
            if held is not None:
                self.store.save_row(name, held, held.changed_fields(row), owner)
                self._logged(name, row, held)
        if held is not None:
            self._notify(name, held, None)
        return held

    def _hold_server(
        self, update: Update, row: Row, owner: str, beat: Heartbeat, key: str
    ) -> Row | None:
        """Hold the row's server lease before touching the server; None: leave the row.

        Normally taken when the row was claimed. Lost only when this row's
        lease expired (a dead runner) and another update took the server:
        a row not yet prechecked goes back to Pending and waits; one already
        under way waits here, its own lease renewed, for at most one lease
        period past the other row's worst case, then leaves it to the watchdog.
        """
        name, now = update.name, self.clock()
        if self.store.server_holders([key], now).get(key) == (name, row.idx):
            return row  # taken when the row was claimed: no write needed
        other = self.store.claim_server(key, name, row.idx, now, beat.ttl)
        if not other:
            return row
        if row.status is RowStatus.PENDING:
            back = row.copy(step=Step.NONE, reason=server_leases.waiting_note(row.server, other))
            self._save(name, row, back, owner)
            return None
        note = server_leases.waiting_note(row.server, other)
        noted = row
        if last_log_line(row.log) != note:  # the resume may have said it already
            noted = row.copy(log=append_log(row.log, note))
            self._save(name, row, noted, owner)
        limit = self.clock() + update.command_timeout + 2 * update.startup_timeout + beat.ttl
        while self.clock() < limit:
            beat.check()
            self.sleep(max(self.settings.poll_interval, 1.0))
            if not self.store.claim_server(key, name, row.idx, self.clock(), beat.ttl):
                return noted
        log.warning(
            "%s #%d %s: still busy in %s; left to the watchdog", name, row.idx, row.server, other
        )
        return None

    def _step(
        self,
        update: Update,
        row: Row,
        action: RowAction,
        link: ServerLink,
        server: Server | None,
        owner: str,
        beat: Heartbeat,
    ) -> Row:
        beat.check()
        if action is RowAction.PRECHECK:
            why = skip_reason(row.server, server)
            obs = PrecheckObs(opted_out=True, skip_reason=why) if why else link.precheck()
            new = machine.after_precheck(update, row, obs, self.clock())
        elif action is RowAction.COMMAND:
            sent = machine.command_sent(update, row, self.clock())
            self._save(update.name, row, sent, owner)
            row = sent
            obs = link.run_command(machine.target_commit(update, row), update.command_timeout)
            new = machine.after_command(update, row, obs, self.clock())
        elif action is RowAction.REOBSERVE:
            new = machine.after_reobserve(update, row, link.probe(), self.clock())
        else:
            obs = link.probe()
            new = machine.after_probe(update, row, obs, self.clock())
            if new.step is row.step and new.status is row.status:
                self._save(update.name, row, new, owner)
                self._wait(new)
                return new
        self._save(update.name, row, new, owner)
        return new

    def _wait(self, row: Row) -> None:
        pause = self.settings.poll_interval
        if row.deadline is not None:
            pause = max(0.0, min(pause, row.deadline - self.clock()))
        self.sleep(pause)

    def _note(self, name: str, row: Row) -> None:
        """Write a waiting row's reason; listeners get the whole row, not the few fields read."""
        self.store.save_row(name, row, ["reason"])
        log.info("%s #%d %s: %s", name, row.idx, row.server, row.reason or "no longer waiting")
        if self.listener is not None:
            self._notify(name, self.store.get_row(name, row.idx), None)

    def _save(self, name: str, old: Row, new: Row, owner: str) -> None:
        changed = new.changed_fields(old)
        if changed:
            self.store.save_row(name, new, changed, owner)
            self._logged(name, old, new)
            self._notify(name, new, None)

    def _logged(self, name: str, old: Row, new: Row, note: str = "") -> None:
        """One INFO line for a stored change of a row (see steplog.row_line)."""
        line = steplog.row_line(name, old, new, note)
        if line:
            log.info("%s", line, extra={"update": name, "row": new.idx, "server": new.server})

    def _notify(self, name: str, row: Row | None, update: Update | None) -> None:
        if self.listener is None:
            return
        try:
            self.listener(name, row, update)
        except Exception:  # a listener (progress, realtime) must never stop the rollout
            log.warning("%s: the change listener failed", name, exc_info=True)

    # -------------------------------------------------------------- in-process
    def drive(self, name: str, timeout: float | None = None) -> Update:
        """Run an update in this process until nothing more happens now (rollout.drive)."""
        from agent_update.rollout.drive import drive

        return drive(self, name, timeout)
