"""A cache of the real agent's wheels and venv, so a warm setup needs no network or builds.

The agent pins ~50 packages, some only as sdists; building and downloading
them is most of a cold setup. They are built once per (requirements, Python)
into ``~/.cache/agent_update/wheels/<key>/`` and every host's pip then runs
with ``no-index`` against a copy the agent users can read. Installing them
(~340 MB unpacked) is most of a warm setup, so a venv with them is kept too
(``real-agent-env/<key>``) and each host gets a copy with its paths rewritten,
exactly what ``pip install -r`` from the wheelhouse would have made there.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from agent_update.testing.realagent.source import CACHE, RealAgentError

AGENT_PYTHON = Path("/usr/bin/python3")  # what a standard server runs the agent with
#: Installed before the agent: Jinja2 2.10.3 needs pkg_resources (setuptools < 81).
BASE_PACKAGES = ("pip", "setuptools<81", "wheel")
BUILD_TIMEOUT = 1200.0


def _python_tag() -> str:
    done = subprocess.run(
        [str(AGENT_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RealAgentError(f"{AGENT_PYTHON} does not run: {done.stderr.strip()}")
    return done.stdout.strip()


def ensure(requirements: Path) -> Path:
    """The wheelhouse for ``requirements`` (built now when missing; safe across processes)."""
    tag = _python_tag()
    key = hashlib.sha256(requirements.read_bytes() + tag.encode()).hexdigest()[:16]
    base = CACHE / "wheels"
    house = base / f"py{tag}-{key}"
    if (house / ".complete").is_file():
        return house
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same one
        if not (house / ".complete").is_file():
            _build(requirements, house, tag)
    return house


def _pip(python: Path, *args: str) -> None:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        done = subprocess.run(
            [str(python), "-m", "pip", *args],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RealAgentError(f"pip {args[0]} took over {BUILD_TIMEOUT:g} s") from error
    if done.returncode != 0:
        raise RealAgentError(f"pip {' '.join(args[:3])} failed: {done.stderr.strip()[-2000:]}")


def _build(requirements: Path, house: Path, tag: str) -> None:
    builder = CACHE / f"wheel-builder-py{tag}"
    if not (builder / "bin" / "python").is_file():
        subprocess.run([str(AGENT_PYTHON), "-m", "venv", str(builder)], check=True)
        _pip(builder / "bin" / "python", "install", "-q", "--upgrade", *BASE_PACKAGES)
    partial = Path(tempfile.mkdtemp(prefix=house.name + ".", dir=house.parent))
    try:
        _pip(
            builder / "bin" / "python",
            "wheel",
            "-q",
            "-w",
            str(partial),
            "-r",
            str(requirements),
            *BASE_PACKAGES,
        )
        (partial / ".complete").write_text(requirements.read_text())
        shutil.rmtree(house, ignore_errors=True)
        partial.rename(house)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def golden_env(house: Path, requirements: Path) -> Path:
    """A venv of AGENT_PYTHON with the agent's requirements (from ``house``); made once."""
    env = CACHE / "real-agent-env" / house.name
    if (env / ".complete").is_file():
        return env
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (env / ".complete").is_file():
            shutil.rmtree(env, ignore_errors=True)
            subprocess.run([str(AGENT_PYTHON), "-m", "venv", str(env)], check=True)
            python = env / "bin" / "python"
            offline = ("--no-index", "--find-links", str(house))
            _pip(python, "install", "-q", *offline, "--upgrade", *BASE_PACKAGES)
            _pip(python, "install", "-q", *offline, "-r", str(requirements))
            (env / ".complete").write_text(requirements.read_text())
    return env


def clone_env(golden: Path, target: Path, user: str) -> None:
    """Give ``user`` a venv at ``target`` like the golden one, its absolute paths rewritten.

    Files are hard links to the golden venv's (read-only to the user, and
    pip only ever replaces or adds files, never writes into one); the
    directories are the user's, so pip can install and uninstall there. The
    few files naming the venv's path are written anew.
    """
    done = subprocess.run(["cp", "-al", str(golden), str(target)], capture_output=True)
    if done.returncode != 0:  # another file system: a plain copy
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["cp", "-a", str(golden), str(target)], check=True)
    (target / ".complete").unlink()
    old, new = str(golden).encode(), str(target).encode()
    for path in [*(target / "bin").iterdir(), target / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old in data:
            mode = path.stat().st_mode
            path.unlink()  # never write through a hard link into the golden venv
            path.write_bytes(data.replace(old, new))
            path.chmod(mode)
    entry = pwd.getpwnam(user)
    for directory, _dirs, files in os.walk(target):
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        for name in files:
            if (Path(directory) / name).stat().st_nlink == 1:  # not shared: the user's own
                os.lchown(Path(directory) / name, entry.pw_uid, entry.pw_gid)


def share(house: Path, target: Path) -> Path:
    """A copy of ``house`` at ``target`` that any user can read (hard links when possible)."""
    target.mkdir(mode=0o755, parents=True)
    for wheel in house.glob("*.whl"):
        try:
            os.link(wheel, target / wheel.name)
        except OSError:
            shutil.copy2(wheel, target / wheel.name)
        (target / wheel.name).chmod(0o644)
    return target
