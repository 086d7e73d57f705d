"""A row's heartbeat never renews a lease after the row has let it go."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from agent_update.rollout.model import EngineSettings, Row, Update
from agent_update.rollout.store import SqliteStore
from agent_update.rollout.threads import Heartbeat


class SlowRenewals(SqliteStore):
    """Server-lease renewals from the heartbeat's thread take a while (a slow database)."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.renewing = threading.Event()

    def claim_server(self, server, name, idx, now, ttl):  # type: ignore[no-untyped-def]
        if threading.current_thread().name.startswith("lease-"):
            self.renewing.set()
            time.sleep(0.5)
        return super().claim_server(server, name, idx, now, ttl)


def test_stop_waits_for_a_renewal_in_progress(tmp_path):
    store = SlowRenewals(tmp_path / "s.db")
    runner = SimpleNamespace(
        settings=EngineSettings(lease_ttl=0.3),
        abandoned=threading.Event(),
        _held_lock=threading.Lock(),
        clock=time.time,
        store=store,
    )
    name = store.insert_update(
        Update(repo="/srv/agent.git", branch="master"), [Row(1, "web1")]
    ).name
    assert store.claim_row(name, 1, "me", time.time(), 60)
    assert store.claim_server("web1", name, 1, time.time(), 60) == ""
    beat = Heartbeat(runner, name, 1, "me", "web1")
    beat.holds_server = True
    beat._thread.start()  # the loop only: start() would claim the row first
    assert store.renewing.wait(5), "no renewal began"
    beat.stop()  # the row ended while a renewal was under way
    store.release_server("web1", name, 1)
    time.sleep(0.7)  # long enough for a renewal still running to write
    assert store.server_holders(["web1"], 0) == {}  # not even an expired one came back
