"""The agent's own Unix user per simulated host, as on a standard server (root only).

A real server runs its agent as a plain user (``frappe``) that reaches the
root-owned supervisord with ``sudo supervisorctl``. Each fleet host gets
such a user, named ``fl<fleet id>h<N>`` so fleets running side by side on
one machine never share one (and never starting with "n": the real agent
would then take itself for a proxy). Its sudoers file grants passwordless
sudo and puts the host's own ``supervisorctl`` first on sudo's PATH
(``secure_path``), so ``sudo supervisorctl`` reaches that host's supervisord.
Everything made here is removed by ``remove``.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent_update.testing import procs
from agent_update.testing.model import FleetError

SUDOERS_DIR = Path("/etc/sudoers.d")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def production_like() -> bool:
    """Only root can make users, a root-only supervisord and sudo rights."""
    return os.geteuid() == 0


def fleet_id() -> str:
    return secrets.token_hex(3)


def user_name(fleet: str, index: int) -> str:
    return f"fl{fleet}h{index}"


@dataclass(frozen=True)
class AgentUser:
    name: str
    uid: int
    gid: int
    home: Path

    @property
    def sudoers(self) -> Path:
        return SUDOERS_DIR / f"agent-update-fleet-{self.name}"


def _run(argv: list[str], attempts: int = 4) -> subprocess.CompletedProcess[str]:
    """Run a shadow-utils command; retried while another one holds /etc/passwd's lock."""
    for attempt in range(attempts):
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode == 0 or "cannot lock" not in done.stderr or attempt == attempts - 1:
            break
        time.sleep(0.5 * (attempt + 1))
    if done.returncode != 0:
        raise FleetError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done


def create(name: str, home: Path, bin_dir: Path) -> AgentUser:
    """A user with ``home``, not locked (sshd without PAM refuses locked ones), no password."""
    options = ["--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh"]
    _run(["useradd", *options, "--user-group", "--password", "*", name])
    entry = pwd.getpwnam(name)
    user = AgentUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=home)
    try:
        _write_sudoers(user, bin_dir)
    except BaseException:
        remove(name)
        raise
    return user


def _write_sudoers(user: AgentUser, bin_dir: Path) -> None:
    """Checked with visudo before it goes live: a broken file would break sudo for all."""
    text = (
        f'Defaults:{user.name} secure_path="{bin_dir}:{SYSTEM_PATH}"\n'
        f"{user.name} ALL=(ALL) NOPASSWD: ALL\n"
    )
    SUDOERS_DIR.mkdir(mode=0o750, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=".agent-update-fleet-", dir=SUDOERS_DIR)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(scratch, 0o440)
        _run(["visudo", "-c", "-q", "-f", scratch])
        os.replace(scratch, user.sudoers)
    except BaseException:
        Path(scratch).unlink(missing_ok=True)
        raise


def chown_tree(path: Path, user: AgentUser) -> None:
    for root, dirs, files in os.walk(path):
        os.chown(root, user.uid, user.gid)
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), user.uid, user.gid)


def remove(name: str) -> str:
    """Delete the user, its group and its sudoers file; return a problem or ''.

    Any process still running as the user (an orphan reparented away from the
    fleet's trees) is killed first: the user is this fleet's alone, and
    ``userdel`` refuses a user with live processes.
    """
    (SUDOERS_DIR / f"agent-update-fleet-{name}").unlink(missing_ok=True)
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return ""
    left = _processes_of(uid)
    procs.send(left, signal.SIGKILL)
    procs.wait_dead(left, 5)
    try:
        _run(["userdel", name])
    except FleetError as error:
        return str(error)
    return ""


_NAME = re.compile(r"fl[0-9a-f]{6}h\d{1,3}")


def sweep_stale() -> list[str]:
    """Remove fleet users left by a run killed before its stop (its root is gone).

    A live fleet's root exists, so only users of dead fleets are touched.
    """
    removed = []
    for entry in pwd.getpwall():
        home = Path(entry.pw_dir)
        stale = _NAME.fullmatch(entry.pw_name) and not home.parent.parent.exists()
        if stale and not remove(entry.pw_name):
            removed.append(entry.pw_name)
    return removed


def _processes_of(uid: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and procs.is_alive(int(entry.name)):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found
