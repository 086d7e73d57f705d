"""A real OpenSSH server per simulated host, so the update command runs over real SSH.

Paths are absolute (sshd re-executes itself and breaks on relative ``-f``
or ``-E``); ``StrictModes no`` because the keys live under /tmp; ``UsePAM
no`` so no system login stack is involved; ``SetEnv PATH`` puts the host's
own ``supervisorctl`` wrapper first, like a bench's PATH on a real server.
``SetEnv HOME`` gives each host its own home: the machine's own dotfiles
(a ~/.bashrc that sources a toolchain costs ~0.2 s per command) stay out.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agent_update.testing import procs

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class SshdFiles:
    config: Path
    host_key: Path
    authorized_keys: Path
    log: Path


def ssh_user() -> str:
    """The account sshd logs the fleet into: ours (not $USER, which sudo can leave stale)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def write(
    files: SshdFiles,
    address: str,
    port: int,
    client_public: str,
    path_dirs: list[str],
    home: Path,
) -> None:
    files.authorized_keys.write_text(client_public + "\n")
    files.authorized_keys.chmod(0o644)  # sshd reads it as the user logging in
    path_env = ":".join([*path_dirs, "/usr/local/bin", "/usr/bin", "/bin"])
    files.config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}:{port}",
                f"HostKey {files.host_key}",
                f"AuthorizedKeysFile {files.authorized_keys}",
                f"PidFile {files.config.parent / 'sshd.pid'}",
                "AuthenticationMethods publickey",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin yes",
                "StrictModes no",
                "UsePAM no",
                "UseDNS no",
                "PrintMotd no",
                "PrintLastLog no",
                "MaxStartups 200:30:400",
                "MaxSessions 50",
                "LogLevel INFO",
                "Subsystem sftp internal-sftp",
                f"SetEnv PATH={path_env} HOME={home}",
                "",
            ]
        )
    )


def ensure_privsep_dir() -> None:
    """sshd refuses to start without /run/sshd (owned by root, not group-writable)."""
    if not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)


def is_listening(files: SshdFiles) -> bool:
    """Read sshd's own log: probing the port would make sshd fork and re-exec per probe."""
    try:
        return "Server listening on" in files.log.read_text(errors="replace")
    except FileNotFoundError:
        return False


def start(files: SshdFiles) -> subprocess.Popen[bytes]:
    """Run sshd in the foreground (-D) as our child, logging to its own file."""
    return procs.spawn(
        [str(SSHD), "-D", "-f", str(files.config), "-E", str(files.log)],
        log=files.log.with_suffix(".out"),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
