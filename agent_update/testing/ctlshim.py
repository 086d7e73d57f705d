"""A host's ``supervisorctl``: ``status`` answered in milliseconds, the rest by the real one.

The orchestrator reads ``supervisorctl status`` on every probe and the test
agent on every ``/version``; the real supervisorctl costs a Python start with
its imports each time, which on a busy machine made the fleet slow. This
script (stdlib only, ``python3 -S``) asks supervisord's socket directly and
prints what supervisorctl prints: name, state, description ("pid 12,
uptime 0:00:05"), exit status 3 when a program is not running. It needs the
socket, so a user who may not use it (no sudo on a standard server) falls
through to the real supervisorctl and gets its own "Permission denied".
Copied to ``<host>/bin/supervisorctl`` with the paths filled in.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import xmlrpc.client

SOCKET = "SOCKET_PATH"
REAL = "REAL_CTL"  # the real supervisorctl for this host (a shell wrapper)


class _Connection(http.client.HTTPConnection):
    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(SOCKET)
        self.sock = sock


class _Transport(xmlrpc.client.Transport):
    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return _Connection("localhost", timeout=10)


def status() -> int:
    proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_Transport())
    infos = proxy.supervisor.getAllProcessInfo()
    names = [
        info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        for info in infos
    ]
    width = max((len(name) for name in names), default=0) + 1
    for name, info in zip(names, infos, strict=True):
        print(f"{name.ljust(width)}{info['statename'].ljust(10)}{info['description']}".rstrip())
    return 0 if all(info["statename"] == "RUNNING" for info in infos) else 3


def main() -> int:
    if sys.argv[1:] == ["status"]:
        try:
            return status()
        except OSError:  # not ours to use, or supervisord down: the real one says so
            pass
    os.execv(REAL, [REAL, *sys.argv[1:]])  # noqa: S606 - a fixed path, no shell wanted
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
