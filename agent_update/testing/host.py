"""One simulated server: its sshd, its supervisord, and the agent they run.

Owns every process it starts and can prove each is gone. Layout under
``<root>/h<N>/`` is kept short because supervisord's unix socket path must
stay within 107 bytes.

Run as root, a host is set up like a standard server: the agent and its
programs run as the host's own user (``users.py``), who is also the SSH
user; supervisord runs as root with a root-only socket, reached with ``sudo
supervisorctl``; root may log in over SSH too. Otherwise everything runs as
the current user, and a ``sudo`` shim first on the host's PATH just runs
its command (there is no one else to become).
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from agent_update.testing import agentdir, ports, procs, sshd, sshkeys, supervise, users
from agent_update.testing.model import FleetError, FleetHost

SOCKET_PATH_MAX = 107


@dataclass
class SimHost:
    """A host's files, ports and live processes; ``spec`` is what tests see."""

    spec: FleetHost
    dir: Path
    redis_port: int
    workers: int
    sshd_files: sshd.SshdFiles
    sup_files: supervise.SupervisorFiles
    sshd_proc: subprocess.Popen[bytes] | None = None
    sup_proc: subprocess.Popen[bytes] | None = None
    hopeless: bool = False  # set by problem()
    user: users.AgentUser | None = None  # the agent's own user (production-like mode)

    @classmethod
    def plan(
        cls, root: Path, index: int, workers: int, fleet_id: str = "", agent_port: int = 0
    ) -> SimHost:
        """Choose address, ports, password and paths for host ``index`` (≥ 2).

        With a ``fleet_id`` (run as root) the host gets its own agent user;
        with an ``agent_port`` its agent listens there (one port fleet-wide).
        """
        if not 2 <= index <= 254:
            raise FleetError(f"host index {index} is outside 127.0.0.2 … 127.0.0.254")
        address = f"127.0.0.{index}"
        if agent_port:
            ssh_port, redis_port = ports.free_ports(address, 2)
        else:
            ssh_port, agent_port, redis_port = ports.free_ports(address, 3)
        home = root / f"h{index}"
        socket_path = home / "s.sock"
        if len(str(socket_path).encode()) > SOCKET_PATH_MAX:
            raise FleetError(
                f"{socket_path} is longer than {SOCKET_PATH_MAX} bytes: use a shorter root"
            )
        agent_user = users.user_name(fleet_id, index) if fleet_id else sshd.ssh_user()
        spec = FleetHost(
            name=f"host{index}",
            address=address,
            ssh_port=ssh_port,
            ssh_user=agent_user,
            agent_user=agent_user,
            agent_port=agent_port,
            agent_url=f"http://{address}:{agent_port}",
            agent_password=secrets.token_hex(12),
            agent_dir=str(home / "agent"),
        )
        return cls(
            spec=spec,
            dir=home,
            redis_port=redis_port,
            workers=workers,
            sshd_files=sshd.SshdFiles(
                config=home / "sshd_config",
                host_key=home / "ssh_host_ed25519_key",
                authorized_keys=home / "authorized_keys",
                log=home / "sshd.log",
            ),
            sup_files=supervise.SupervisorFiles(
                config=home / "supervisord.conf",
                socket=socket_path,
                log=home / "supervisord.log",
                logs_dir=home / "logs",
                ctl=home / "bin" / "supervisorctl",
            ),
        )

    @property
    def logs(self) -> str:
        """Where to look when this host misbehaves."""
        return f"{self.sshd_files.log}, {self.sup_files.log}, {self.sup_files.logs_dir}/"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    @property
    def owner(self) -> str | None:
        """Who owns the agent's checkout when that is not us (git runs as them)."""
        return None if self.user is None else self.user.name

    def create_user(self) -> None:
        """Make the host's agent user (one at a time: useradd locks /etc/passwd)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.user = users.create(self.spec.agent_user, self.home, self.sup_files.ctl.parent)

    def prepare(self, template: Path, client_public: str, upstream: Path) -> str:
        """Write keys, configs and the agent checkout; return the host's public key line."""
        home = self.home
        for directory in (self.dir, self.sup_files.logs_dir, self.sup_files.ctl.parent, home):
            directory.mkdir(parents=True, exist_ok=True)
        host_public = sshkeys.generate(self.sshd_files.host_key, self.spec.name)
        sshd.write(
            self.sshd_files,
            self.spec.address,
            self.spec.ssh_port,
            client_public,
            [str(self.sup_files.ctl.parent)],
            home,
        )
        agent_dir = Path(self.spec.agent_dir)
        config: dict[str, object] = {
            "name": self.spec.name,
            "address": self.spec.address,
            "web_port": self.spec.agent_port,
            "password": self.spec.agent_password,
            "workers": self.workers,
        }
        if self.user is None:
            config.update(
                supervisor_socket=str(self.sup_files.socket), supervisorctl=str(self.sup_files.ctl)
            )
            _write_sudo_shim(self.sup_files.ctl.parent / "sudo")
        else:
            config["supervisorctl"] = ["sudo", "-n", "supervisorctl"]
        python = agentdir.python_for(own_user=self.user is not None)
        agentdir.create(agent_dir, template, config, python)
        agentdir.trust_upstream(home, upstream)
        supervise.write(
            self.sup_files,
            self.spec.address,
            agent_dir,
            self.redis_port,
            self.workers,
            self.owner,
        )
        if self.user is not None:
            for mine in (agent_dir, home, self.dir / "redis"):
                users.chown_tree(mine, self.user)
        return sshkeys.known_hosts_line(self.spec.address, self.spec.ssh_port, host_public)

    def launch(self) -> None:
        self.sshd_proc = sshd.start(self.sshd_files)
        self.sup_proc = supervise.start(self.sup_files)

    # -- observation -------------------------------------------------------

    def states(self) -> dict[str, tuple[str, int | None]]:
        try:
            return supervise.states(self.sup_files)
        except Exception as error:  # socket errors and XML-RPC faults alike
            raise FleetError(
                f"{self.spec.name}: supervisord does not answer ({error}); see {self.logs}"
            ) from error

    def get(self, path: str, timeout: float = 5) -> requests.Response:
        return requests.get(
            self.spec.agent_url + path,
            headers={"Authorization": f"bearer {self.spec.agent_password}"},
            timeout=timeout,
        )

    def problem(self) -> str | None:
        """Why the host is not healthy yet (None when sshd, programs and /ping are fine).

        Sets ``hopeless`` when waiting cannot help: a daemon exited or a program is FATAL.
        """
        self.hopeless = False
        for name, proc in (("sshd", self.sshd_proc), ("supervisord", self.sup_proc)):
            if proc is None or proc.poll() is not None:
                self.hopeless = True
                status = "never started" if proc is None else f"exited with {proc.returncode}"
                return f"{name} {status}"
        if not sshd.is_listening(self.sshd_files):
            return "sshd is not listening yet"
        try:
            states = self.states()
        except FleetError:
            return "supervisord does not answer yet"
        down = {name: state for name, (state, _) in states.items() if state != "RUNNING"}
        if down:
            self.hopeless = "FATAL" in down.values()
            return f"programs not RUNNING: {down}"
        try:
            answer = self.get("/ping", timeout=2)
            if answer.status_code != 200 or answer.json().get("message") != "pong":
                return f"/ping answered {answer.status_code} {answer.text[:100]!r}"
        except (requests.RequestException, ValueError) as error:
            return f"/ping failed: {error.__class__.__name__}"
        return None

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (problem := self.problem()) is not None:
            if time.monotonic() >= deadline:
                raise FleetError(
                    f"{self.spec.name} not healthy after {timeout:g} s: {problem}; see {self.logs}"
                )
            time.sleep(0.05)

    # -- the end -----------------------------------------------------------

    def pids(self, children: dict[int, list[int]] | None = None) -> set[int]:
        """Every living process this host started: sshd, supervisord and all below them.

        Only the live tree, never pids remembered from earlier: a pid seen
        once may belong to someone else's process by now.
        """
        roots = {
            proc.pid for proc in (self.sshd_proc, self.sup_proc) if proc and proc.poll() is None
        }
        return roots | procs.descendants(roots, children)

    def signal_stop(self, children: dict[int, list[int]]) -> set[int]:
        """Ask everything to stop (supervisord stops its programs); return pids to watch."""
        pids = self.pids(children)
        sshd_tree: set[int] = set()
        if self.sshd_proc is not None and self.sshd_proc.poll() is None:
            sshd_tree = {self.sshd_proc.pid} | procs.descendants([self.sshd_proc.pid], children)
        if self.sup_proc is not None and self.sup_proc.poll() is None:
            procs.send([self.sup_proc.pid], signal.SIGTERM)
        procs.send(sshd_tree, signal.SIGTERM)
        return pids

    def remove_user(self) -> str:
        """Delete the agent user once its processes are gone; a problem or ''."""
        if self.user is None:
            return ""
        problem = users.remove(self.user.name)
        if not problem:
            self.user = None
        return problem

    def finish(self, pids: set[int]) -> None:
        """SIGKILL whatever ignored SIGTERM, then reap our direct children."""
        alive = procs.wait_dead(pids, 0)
        if alive:
            procs.send(alive, signal.SIGKILL, groups=True)
            procs.send(alive, signal.SIGKILL)
            procs.wait_dead(alive, 5)
        procs.reap(p for p in (self.sup_proc, self.sshd_proc) if p is not None)
        ports.release(
            self.spec.address, [self.spec.ssh_port, self.spec.agent_port, self.redis_port]
        )


def _write_sudo_shim(path: Path) -> None:
    """Not root: sudo would only make us ourselves. Drop its options, run the command."""
    path.write_text(
        "#!/bin/sh\n"
        "# loopback fleet, not run as root: every user is this one; run the command as is\n"
        'while [ $# -gt 0 ]; do case "$1" in\n'
        "  -u) shift 2 ;;\n"
        "  --) shift; break ;;\n"
        "  -*) shift ;;\n"
        "  *) break ;;\n"
        "esac; done\n"
        'exec "$@"\n'
    )
    path.chmod(0o755)
