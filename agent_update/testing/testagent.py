"""The loopback test agent: a small stand-in for the real server agent.

The fleet copies this file verbatim into every commit of its upstream repo;
the commit's ``behaviour.json`` decides how that copy misbehaves. Stdlib
only, since it runs straight from a checkout. It copies what an orchestrator
sees of the real agent (docs/design.md §9): ``/version`` reads git at request time,
services come from its own supervisord, ``update`` silently restarts nothing
when a program is down, and its exit code can lie. ``started_commit`` is an
extra the real agent lacks, so tests can prove what really runs. Where the
supervisor socket is root-only (a fleet run as root), it goes through
``sudo -n supervisorctl`` as the real agent does; a ``crashloop`` web lives
past supervisor's ``startsecs`` and then dies, so it never reaches FATAL
(the real gunicorn master with an app that raises at import). A ``dieloop``
web is healthy first: it answers ``/ping`` and ``/version`` on the target
commit, then dies ``crash_after`` seconds after each start, forever (a
master killed a few seconds after it started): one probe calls it healthy.

Usage: ``testagent.py web | worker <i> | setup database | run-patches |
update --restart-web-workers=… --restart-rq-workers=… --restart-redis=…``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent
CONFIG = REPO.parent / "config.json"  # outside the repo, like the real agent's
GROUP = "agent"
DEFAULT_BEHAVIOUR: dict[str, Any] = {
    "marker": "unknown",
    "web": "ok",  # ok | crash | crashloop | dieloop | slow
    "web_delay": 3.0,
    "crash_after": 1.5,  # crashloop, dieloop: seconds alive before dying (> startsecs=1)
    "worker": "ok",  # ok | exit
    "update_exit": 0,
    "update_restarts": True,  # False: `update` restarts nothing yet says it is complete
}


def load_config() -> dict[str, Any]:
    return json.loads(CONFIG.read_text())


def load_behaviour() -> dict[str, Any]:
    behaviour = dict(DEFAULT_BEHAVIOUR)
    path = REPO / "behaviour.json"
    if path.exists():
        behaviour.update(json.loads(path.read_text()))
    return behaviour


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def _supervisor(socket_path: str) -> Any:
    """An XML-RPC proxy on supervisord's unix socket (imported late: workers need none)."""
    import http.client
    import xmlrpc.client

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(socket_path)
            self.sock = sock

    class Transport(xmlrpc.client.Transport):
        def make_connection(self, host: Any) -> http.client.HTTPConnection:
            return Connection("localhost", timeout=5)

    return xmlrpc.client.ServerProxy("http://localhost", transport=Transport())


STATES_TTL = 0.5  # seconds a read of supervisor's states is reused (each costs a sudo)
_cache: dict[str, Any] = {"at": 0.0, "states": {}}


def _ctl(config: dict[str, Any]) -> list[str]:
    """argv prefix of supervisorctl: ``["sudo", "-n", "supervisorctl"]`` or the host's own."""
    ctl = config["supervisorctl"]
    return [ctl] if isinstance(ctl, str) else list(ctl)


def program_states(config: dict[str, Any], fresh: bool = False) -> dict[str, str]:
    """State of every program of the agent group; empty when supervisord is unusable.

    Over supervisord's XML-RPC socket when it is ours to use (no process per
    request), else with ``supervisorctl status``, as the real agent does.
    """
    now = time.monotonic()
    if not fresh and now - _cache["at"] < STATES_TTL:
        return dict(_cache["states"])
    states: dict[str, str] = {}
    socket_path = config.get("supervisor_socket")
    try:
        if socket_path:
            infos = _supervisor(socket_path).supervisor.getAllProcessInfo()
            states = {i["name"]: i["statename"] for i in infos if i["group"] == GROUP}
        else:
            done = subprocess.run(
                [*_ctl(config), "status"], capture_output=True, text=True, timeout=20
            )
            for line in done.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].startswith(f"{GROUP}:"):
                    states[parts[0].split(":", 1)[1]] = parts[1]
    except Exception:  # socket errors, XML-RPC faults, a hung sudo: supervisord unusable
        states = {}
    _cache.update(at=now, states=states)
    return dict(states)


def services(states: dict[str, str]) -> dict[str, Any]:
    workers = {
        name.split("-", 1)[1]: state
        for name, state in sorted(states.items())
        if name.startswith("worker-")
    }
    return {
        "web": states.get("web", "UNKNOWN"),
        "redis": states.get("redis", "UNKNOWN"),
        "worker": workers,
    }


