"""One loopback server running the REAL frappe/agent, set up as a standard server runs it.

A Unix user of its own (``au<tag>h<N>``, unique per run, never starting with
"n": the agent would think it is a proxy), passwordless sudo with this host's
``supervisorctl``/``systemctl`` shims first on PATH, supervisord as root with a
root-only socket, an sshd of its own on ``127.0.9.N`` with its own host key,
and the agent in ``/home/<user>/agent`` (repo cloned from the harness's
upstream, a venv from the wheelhouse). It owns every process it starts, and
on ``stop()`` ends them by pid, then removes its user, sudoers file and files.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shlex
import signal
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import requests
from supervisor.xmlrpc import SupervisorTransport

from agent_update.testing import ports, procs, sshd, sshkeys
from agent_update.testing.realagent import cleanup, configs, wheelhouse
from agent_update.testing.realagent.source import RealAgentError

SETUP_TIMEOUT = 600.0
STOP_GRACE = 8.0  # supervisord stops the programs itself first
PROGRAMS = ("agent:redis", "agent:web", "agent:worker-0", "agent:worker_backup-0")


@dataclass
class RealHost:
    """Coordinates (what tests and the engine see) and the live processes behind them."""

    index: int
    user: str
    address: str
    ssh_port: int
    web_port: int
    redis_port: int
    password: str
    dir: Path  # the host's own files: configs, shims, logs, keys
    workers: int = 1
    sshd_proc: subprocess.Popen[bytes] | None = None
    sup_proc: subprocess.Popen[bytes] | None = None
    created_user: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def plan(cls, root: Path, index: int, tag: str, workers: int = 1) -> RealHost:
        if not 1 <= index <= 254:
            raise RealAgentError(f"host index {index} is outside 127.0.9.1 … 127.0.9.254")
        address = f"127.0.9.{index}"
        ssh_port, web_port = ports.free_ports(address, 2)
        (redis_port,) = ports.free_ports("127.0.0.1", 1)  # the agent's redis.conf binds there
        return cls(
            index=index,
            user=f"au{tag}h{index}",
            address=address,
            ssh_port=ssh_port,
            web_port=web_port,
            redis_port=redis_port,
            password=secrets.token_hex(16),
            dir=root / f"h{index}",
            workers=workers,
        )

    # -- coordinates ------------------------------------------------------

    @property
    def name(self) -> str:
        return self.user  # the agent's own server name too (config.json)

    @property
    def home(self) -> Path:
        return Path("/home") / self.user

    @property
    def agent_dir(self) -> Path:
        return self.home / "agent"

    @property
    def agent_url(self) -> str:
        return f"http://{self.address}:{self.web_port}"

    @property
    def socket(self) -> Path:
        return self.dir / "s.sock"

    @property
    def sudoers_file(self) -> Path:
        return Path("/etc/sudoers.d") / f"agent_update_{self.user}"

    @property
    def logs(self) -> str:
        return f"{self.dir}/*.log, {self.agent_dir}/logs/"

    # -- setup ------------------------------------------------------------

    def prepare(
        self, upstream: Path, commit: str, wheels: Path, env: Path, client_public: str
    ) -> str:
        """User, sudo, shims, configs and the agent itself; return the known_hosts line."""
        began = time.monotonic()
        if cleanup.pwd_entry(self.user) is not None:
            raise RealAgentError(f"user {self.user} already exists: pick another tag")
        _run(["useradd", "-m", "-s", "/bin/bash", self.user])
        self.created_user = True
        _run(["usermod", "-p", "*", self.user])  # not locked (sshd refuses those), no password
        bin_dir, keys_dir = self.dir / "bin", self.dir / "keys"
        for directory in (self.dir, bin_dir, keys_dir, self.dir / "childlogs"):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        _script(
            bin_dir / "supervisorctl", configs.supervisorctl_shim(self.dir / "supervisord.conf")
        )
        _script(bin_dir / "systemctl", configs.SYSTEMCTL_SHIM)
        staged = self.dir / "sudoers.new"
        staged.write_text(configs.sudoers(self.user, bin_dir))
        staged.chmod(0o440)
        _run(["visudo", "-cqf", str(staged)])
        staged.replace(self.sudoers_file)
        (self.dir / "supervisord.conf").write_text(
            configs.supervisord(self.dir, self.socket, self.agent_dir)
        )
        host_key = self.dir / "ssh_host_ed25519_key"
        host_public = sshkeys.generate(host_key, f"real agent {self.name}")
        for user in (self.user, "root"):
            (keys_dir / user).write_text(client_public + "\n")
            (keys_dir / user).chmod(0o644)
        (self.dir / "sshd_config").write_text(
            configs.sshd(
                self.address, self.ssh_port, self.dir, host_key, keys_dir, [self.user, "root"]
            )
        )
        self._install_agent(upstream, commit, wheels, env)
        self.timings["prepare"] = time.monotonic() - began
        return sshkeys.known_hosts_line(self.address, self.ssh_port, host_public)

    def _install_agent(self, upstream: Path, commit: str, wheels: Path, env: Path) -> None:
        q = shlex.quote
        ag = self.agent_dir
        began = time.monotonic()
        pip_conf = configs.pip_conf(wheels)
        gunicorn = configs.gunicorn(self.address, self.web_port, ag)
        self.as_user(
            f"""
