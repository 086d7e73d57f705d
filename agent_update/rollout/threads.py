"""The runner's threads: a row's lease heartbeat and the in-process launcher.

Duck-typed against the runner (store, settings, clock, the held-leases lock)
so long commands keep their lease and a CLI or test runs rows in threads.
A failed renewal or a row thread's exception is logged, never swallowed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from agent_update.rollout.errors import LeaseLost

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews a row's lease while a runner works on it (commands can be long)."""

    def __init__(self, runner: Any, name: str, idx: int, owner: str, server: str) -> None:
        self.runner, self.name, self.idx, self.owner = runner, name, idx, owner
        self.server = server
        self.ttl = runner.settings.lease_ttl
        self.holds_server = False  # set once the row holds its server lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"lease-{idx}")

    def start(self) -> None:
        self._renew()  # the server lease is checked next, by _hold_server
        self._thread.start()

    def stop(self, wait: float = 30.0) -> None:
        """No renewal after this returns: one in progress would re-take a lease just released."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def check(self) -> None:
        if self.runner.abandoned.is_set():
            raise LeaseLost(f"row {self.idx} of {self.name} was handed back")
        if self.lost:
            raise LeaseLost(f"row {self.idx} of {self.name} was taken over")

    def _renew(self) -> None:
        runner = self.runner
        with runner._held_lock:
            if runner.abandoned.is_set():  # never re-claim a handed-back lease
                self.lost = True
                return
            now, ttl, store = runner.clock(), runner.settings.lease_ttl, runner.store
            if not store.claim_row(self.name, self.idx, self.owner, now, ttl):
                self._lose("its lease was taken over by another runner")
            elif self.holds_server and (
                other := store.claim_server(self.server, self.name, self.idx, now, ttl)
            ):  # free, expired or ours is renewed; another update's: stop here
                self._lose(f"its server lease was taken by {other}")

    def _lose(self, why: str) -> None:
        if not self.lost:
            log.warning("%s #%d %s: %s", self.name, self.idx, self.server, why)
        self.lost = True

    def _loop(self) -> None:
        while not self._stop.wait(self.runner.settings.lease_ttl / 3):
            try:
                self._renew()
            except Exception:  # tried again next beat; the lease expires if it keeps failing
                log.warning(
                    "%s #%d %s: lease renewal failed",
                    self.name,
                    self.idx,
                    self.server,
                    exc_info=True,
                )


class ThreadLauncher:
    """Runs each claimed row in a thread of this process (CLI, tests, demo)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []

    def __call__(self, name: str, idx: int, owner: str) -> None:
        thread = threading.Thread(
            target=self._run, args=(name, idx, owner), daemon=True, name=f"row-{name}-{idx}"
        )
        with self._lock:  # started under the lock: wait() never sees it unstarted
            thread.start()
            self._threads.append(thread)

    def _run(self, name: str, idx: int, owner: str) -> None:
        try:
            self.runner.run_row(name, idx, owner)
        except BaseException as exc:  # surfaced by wait(); a thread must not die silently
            log.error("%s #%d: the row's thread failed", name, idx, exc_info=True)
            with self._lock:
                self.errors.append(exc)

    def wait(self, deadline: float | None = None) -> None:
        """Until no row thread is alive (new ones may start while waiting)."""
        while True:
            with self._lock:
                alive = [t for t in self._threads if t.is_alive()]
                self._threads = alive
            if not alive:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError("the rollout did not settle in time")
            alive[0].join(timeout=0.5 if remaining is None else min(0.5, remaining))
        if self.errors:
            raise self.errors[0]
