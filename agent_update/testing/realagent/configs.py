"""The files that make a loopback host look like a standard server to the real agent.

Pure text builders (no I/O): the sudoers entry, the host's ``supervisorctl``
and ``systemctl`` shims, supervisord as root with a root-only socket, sshd
on the host's own address, the agent's ``gunicorn.conf.py`` and pip config.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Where the agent's web records the commit it loaded (one file per gunicorn master pid).
LOADED_DIR = "web-loaded"


def sudoers(user: str, bin_dir: Path) -> str:
    """Passwordless sudo, with the host's shims first on sudo's PATH."""
    return (
        f'Defaults:{user} secure_path="{bin_dir}:{SYSTEM_PATH}"\n{user} ALL=(ALL) NOPASSWD: ALL\n'
    )


def supervisorctl_shim(config: Path) -> str:
    """Every ``supervisorctl`` on this host talks to this host's supervisord."""
    python = shlex.quote(sys.executable)
    return (
        f'#!/bin/sh\nexec {python} -m supervisor.supervisorctl -c {shlex.quote(str(config))} "$@"\n'
    )


SYSTEMCTL_SHIM = """#!/bin/sh
# The agent reloads nginx after its update; there is no nginx here.
if [ "$1" = reload ] && [ "$2" = nginx ]; then exit 0; fi
echo "systemctl shim: unsupported: $*" >&2
exit 1
"""


def supervisord(host_dir: Path, socket: Path, agent_dir: Path) -> str:
    """supervisord as root, socket 0700 (Debian's default), including the agent's own file."""
    return f"""[unix_http_server]
file={socket}
chmod=0700

[supervisord]
logfile={host_dir}/supervisord.log
logfile_maxbytes=0
pidfile={host_dir}/supervisord.pid
childlogdir={host_dir}/childlogs
nodaemon=true
user=root

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket}

[include]
files = {agent_dir}/supervisor.conf
"""


def sshd(
    address: str, port: int, host_dir: Path, host_key: Path, keys_dir: Path, users: list[str]
) -> str:
    """sshd on the host's own address: key auth only, the host's shims first on PATH."""
    path = f"{host_dir / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    return "\n".join(
        [
            f"ListenAddress {address}:{port}",
            f"HostKey {host_key}",
            f"PidFile {host_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {keys_dir}/%u",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "MaxStartups 100:30:200",
            "MaxSessions 50",
            f"AllowUsers {' '.join(users)}",
            f"SetEnv PATH={path}",
            "LogLevel VERBOSE",
            "",
        ]
    )


def gunicorn(address: str, port: int, agent_dir: Path) -> str:
    """The agent's web binds the host's address (the supervisor command's --bind is fixed).

    Each worker also records the commit checked out when it loaded the app,
    under its master's pid: that is what the running web really runs.
    """
    loaded = agent_dir / LOADED_DIR
    return f'''import os
import subprocess


def on_starting(server):
    server.cfg.set("bind", ["{address}:{port}"])


def post_worker_init(worker):
    head = subprocess.run(
        ["git", "-C", "{agent_dir / "repo"}", "rev-parse", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    os.makedirs("{loaded}", exist_ok=True)
    with open(os.path.join("{loaded}", str(os.getppid())), "w") as out:
        out.write(head)
'''


def pip_conf(wheels: Path) -> str:
    """The agent user's pip installs from the harness's wheelhouse only (no network)."""
    return f"[global]\nno-index = true\nfind-links = {wheels}\ndisable-pip-version-check = true\n"
