"""A cache of the real agent's wheels, so a warm setup installs without network or builds.

The agent pins ~50 packages, some only as sdists; building and downloading
them is most of a cold setup. They are built once per (requirements, Python)
into ``~/.cache/agent_update/wheels/<key>/`` and every host's pip then runs
with ``no-index`` against a copy the agent users can read.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
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