mkdir -p {q(str(ag))}/logs {q(str(ag))}/nginx {q(str(ag))}/tls {q(str(ag / configs.LOADED_DIR))}
mkdir -p ~/benches ~/.config/pip
printf '%s' {q(pip_conf)} > ~/.config/pip/pip.conf
git config --global --add safe.directory {q(str(upstream))}
cd {q(str(ag))}
git clone -q -o upstream {q(str(upstream))} repo
git -C repo checkout -q {q(commit)}
"""
        )
        self.timings["clone"] = time.monotonic() - began
        wheelhouse.clone_env(env, ag / "env", self.user)  # = venv + pip install -r requirements
        self.timings["env"] = time.monotonic() - began - self.timings["clone"]
        self.as_user(
            f"""
env/bin/pip install -q --no-build-isolation -e repo
env/bin/agent setup config --name {q(self.name)} --user {q(self.user)} --workers {self.workers}
printf '%s' {q(gunicorn)} > gunicorn.conf.py
env/bin/agent setup authentication --password {q(self.password)}
env/bin/agent setup database
""",
            timeout=SETUP_TIMEOUT,
        )
        self.timings["agent setup"] = (
            time.monotonic() - began - self.timings["env"] - self.timings["clone"]
        )
        config_file = ag / "config.json"
        config = json.loads(config_file.read_text())
        config.update(redis_port=self.redis_port, web_port=self.web_port)
        config_file.write_text(json.dumps(config, indent=4, sort_keys=True))

    def as_user(self, script: str, timeout: float = 120.0) -> str:
        """Run ``script`` under bash as the agent user in its agent dir; its output."""
        cwd = self.agent_dir if self.agent_dir.is_dir() else self.home
        return _run(
            ["sudo", "-u", self.user, "-H", "bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            timeout=timeout,
        )

    def launch(self) -> None:
        """Start sshd and supervisord (clean environment, like a service), then the agent."""
        began = time.monotonic()
        sshd.ensure_privsep_dir()
        files = sshd.SshdFiles(
            config=self.dir / "sshd_config",
            host_key=self.dir / "ssh_host_ed25519_key",
            authorized_keys=self.dir / "keys" / self.user,
            log=self.dir / "sshd.log",
        )
        self.sshd_proc = sshd.start(files)
        env = {"PATH": configs.SYSTEM_PATH, "LANG": "C.UTF-8"}
        self.sup_proc = procs.spawn(
            [
                sys.executable,
                "-m",
                "supervisor.supervisord",
                "-n",
                "-c",
                str(self.dir / "supervisord.conf"),
            ],
            log=self.dir / "supervisord.out",
            cwd=self.dir,
            env=env,
        )
        _wait(lambda: self.socket.exists() and sshd.is_listening(files), 20, f"{self.name} daemons")
        self.as_user("env/bin/agent setup supervisor")  # writes supervisor.conf, starts programs
        self.timings["launch"] = time.monotonic() - began

    # -- the truth, read directly (not through the engine) ----------------

    def rpc(self) -> xmlrpc.client.ServerProxy:
        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def programs(self) -> dict[str, tuple[str, int | None]]:
        """``{"agent:web": ("RUNNING", pid), …}`` from the root-owned supervisord."""
        infos = self.rpc().supervisor.getAllProcessInfo()
        return {f"{i['group']}:{i['name']}": (i["statename"], i["pid"] or None) for i in infos}

    def pids(self) -> dict[str, int | None]:
        return {name: pid for name, (_, pid) in self.programs().items()}

    def git(self, *args: str) -> str:
        repo = str(self.agent_dir / "repo")
        return _run(["git", "-c", f"safe.directory={repo}", "-C", repo, *args]).strip()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def reflog(self) -> list[str]:
        """``"<sha> <message>"`` per entry, newest first."""
        return self.git("reflog", "--format=%H %gs").splitlines()

    def running_commit(self) -> str | None:
        """The commit the running web's workers loaded (None when no worker came up)."""
        state, pid = self.programs().get("agent:web", ("", None))
        if state != "RUNNING" or pid is None:
            return None
        for candidate in sorted({pid} | procs.descendants([pid])):
            record = self.agent_dir / configs.LOADED_DIR / str(candidate)
            if record.is_file():
                return record.read_text().strip() or None
        return None

    def get(self, path: str, timeout: float = 10) -> requests.Response:
        return requests.get(
            self.agent_url + path,
            headers={"Authorization": f"bearer {self.password}"},
            timeout=timeout,
        )

    def version(self) -> dict:
        answer = self.get("/version")
        answer.raise_for_status()
        return answer.json()

    def problem(self) -> str | None:
        """Why the host is not healthy (None: every program RUNNING and /ping answers pong)."""
        for what, proc in (("sshd", self.sshd_proc), ("supervisord", self.sup_proc)):
            if proc is None or proc.poll() is not None:
                return f"{what} is not running"
        try:
            programs = self.programs()
        except (OSError, xmlrpc.client.Error) as error:
            return f"supervisord does not answer: {error}"
        down = {n: s for n, (s, _) in programs.items() if s != "RUNNING"}
        if down or set(programs) != set(PROGRAMS):
            return f"programs {programs}"
        try:
            if self.get("/ping", timeout=3).json().get("message") != "pong":
                return "/ping did not answer pong"
        except (requests.RequestException, ValueError) as error:
            return f"/ping: {type(error).__name__}"
        return None

    def wait_healthy(self, timeout: float = 60, commit: str | None = None) -> None:
        """Until healthy (and, given ``commit``, its web runs that commit)."""

        def ok() -> bool:
            return self.problem() is None and (commit is None or self.running_commit() == commit)

        _wait(ok, timeout, f"{self.name} healthy on {commit or 'any commit'}", self.problem)

    def leftovers(self) -> list[str]:
        """Processes of an update command still alive on this host, as ``pid uid cwd cmd``.

        The command works in the agent directory (its first step is ``cd`` there):
        any process outside supervisord's tree, of the agent user or under this
        host's sshd, whose working directory is in it. sshd's own session
        processes and a wrapper's idle timer elsewhere are not the command.
        """
        children = procs.children_map()
        supervised: set[int] = set()
        if self.sup_proc is not None:
            supervised = {self.sup_proc.pid} | procs.descendants([self.sup_proc.pid], children)
        under_sshd: set[int] = set()
        if self.sshd_proc is not None:
            under_sshd = procs.descendants([self.sshd_proc.pid], children)
        uid = pwd.getpwnam(self.user).pw_uid
        found = []
        for pid in sorted(set().union(*children.values()) - supervised):
            info = cleanup.proc_info(pid)
            if info is None or info[1].startswith("sshd"):
                continue
            owner, cmdline = info
            if owner != uid and pid not in under_sshd:
                continue
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:
                continue
            if cwd == self.agent_dir or self.agent_dir in cwd.parents:
                found.append(f"{pid} uid={owner} cwd={cwd} {cmdline[:160]}")
        return found

    def stop_program(self, program: str) -> None:
        with contextlib.suppress(xmlrpc.client.Fault):  # already stopped
            self.rpc().supervisor.stopProcess(program, True)

    def start_program(self, program: str) -> None:
        with contextlib.suppress(xmlrpc.client.Fault):  # already started
            self.rpc().supervisor.startProcess(program, True)

    def reset(self, commit: str, timeout: float = 90) -> None:
        """Back on ``commit``, every program RUNNING and the web running it; cheap when so."""
        if self.problem() is None and self.head() == commit and self.running_commit() == commit:
            return
        _wait(lambda: not self.leftovers(), 60, f"{self.name}: earlier commands to end")
        q = shlex.quote(commit)
        self.as_user(
            f"cd repo && git fetch -q upstream && git checkout -q --force {q} && "
            f"git reset -q --hard {q} && git clean -q -fd && cd .. && "
            "env/bin/agent setup supervisor"
        )
        supervisor = self.rpc().supervisor
        supervisor.stopProcessGroup("agent", True)
        supervisor.startProcessGroup("agent", True)
        self.wait_healthy(timeout, commit)

    # -- the end ----------------------------------------------------------

    def stop(self) -> None:
        """End every process of this host by pid (TERM, then KILL), then remove what it made."""
        children = procs.children_map()
        roots = [
            p.pid for p in (self.sup_proc, self.sshd_proc) if p is not None and p.poll() is None
        ]
        watched = set(roots) | procs.descendants(roots, children) | cleanup.user_pids(self.user)
        procs.send(roots, signal.SIGTERM)
        alive = procs.wait_dead(watched, STOP_GRACE) | cleanup.user_pids(self.user)
        if alive:
            procs.send(alive, signal.SIGKILL)
            procs.wait_dead(alive, 5)
        procs.reap(p for p in (self.sup_proc, self.sshd_proc) if p is not None)
        ports.release(self.address, [self.ssh_port, self.web_port])
        ports.release("127.0.0.1", [self.redis_port])
        if self.created_user:
            cleanup.remove_user(self.user, self.sudoers_file)
            self.created_user = False
        self.sudoers_file.unlink(missing_ok=True)

    def live_pids(self) -> set[int]:
        """sshd, supervisord, everything below them, and every process of the user."""
        roots = [
            p.pid for p in (self.sup_proc, self.sshd_proc) if p is not None and p.poll() is None
        ]
        return set(roots) | procs.descendants(roots) | cleanup.user_pids(self.user)


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 120.0) -> str:
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise RealAgentError(f"{argv[:6]} took over {timeout:g} s") from error
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip())[-3000:]
        raise RealAgentError(f"{' '.join(argv[:6])} … exited {done.returncode}: {tail}")
    return done.stdout


def _wait(predicate, timeout: float, what: str, why=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            detail = f": {why()}" if why else ""
            raise RealAgentError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(0.2)
