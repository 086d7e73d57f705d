"""The soak's private MariaDB and Redis: own ports, restarted with their data, gone after."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_update.testing import ports
from agent_update.testing.private_services import PrivateMariaDB, PrivateRedis, answers

pytestmark = pytest.mark.fleet


def test_redis_restarts_on_its_port_and_stops(tmp_path: Path) -> None:
    redis = PrivateRedis(tmp_path / "redis").start()
    try:
        assert redis.port != 6379 and redis.ping()
        pid = redis.proc.pid
        redis.restart()
        assert redis.ping() and redis.proc.pid != pid
        assert redis.url == f"redis://127.0.0.1:{redis.port}"
    finally:
        redis.stop()
    assert not redis.running() and not answers(redis.port)


def test_mariadb_keeps_its_data_over_a_restart_and_stops(tmp_path: Path) -> None:
    db = PrivateMariaDB(tmp_path / "mariadb").start()
    try:
        assert db.port != 3306
        db.sql("CREATE DATABASE soak; CREATE TABLE soak.t (v INT); INSERT INTO soak.t VALUES (7)")
        pid = db.proc.pid
        db.restart()
        assert db.proc.pid != pid
        assert db.sql("SELECT v FROM soak.t").split() == ["7"]
        assert ports.is_listening("127.0.0.1", db.port)
        # root over TCP with the password, as Frappe's new-site logs in
        assert db.tcp_sql("SELECT 1").split() == ["1"]
    finally:
        db.stop()
    assert not db.running() and not answers(db.port)
