"""The fleet's supervisord client: a call that gets no answer ends, it does not hang.

supervisord defers its answer to ``stopProcess(wait=True)`` until it sees the
program stopped, which it never does when something starts the program again
first (a soak of 60 minutes hung there, its main loop blocked for good).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from agent_update.testing import supervise


def test_a_call_supervisord_never_answers_times_out(tmp_path, monkeypatch) -> None:
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    taken: list[socket.socket] = []
    threading.Thread(target=lambda: taken.append(server.accept()[0]), daemon=True).start()
    monkeypatch.setattr(supervise, "RPC_TIMEOUT", 0.5)
    files = supervise.SupervisorFiles(
        config=Path("c"), socket=path, log=Path("l"), logs_dir=tmp_path, ctl=Path("x")
    )
    began = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            supervise.rpc(files).supervisor.getState()  # read, never answered
        assert time.monotonic() - began < 5
        assert taken  # it did connect: the wait was for the answer
    finally:
        for sock in (*taken, server):
            sock.close()
