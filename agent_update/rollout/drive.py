"""Driving one update in this process until nothing more happens now (CLI, tests, demo).

While it is Running with rows left (waiting for a server busy in another
update, or run by another runner), keep looking and kicking.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent_update.rollout.model import RowStatus, Update, UpdateStatus
from agent_update.rollout.threads import ThreadLauncher

if TYPE_CHECKING:
    from agent_update.rollout.runner import Runner


def drive(runner: Runner, name: str, timeout: float | None = None) -> Update:
    launcher = runner.launcher
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        runner.kick(name)
        if isinstance(launcher, ThreadLauncher):
            launcher.wait(deadline)
        update = runner.store.get_update(name)
        if update.status is not UpdateStatus.RUNNING or not isinstance(launcher, ThreadLauncher):
            return update
        rows = runner.store.get_rows(name, ("idx", "server", "status"))
        if not any(r.status is RowStatus.PENDING or r.status.in_flight for r in rows):
            return update
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError("the rollout did not settle in time")
        time.sleep(max(runner.settings.poll_interval, 0.2))
