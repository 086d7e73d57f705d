"""The soak's eyes: samples the hosts and the store, and runs every invariant each pass.

One thread. Each pass reads, in this order, the hosts' side (the update
commands running under the guard, found by their ``timeout`` process in
/proc; each host's checked-out commit, read from its repo's HEAD file), then
the store (every rollout of the soak, its rows), so a row that started
before a host changed is always seen started. A host whose last row has
ended and that nothing works on is asked over HTTP what it reports and
runs. The first violation stops the soak (``failed`` is set).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agent_update.rollout.model import Row, Update
from agent_update.rollout.store import SqliteStore
from agent_update.testing.model import FleetError
from agent_update.testing.soak import invariants as inv

if TYPE_CHECKING:
    from agent_update.testing.fleet import Fleet

log = logging.getLogger(__name__)
CHECKOUT = re.compile(r"git checkout --force '?([0-9a-f]{40})")
SHA = re.compile(r"^[0-9a-f]{40}$")
RESTART_SETTLE = 6.0  # seconds a restart may lag the work or fault that caused it


def scan_commands(agent_dirs: dict[str, str]) -> list[inv.Command]:
    """Update commands running now: the guard's ``timeout`` runs the body under the lock."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) != b"timeout" or len(argv) < 3:
            continue
        text = b" ".join(argv).decode(errors="replace")
        for host, agent_dir in agent_dirs.items():
            if f"{agent_dir}/repo" in text:
                match = CHECKOUT.search(text)
                found.append(inv.Command(host, int(entry.name), match.group(1) if match else ""))
                break
    return found


def read_head(agent_dir: str) -> str:
    """The checked-out commit, straight from the HEAD file (no git process per host)."""
    try:
        head = (Path(agent_dir) / "repo" / ".git" / "HEAD").read_text().strip()
    except OSError:
        return ""
    return head if SHA.match(head) else ""


