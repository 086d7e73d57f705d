"""A MariaDB and a Redis of a test's own, on free loopback ports, to restart at will.

The fault soak restarts the database and the queue under the desk; the
machine's own MariaDB and Redis serve every other test and must never be
touched, so the soak starts these instead (docs/soak.md). Each keeps its
files under one folder, answers on 127.0.0.1 only, and is stopped (TERM,
then KILL) by ``stop``; ``restart`` keeps its port and its data.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent_update.testing import ports

log = logging.getLogger(__name__)
ADDRESS = "127.0.0.1"


class ServiceError(RuntimeError):
    """A private service did not start or stop as asked; the message says which and why."""


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if found:
            return found
    raise ServiceError(f"none of {', '.join(names)} is installed")


def _wait(check, timeout: float, what: str, proc: subprocess.Popen[bytes], logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-800:] if logfile.exists() else ""
            raise ServiceError(f"{what} exited with {proc.returncode}: {tail}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} not up after {timeout:g} s (log: {logfile})")
        time.sleep(0.1)


@dataclass
class _Service:
    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    name = "service"

    @property
    def logfile(self) -> Path:
        return self.root / f"{self.name}.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self, argv: list[str]) -> None:
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )

    def stop(self, grace: float = 20.0) -> None:
        """TERM, then KILL after ``grace`` seconds; a no-op when not running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s on port %d ignored TERM for %g s: killed", self.name, self.port, grace)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self) -> None:
        """Stop, then start again on the same port with the same files."""
        self.stop()
        self.start()

    def start(self) -> _Service:  # pragma: no cover - each service has its own
        raise NotImplementedError


def answers(port: int, timeout: float = 0.5) -> bool:
    return ports.is_listening(ADDRESS, port, timeout)


@dataclass
class PrivateRedis(_Service):
    """A redis-server that keeps nothing on disk (as the machine's own)."""

    name = "redis"

    def start(self) -> PrivateRedis:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.port:
            (self.port,) = ports.free_ports(ADDRESS, 1)
        argv = [_binary("redis-server"), "--bind", ADDRESS, "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.root), "--daemonize", "no"]
        self._spawn(argv)
        assert self.proc is not None
        _wait(self.ping, 20, f"redis on port {self.port}", self.proc, self.logfile)
        log.info("private redis up on %s:%d", ADDRESS, self.port)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection((ADDRESS, self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://{ADDRESS}:{self.port}"


@dataclass
class PrivateMariaDB(_Service):
    """A mariadbd with its own data folder; root logs in with ``password`` over TCP."""

    password: str = field(default_factory=lambda: secrets.token_hex(12))
    name = "mariadb"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_path(self) -> Path:
        return self.root / "mariadb.sock"

    def start(self) -> PrivateMariaDB:
        self.root.mkdir(parents=True, exist_ok=True)
        fresh = not (self.datadir / "mysql").exists()
        if fresh:
            done = subprocess.run(
                [_binary("mariadb-install-db", "mysql_install_db"), "--no-defaults",
                 f"--datadir={self.datadir}", f"--user={pwd.getpwuid(os.geteuid()).pw_name}",
                 "--skip-test-db",
                 "--auth-root-authentication-method=normal"],
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise ServiceError(f"mariadb-install-db failed: {done.stderr[-800:]}")
        if not self.port:
            (self.port,) = ports.free_ports(ADDRESS, 1)
        argv = [_binary("mariadbd", "mysqld"), "--no-defaults", f"--datadir={self.datadir}"]
        argv += [f"--port={self.port}", f"--bind-address={ADDRESS}"]
        if os.geteuid() == 0:
            argv.append("--user=root")  # mariadbd refuses to run as root unless told
        argv += [f"--socket={self.socket_path}", f"--pid-file={self.root / 'mariadb.pid'}"]
        argv += ["--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci"]
        argv += ["--skip-name-resolve", "--innodb-buffer-pool-size=64M"]
        self.socket_path.unlink(missing_ok=True)  # a killed server's leaves it behind
        self._spawn(argv)
        assert self.proc is not None
        _wait(self.alive, 60, f"mariadb on port {self.port}", self.proc, self.logfile)
        if fresh:  # root gets a password, usable over TCP as Frappe's new-site wants
            self.sql(
                f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{self.password}';"
                "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';"
                f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{self.password}';"
                "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;",
                password="",
            )
        log.info("private mariadb up on %s:%d", ADDRESS, self.port)
        return self

    def alive(self) -> bool:
        """The server takes connections (``ping`` says so even to a wrong password)."""
        if not self.socket_path.exists():
            return False
        done = subprocess.run(
            [_binary("mariadb-admin", "mysqladmin"), "--no-defaults",
             f"--socket={self.socket_path}", "-uroot", "--connect-timeout=2", "ping"],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        return done.returncode == 0

    def sql(self, statement: str, password: str | None = None) -> str:
        """Run SQL as root over the socket; the output's text."""
        return self._client([f"--socket={self.socket_path}"], statement, password)

    def tcp_sql(self, statement: str) -> str:
        """Run SQL as root over TCP (127.0.0.1 and the port), as a site connects."""
        return self._client([f"--host={ADDRESS}", f"--port={self.port}"], statement, None)

    def _client(self, where: list[str], statement: str, password: str | None) -> str:
        secret = self.password if password is None else password
        done = subprocess.run(
            [_binary("mariadb", "mysql"), "--no-defaults", *where,
             "-uroot", "-N", "-B", "-e", statement],
            env={**os.environ, "MYSQL_PWD": secret},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"mariadb on port {self.port}: {done.stderr.strip()[-400:]}")
        return done.stdout
