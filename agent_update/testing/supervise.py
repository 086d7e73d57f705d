"""One supervisord per simulated host, running the agent group.

supervisord comes from PyPI ``supervisor`` and runs with this Python in the
foreground as our child (its pid is ours to kill). Programs: ``agent:web``,
``agent:worker-<i>``, ``agent:redis``. ``startsecs=1`` is supervisor's
default and the trade-off for realism: a restart is reported only after the
program survived a second, which is most of an update's round trip.

supervisord's loop sleeps up to 1 s between state checks (a SIGCHLD does not
wake it), which would add up to a second to every start, stop and restart.
The launcher caps that sleep at 0.05 s, so states change when they happen;
a production supervisord may lag by up to a second more than the fleet.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from agent_update.testing import procs

GROUP = "agent"
CTL_SHIM = Path(__file__).with_name("ctlshim.py")


@dataclass(frozen=True)
class SupervisorFiles:
    config: Path
    socket: Path
    log: Path
    logs_dir: Path
    ctl: Path  # the host's `supervisorctl` wrapper


def _program(
    name: str, command: list[str], directory: Path, log: Path, user: str | None = None
) -> str:
    as_user = [] if user is None else [f"user={user}"]
    return "\n".join(
        [
            f"[program:{name}]",
            *as_user,
            "command=" + " ".join(shlex.quote(part) for part in command),
            f"directory={directory}",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=2",
            "stopsignal=TERM",
            "stopwaitsecs=3",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={log}",
            "stdout_logfile_maxbytes=0",
            "",
        ]
    )


def write(
    files: SupervisorFiles,
    address: str,
    agent_dir: Path,
    redis_port: int,
    workers: int,
    user: str | None = None,
) -> None:
    """Write supervisord.conf and the host's `supervisorctl` (see ctlshim.py).

    With ``user``, the programs run as that user (supervisord stays root,
    its socket root-only): the agent reaches it through sudo, as on a server.
    """
    python = str(agent_dir / "env" / "bin" / "python")
    agent = [python, str(agent_dir / "repo" / "testagent.py")]
    redis_dir = files.logs_dir.parent / "redis"
    redis_dir.mkdir(exist_ok=True)
    redis = [
        shutil.which("redis-server") or "redis-server",
        "--bind",
        address,
        "--port",
        str(redis_port),
    ]
    redis += ["--save", "", "--appendonly", "no", "--dir", str(redis_dir), "--logfile", ""]
    workers_names = [f"worker-{index}" for index in range(workers)]
    sections = [
        f"[unix_http_server]\nfile={files.socket}\nchmod=0700\n",
        f"[supervisord]\nlogfile={files.log}\nlogfile_maxbytes=0\n"
        f"pidfile={files.config.parent / 'supervisord.pid'}\nnodaemon=true\n"
        f"childlogdir={files.logs_dir}\nloglevel=info\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{files.socket}\n",
        _program("web", [*agent, "web"], agent_dir, files.logs_dir / "web.log", user),
        *(
            _program(
                name,
                [*agent, "worker", str(index)],
                agent_dir,
                files.logs_dir / f"{name}.log",
                user,
            )
            for index, name in enumerate(workers_names)
        ),
        _program("redis", redis, redis_dir, files.logs_dir / "redis.log", user),
        f"[group:{GROUP}]\nprograms=" + ",".join(["web", *workers_names, "redis"]) + "\n",
    ]
    files.config.write_text("\n".join(sections))
    config = shlex.quote(str(files.config))
    ctl = f'exec {shlex.quote(sys.executable)} -m supervisor.supervisorctl -c {config} "$@"\n'
    if user is not None:
        # Root runs it with our interpreter; anyone else (the agent user
        # without sudo) with the system's, to meet the root-only socket and
        # get supervisorctl's own "Permission denied", as on a server.
        pylib = _readable_supervisor(files.config.parent.parent)
        ctl = (
            f'if [ "$(id -u)" = 0 ]; then {ctl}fi\n'
            f"PYTHONPATH={shlex.quote(str(pylib))} exec /usr/bin/python3"
            f' -m supervisor.supervisorctl -c {config} "$@"\n'
        )
    real = files.ctl.with_name("supervisorctl.real")
    real.write_text("#!/bin/sh\n" + ctl)
    real.chmod(0o755)
    python = "/usr/bin/python3" if user is not None else sys.executable
    shim = CTL_SHIM.read_text().replace("SOCKET_PATH", str(files.socket))
    files.ctl.write_text(f"#!{python} -S\n" + shim.replace("REAL_CTL", str(real)))
    files.ctl.chmod(0o755)


def _readable_supervisor(root: Path) -> Path:
    """A folder any user may import the ``supervisor`` package from.

    A copy under the fleet's root (0755), not a link into our environment:
    the checkout and its venv may sit in a directory other users cannot
    enter (a 0700 ``mktemp -d``, /root), and the agent user must import it.
    """
    import supervisor

    pylib = root / "pylib"
    package = pylib / "supervisor"
    # Hosts are prepared in parallel threads: each copies aside, the first rename wins.
    if not package.exists():
        pylib.mkdir(mode=0o755, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".supervisor-", dir=pylib))
        copy = scratch / "supervisor"
        shutil.copytree(
            Path(supervisor.__file__).parent,
            copy,
            ignore=shutil.ignore_patterns("tests", "__pycache__"),
        )
        _readable(copy)
        with contextlib.suppress(OSError):  # another host's copy is in place: same files
            copy.rename(package)
        shutil.rmtree(scratch, ignore_errors=True)
    return pylib


def _readable(tree: Path) -> None:
    """Directories 0755, files 0644: whatever the umask or the venv's modes."""
    tree.chmod(0o755)
    for path in tree.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