def make_handler(config: dict[str, Any], started: dict[str, Any]) -> type:
    from http.server import BaseHTTPRequestHandler

    password = config["password"]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: polling would flood the program log."""

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), password.encode()
            )

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path not in ("/ping", "/version"):
                self._send(404, {"message": "not found"})
            elif not self._authorized():
                self._send(401, {"message": "Unauthorized"})
            elif path == "/ping":
                self._send(200, {"message": "pong"})
            else:
                self._send(
                    200,
                    {
                        "commit": git("rev-parse", "HEAD"),
                        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
                        "services": services(program_states(config)),
                        "started_commit": started["commit"],
                        "started_marker": started["marker"],
                        "pid": started["pid"],
                    },
                )

    return Handler


def run_web(config: dict[str, Any]) -> int:
    behaviour = load_behaviour()
    print(f"web: marker {behaviour['marker']}", flush=True)
    head = git("rev-parse", "HEAD")
    # crash_commits: set per host by Fleet.sabotage, so one server alone fails.
    if behaviour["web"] == "crash" or head in config.get("crash_commits", ()):
        print("web: crashing on start", file=sys.stderr, flush=True)
        return 3
    if behaviour["web"] == "crashloop":
        # Like a gunicorn master whose app raises at import: up long enough for
        # supervisor to call it RUNNING, then gone; restarted forever, never FATAL.
        time.sleep(float(behaviour["crash_after"]))
        print("web: the app failed to load; exiting", file=sys.stderr, flush=True)
        return 3
    started = {
        "commit": head,
        "marker": behaviour["marker"],
        "pid": os.getpid(),
    }
    if behaviour["web"] == "slow":
        time.sleep(float(behaviour["web_delay"]))
    if behaviour["web"] == "dieloop":
        _die_after(float(behaviour["crash_after"]))
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(
        (config["address"], int(config["web_port"])), make_handler(config, started)
    )
    print(f"web: listening on {config['address']}:{config['web_port']}", flush=True)
    server.serve_forever(poll_interval=0.2)
    return 0


def _die_after(seconds: float) -> None:
    """Serve for ``seconds``, then end the process as a SIGTERM to a master would."""
    import threading

    def die() -> None:
        time.sleep(seconds)
        print(f"web: dying {seconds:g} s after start", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=die, daemon=True).start()


def run_worker(index: int) -> int:
    behaviour = load_behaviour()
    if behaviour["worker"] == "exit":
        print(f"worker-{index}: exiting at start", file=sys.stderr, flush=True)
        return 4
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    print(f"worker-{index}: waiting for jobs", flush=True)
    while not stopping:
        signal.pause()  # no polling: twenty idle hosts should cost no CPU
    print(f"worker-{index}: stopped gracefully", flush=True)
    return 0


def run_update(config: dict[str, Any], args: argparse.Namespace) -> int:
    """Restart the chosen programs; like the real agent, do nothing if one is down."""
    behaviour = load_behaviour()
    states = program_states(config, fresh=True)
    restarts = bool(behaviour["update_restarts"])
    if restarts and states and all(state == "RUNNING" for state in states.values()):
        chosen: list[str] = []
        if args.restart_redis:
            chosen.append("redis")
        if args.restart_rq_workers:
            chosen += sorted(name for name in states if name.startswith("worker-"))
        if args.restart_web_workers:
            chosen.append("web")
        for name in chosen:
            # Its exit code is ignored, as the real agent's runner often does.
            subprocess.run([*_ctl(config), "restart", f"{GROUP}:{name}"], check=False)
    print("Update complete", flush=True)
    if behaviour["update_exit"]:
        print("Error: could not reload the agent configuration", file=sys.stderr, flush=True)
    return int(behaviour["update_exit"])


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agent")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("web")
    worker = commands.add_parser("worker")
    worker.add_argument("index", type=int)
    setup = commands.add_parser("setup")
    setup.add_argument("what", choices=["database"])
    commands.add_parser("run-patches")
    update = commands.add_parser("update")
    for flag in (
        "restart-web-workers",
        "restart-rq-workers",
        "restart-redis",
        "skip-repo-setup",
        "skip-patches",
    ):
        update.add_argument(f"--{flag}", type=_flag, nargs="?", const=True, default=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    config = load_config()
    if args.command == "web":
        return run_web(config)
    if args.command == "worker":
        return run_worker(args.index)
    if args.command == "setup":
        print("Database is set up", flush=True)
        return 0
    if args.command == "run-patches":
        print("No patches to run", flush=True)
        return 0
    return run_update(config, args)


if __name__ == "__main__":
    sys.exit(main())