class Observer(threading.Thread):
    """Runs the invariants every ``interval`` seconds until stopped or violated."""

    def __init__(
        self,
        fleet: Fleet,
        db_path: Path,
        rollouts: Callable[[], list[str]],
        runners: Callable[[], list[inv.Span]],
        paused_by_operator: Callable[[str], bool],
        fault_windows: Callable[[], list[tuple[str, inv.Window]]],
        self_crashing: Callable[[], set[str]],
        *,
        lease_ttl: float,
        deadline_grace: float,
        interval: float = 1.0,
        more: Callable[[], tuple[dict[str, Update], dict[str, list[Row]]]] | None = None,
        acted_at: Callable[[str], float | None] = lambda name: None,
        context: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(name="soak-observer", daemon=True)
        self.fleet = fleet
        self.store = SqliteStore(db_path)
        self.rollouts = rollouts
        self.runners = runners
        self.paused_by_operator = paused_by_operator
        self.fault_windows = fault_windows
        self.self_crashing = self_crashing
        self.pids: dict[str, tuple[float, dict[str, int | None]]] = {}
        self.row_windows: dict[tuple[str, int, float], tuple[str, float, float]] = {}
        self.unstable: dict[str, list[inv.Window]] = {}
        self.lease_grace = 3 * lease_ttl
        self.deadline_grace = deadline_grace
        self.interval = interval
        self.acted_at = acted_at  # when an operator last set a rollout going again
        self.more = more  # rollouts of another store (the desk's), read after this one
        self.context = context  # what the drivers were doing, noted at the first violation
        self.context_seen = ""
        self.agent_dirs = {host.name: host.agent_dir for host in fleet.hosts}
        self.stopping = threading.Event()
        self.failed = threading.Event()
        self.violations: list[inv.Violation] = []
        self.seen: dict[str, set[str]] = {name: set() for name in self.agent_dirs}
        self.started: dict[str, set[int]] = {}
        self.verified: set[tuple[str, int, float]] = set()
        self.checks = 0  # host-vs-row comparisons made
        self.commands: set[tuple[str, int]] = set()  # (host, pid) of update commands seen
        self.passes = 0
        self.restarts = 0  # program pid changes seen (each explained, or a violation)
        self.busy: list[str] = []  # hosts in flight at the last pass (faults aim at them)
        self.error = ""

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.observe(final=False)
            except Exception as error:  # an observer that dies silently would prove nothing
                log.exception("soak observer failed")
                self.error = f"the observer failed: {error!r}"
                self.failed.set()
                return
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)

    # ------------------------------------------------------------------ a pass
    def snapshot(self) -> tuple[dict[str, Update], dict[str, list[Row]]]:
        """Every rollout and its rows as of one instant (one read transaction per store)."""
        updates, rows = {}, {}
        store = self.store
        with store._lock:
            store._conn.execute("BEGIN")
            try:
                for name in self.rollouts():
                    updates[name] = store.get_update(name)
                    rows[name] = store.get_rows(name)
            finally:
                store._conn.execute("COMMIT")
        if self.more is not None:
            more_updates, more_rows = self.more()
            updates.update(more_updates)
            rows.update(more_rows)
        return updates, rows

    def observe(self, final: bool) -> list[inv.Violation]:
        """One pass; ``final``: the soak is over and quiet, check every host now."""
        found: list[inv.Violation] = []
        commands = scan_commands(self.agent_dirs)
        for command in commands:
            self.commands.add((command.host, command.pid))
            if command.commit:
                self.seen[command.host].add(command.commit)
        crashing = self.self_crashing()
        for host, agent_dir in self.agent_dirs.items():
            head = read_head(agent_dir)
            if head:
                self.seen[host].add(head)
            if head in crashing:
                self._unstable(host, time.time())
        restarts = self.sample_pids()
        self.restarts += len(restarts)
        runners = self.runners()
        updates, rows = self.snapshot()
        now = time.time()
        self.passes += 1
        found += inv.concurrent_commands(commands)
        found += inv.one_rollout_per_server(rows, now)
        found += inv.stale_leases(rows, runners, now, self.lease_grace)
        busy = set()
        for name, update in updates.items():
            mine = self.started.setdefault(name, set())
            for row in rows[name]:
                if row.started_at is not None or row.status not in inv.NOT_STARTED:
                    mine.add(row.idx)
                if row.status.in_flight:
                    busy.add(row.server)
            grace = 0.0 if final else self.deadline_grace
            paused = self.paused_by_operator(name)
            settled = inv.settled(update, rows[name], now, grace, paused, self.acted_at(name))
            if settled is not None:
                found.append(settled)
            found += inv.untouched(update, rows[name], mine, self.seen)
        self.busy = sorted(busy)
        found += self.check_restarts(restarts, updates, rows, now)
        found += self.check_hosts(updates, rows, final)
        self.record(found)
        return found

    def sample_pids(self) -> list[inv.Restart]:
        """Every program's pid on every host; the changes since the last sample."""
        restarts = []
        for host in self.agent_dirs:
            try:
                states = self.fleet.program_states(host)
            except FleetError:
                continue
            at = time.time()
            pids = {program: pid for program, (_, pid) in states.items()}
            if any(state in ("BACKOFF", "FATAL", "EXITED") for state, _ in states.values()):
                self._unstable(host, at)  # supervisord's own doing
            if host in self.pids:
                then, old = self.pids[host]
                restarts += [
                    inv.Restart(host, program, old.get(program), pid, then, at)
                    for program, pid in pids.items()
                    if pid != old.get(program)
                ]
            self.pids[host] = (at, pids)
        return restarts

    def _unstable(self, host: str, at: float) -> None:
        """The host restarts programs by itself now: one window per stretch of samples."""
        spans = self.unstable.setdefault(host, [])
        if spans and spans[-1][1] >= at - 2 * RESTART_SETTLE:
            spans[-1] = (spans[-1][0], at)
        else:
            spans.append((at, at))

    def check_restarts(
        self,
        restarts: list[inv.Restart],
        updates: dict[str, Update],
        rows: dict[str, list[Row]],
        now: float,
    ) -> list[inv.Violation]:
        """Every program restart falls in a row's work, a fault, or a self-crashing commit."""
        never: dict[str, list[str]] = {}
        for name, update_rows in rows.items():
            for row in update_rows:
                if row.started_at is not None:
                    key = (name, row.idx, row.started_at)
                    _, _, end = self.row_windows.get(key, ("", 0.0, row.started_at))
                    if row.status.in_flight or row.lease_owner:
                        end = float("inf")
                    elif row.status.ended:
                        end = row.ended_at or now
                    elif end == float("inf"):
                        end = now  # back to Pending: at work until now
                    self.row_windows[key] = (row.server, row.started_at, end)
                elif (
                    row.status in inv.NOT_STARTED
                    and row.idx not in self.started.get(name, ())
                    and not updates[name].status.is_final
                ):
                    never.setdefault(row.server, []).append(name)
        windows: dict[str, list[inv.Window]] = {h: list(w) for h, w in self.unstable.items()}
        for server, start, end in self.row_windows.values():
            windows.setdefault(server, []).append((start, end))
        for host, window in self.fault_windows():
            windows.setdefault(host, []).append(window)
        return inv.unexplained_restarts(restarts, windows, RESTART_SETTLE, never)

    def check_hosts(
        self, updates: dict[str, Update], rows: dict[str, list[Row]], final: bool
    ) -> list[inv.Violation]:
        """Hosts whose last row ended and that nothing works on: do they run what it says?"""
        by_host: dict[str, list[tuple[Update, Row]]] = {}
        for name, update_rows in rows.items():
            for row in update_rows:
                by_host.setdefault(row.server, []).append((updates[name], row))
        found = []
        for host, pairs in sorted(by_host.items()):
            touch = inv.last_touch(pairs)
            if touch is None or inv.expected_commit(*touch) is None:
                continue
            update, row = touch
            key = (update.name, row.idx, row.ended_at or 0.0)
            if key in self.verified and not final:
                continue
            try:
                view = inv.HostView(
                    self.fleet.reported_commit(host), self.fleet.running_commit(host)
                )
            except FleetError:  # down for a moment (a fault): ask again next pass
                if final:
                    head = read_head(self.agent_dirs[host])
                    owner = [n for n, u in updates.items() if u.commit == head and head]
                    found.append(
                        inv.Violation(
                            "row-vs-host",
                            host,
                            update.name,
                            f"row #{row.idx} is {row.status.value} but the agent does not answer; "
                            f"its checkout is {head[:12] or '?'}"
                            + (f", the commit of {', '.join(owner)}" if owner else ""),
                        )
                    )
                continue
            violation = inv.host_matches_row(update, row, view)
            if violation is not None and not final and self._moved_on(host, update, row):
                continue  # another row took the host meanwhile: judged when it ends
            self.verified.add(key)
            self.checks += 1
            if violation is not None:
                found.append(violation)
        return found

    def _moved_on(self, host: str, update: Update, row: Row) -> bool:
        updates, rows = self.snapshot()
        pairs = [(updates[name], r) for name, rs in rows.items() for r in rs if r.server == host]
        touch = inv.last_touch(pairs)
        return touch is None or (touch[0].name, touch[1].idx) != (update.name, row.idx)

    def record(self, found: Iterable[inv.Violation]) -> None:
        """Each violation once: a pass after the first sees it again with other seconds."""
        known = {(v.invariant, v.host, v.update) for v in self.violations}
        fresh = [v for v in found if (v.invariant, v.host, v.update) not in known]
        if fresh:
            if self.context is not None and not self.violations:
                self.context_seen = self.context()
            self.violations.extend(fresh)
            self.failed.set()