LAUNCHER = """
import supervisor.poller as poller
from supervisor.supervisord import main

_poll = poller.Poller.poll
poller.Poller.poll = lambda self, timeout: _poll(self, min(timeout, POLL_SECONDS))
main()
"""
POLL_SECONDS = 0.05


def start(files: SupervisorFiles) -> subprocess.Popen[bytes]:
    """Run supervisord in the foreground with the shorter loop sleep (see above)."""
    launcher = files.config.with_name("supervisord.py")
    launcher.write_text(LAUNCHER.replace("POLL_SECONDS", repr(POLL_SECONDS)))
    return procs.spawn(
        [sys.executable, str(launcher), "-n", "-c", str(files.config)],
        log=files.log.with_suffix(".out"),
        cwd=files.config.parent,
    )


RPC_TIMEOUT = 30.0  # seconds an answer may take (supervisord can defer one for ever)


class _TimedConnection(UnixStreamHTTPConnection):
    """supervisor's unix-socket connection, with a timeout on every read and write."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(RPC_TIMEOUT)


def rpc(files: SupervisorFiles) -> xmlrpc.client.ServerProxy:
    """A proxy on the host's supervisord socket (direct, not over SSH).

    A call unanswered after ``RPC_TIMEOUT`` raises TimeoutError: supervisord
    answers ``stopProcess(wait=True)`` only once it sees the program stopped,
    which it never does if something starts the program again first.
    """
    transport = SupervisorTransport(None, None, serverurl=f"unix://{files.socket}")

    def connection() -> _TimedConnection:
        made = _TimedConnection("localhost")
        made.socketfile = str(files.socket)
        return made

    transport._get_connection = connection
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def states(files: SupervisorFiles) -> dict[str, tuple[str, int | None]]:
    """``{"agent:web": ("RUNNING", 1234), …}``; pid None when not running."""
    infos = rpc(files).supervisor.getAllProcessInfo()
    return {
        f"{info['group']}:{info['name']}": (info["statename"], info["pid"] or None)
        for info in infos
    }
