"""A Frappe site of a test's own, on a private MariaDB and Redis, with its RQ workers.

The soak's desk path needs a database and a queue it may restart, and
workers it may kill, without touching the machine's services or the
benches' test sites. A Frappe worker reads its Redis from the sites
folder's ``common_site_config.json`` only, so the site lives in a sites
folder of its own (``ROOT/sites``) beside a built bench's: the bench lends
its Python env (Frappe, and this app installed) and its database dump; this
checkout comes first on ``PYTHONPATH``, so the site runs this code whatever
checkout the bench was last linked to. docs/soak.md says how the soak uses it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import pickle
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_update.testing import procs
from agent_update.testing.private_services import PrivateMariaDB, PrivateRedis

log = logging.getLogger(__name__)
CHECKOUT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("AGENT_UPDATE_CACHE", Path.home() / ".cache" / "agent_update"))


class DeskSiteError(RuntimeError):
    """The site could not be made or run; the message says which step and why."""


class DeskRefused(DeskSiteError):
    """The site answered a call with an error of its own (a button refused in this
    state, a validation): asking again would get the same answer."""


#: Errors of a site whose database or queue is coming back: a call is asked again.
#: TickError: a watchdog tick that could not resume a rollout (often the database
#: gone for a moment); one that keeps failing is a finding (the soak's desk-unanswered).
TRANSIENT = frozenset(
    {
        "OperationalError",
        "InterfaceError",
        "ConnectionError",
        "ConnectionRefusedError",
        "BrokenPipeError",
        "TimeoutError",
        "BusyLoadingError",
        "QueryDeadlockError",
        "QueryTimeoutError",
        "TickError",
    }
)


def cached_bench() -> Path | None:
    """The newest plain bench ``scripts/frappe-bench.sh`` built (``make test`` builds it)."""
    built = sorted(CACHE.glob("bench-*/.agent-update-built"), key=lambda p: p.stat().st_mtime)
    return built[-1].parent if built else None


@dataclass
class DeskSite:
    bench: Path
    root: Path
    site: str = "soak.localhost"
    db: PrivateMariaDB = field(init=False)
    redis: PrivateRedis = field(init=False)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0  # workers started so far (each logs to worker-N.log)

    def __post_init__(self) -> None:
        self.bench = Path(self.bench).resolve()
        self.root = Path(self.root).resolve()
        python = self.bench / "env" / "bin" / "python"
        if not python.exists():
            raise DeskSiteError(f"bench {self.bench} has no env/bin/python")
        self.python = str(python)
        self.sites = self.root / "sites"
        self.db = PrivateMariaDB(self.root / "mariadb")
        self.redis = PrivateRedis(self.root / "redis")

    # ----------------------------------------------------------------- running
    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH", "")]))
        return {**os.environ, "PYTHONPATH": path, "CI": "1"}

    def frappe(self, *args: str, site: bool = True, timeout: float = 600) -> str:
        """A ``bench``-style command (``frappe --site SITE ARGS``) in this sites folder."""
        argv = [self.python, "-m", "frappe.utils.bench_helper", "frappe"]
        argv += ["--site", self.site] if site else []
        argv += list(args)
        done = subprocess.run(
            argv,
            cwd=self.sites,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-1500:]
            raise DeskSiteError(f"frappe {' '.join(args[:2])} failed ({done.returncode}): {tail}")
        return done.stdout

    # ------------------------------------------------------------------ making
    def create(self) -> DeskSite:
        """Services up, the sites folder written, the site made from the bench's dump."""
        dump = self.bench / "frappe-site.sql"
        if not dump.exists():
            raise DeskSiteError(f"{dump} is missing: run `make test` once to build the bench")
        self.db.start()
        self.redis.start()
        self.sites.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        shutil.copy(self.bench / "sites" / "apps.txt", self.sites / "apps.txt")
        config = {
            "db_host": "127.0.0.1",
            "db_port": self.db.port,
            "redis_cache": self.redis.url,
            "redis_queue": self.redis.url,
            "redis_socketio": self.redis.url,
            "workers": {"agent_update": {"timeout": 7200}},
        }
        if os.geteuid() == 0:
            config["frappe_user"] = "root"
        (self.sites / "common_site_config.json").write_text(json.dumps(config, indent=1))
        self.frappe(
            "new-site", self.site, "--db-root-username", "root",
            "--db-root-password", self.db.password, "--admin-password", "admin",
            "--db-host", "127.0.0.1", "--db-port", str(self.db.port),
            "--source-sql", str(dump), "--no-mariadb-socket",
            site=False,
        )  # fmt: skip
        self.frappe("install-app", "agent_update")
        log.info("desk site %s up in %s", self.site, self.sites)
        return self

    def start_workers(self, count: int) -> list[subprocess.Popen[bytes]]:
        """``count`` more RQ workers on the app's queue, each in its own process group."""
        for _ in range(count):
            self.started += 1  # a killed worker's log stays its own
            out = open(self.root / "logs" / f"worker-{self.started}.log", "ab")  # noqa: SIM115
            with out:
                self.workers.append(
                    subprocess.Popen(
                        [
                            self.python,
                            "-m",
                            "frappe.utils.bench_helper",
                            "frappe",
                            "worker",
                            "--queue",
                            "agent_update",
                        ],
                        cwd=self.sites,
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        return self.workers

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def busy_worker(self) -> tuple[subprocess.Popen[bytes], int] | None:
        """A worker running a job now, and that job's process: RQ's work horse, a
        child of the worker in a session of its own (a SIGKILL to the worker's
        process group would leave it running)."""
        children = procs.children_map()
        for worker in self.live_workers():
            horses = children.get(worker.pid, [])
            if horses:
                return worker, horses[0]
        return None

    def kill_worker(self, worker: subprocess.Popen[bytes], horse: int | None) -> None:
        """SIGKILL to the job's process (first) and to its worker; another worker starts."""
        for pid in filter(None, (horse, worker.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(10)
        self.workers.remove(worker)
        self.start_workers(1)

    def stop(self) -> None:
        """Workers (KILL: their jobs' leases expire, as after a crash), then the services."""
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        self.redis.stop()
        self.db.stop()


class DeskClient:
    """Calls into the site through ``desk_rpc`` (one process, kept for the client's life)."""

    PREFIX = "@@rpc "

    def __init__(self, desk: DeskSite) -> None:
        self.desk = desk
        errors = open(desk.root / "logs" / "desk-rpc.log", "ab")  # noqa: SIM115
        with errors:
            self.proc = subprocess.Popen(
                [desk.python, "-m", "agent_update.testing.desk_rpc", desk.site],
                cwd=desk.sites, env=desk.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=errors, text=True, bufsize=1, start_new_session=True,
            )  # fmt: skip

    def call(self, op: str, *args: Any, retry_for: float = 0, **kwargs: Any) -> Any:
        """One operation of desk_rpc; its value, or DeskSiteError with the site's words.

        ``retry_for``: seconds to keep asking while the site's MariaDB or Redis
        comes back (a restart); a site process that ended is not asked again,
        nor is a call the site refused (DeskRefused: a button pressed in a
        state that does not allow it). Retrying those for ``retry_for`` kept
        the soak's loop, and so its watchdog tick, waiting for nothing.
        """
        deadline = time.monotonic() + retry_for
        while True:
            try:
                return self._call(op, *args, **kwargs)
            except DeskRefused:
                raise
            except DeskSiteError as exc:
                if time.monotonic() > deadline or not self.alive():
                    raise
                log.info("desk call %s retried: %s", op, exc)
                time.sleep(1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _call(self, op: str, *args: Any, timeout: float = 120, **kwargs: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(
            json.dumps({"op": op, "kwargs": {**kwargs, "args": list(args)}}) + "\n"
        )
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise DeskSiteError(f"desk call {op} unanswered after {timeout:g} s")
            line = self.proc.stdout.readline()
            if not line:
                raise DeskSiteError(f"desk call {op}: the site's process ended (see desk-rpc.log)")
            if line.startswith(self.PREFIX):
                out = json.loads(line[len(self.PREFIX) :])
                if not out["ok"]:
                    error = out["error"]
                    kind = DeskSiteError if error.split(":", 1)[0] in TRANSIENT else DeskRefused
                    raise kind(f"desk call {op}: {error}")
                return pickle.loads(base64.b64decode(out["value"]))  # noqa: S301 (our own process)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
