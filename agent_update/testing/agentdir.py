"""A host's agent directory, laid out like the real agent's: ``repo/``, ``env/bin/``, config.

``env/bin/python`` wraps an interpreter the agent's user can run (the
fleet's own, or the system's ``python3`` when the agent runs as its own
user: the test agent needs only the standard library), ``env/bin/agent``
runs the CLI of whatever is checked out, ``env/bin/pip`` is the stand-in of
``pipstub.py`` and ``env/packages.txt`` what it calls installed.
``config.json`` sits outside the repo so a checkout never touches the
password or ports. With an ``owner``, git runs as that user: the checkout
is the agent user's, and git refuses one owned by someone else.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from agent_update.testing.upstream import git

PIP_STUB = Path(__file__).with_name("pipstub.py")
SYSTEM_PYTHON = Path("/usr/bin/python3")
ENV_PACKAGES = ("requests", "setuptools", "pip", "wheel")


def python_for(own_user: bool) -> str:
    """The interpreter of the agent's env: one its user can reach."""
    if own_user and SYSTEM_PYTHON.exists():
        return str(SYSTEM_PYTHON)
    return sys.executable


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def clone_template(template: Path, upstream: Path, base: str) -> None:
    """Clone ``upstream`` once (remote ``upstream``, branch master reset to ``base``).

    Hosts get copies of this clone: copying a small repo costs far less than
    twenty ``git clone`` runs at once.
    """
    git(
        template.parent,
        "clone",
        "-q",
        "--template=",
        "-o",
        "upstream",
        "-b",
        "master",
        str(upstream),
        str(template),
    )
    git(template, "reset", "-q", "--hard", base)


def create(
    agent_dir: Path, template: Path, config: dict[str, object], python: str = sys.executable
) -> None:
    """Copy the template clone to ``<agent_dir>/repo``; write env/bin and config.json."""
    agent_dir.mkdir(parents=True, exist_ok=True)
    repo = agent_dir / "repo"
    shutil.copytree(template, repo, symlinks=True)
    env_bin = agent_dir / "env" / "bin"
    env_bin.mkdir(parents=True, exist_ok=True)
    _script(env_bin / "python", f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
    agent = f"{shlex.quote(str(env_bin / 'python'))} {shlex.quote(str(repo / 'testagent.py'))}"
    _script(env_bin / "agent", f'#!/bin/sh\nexec {agent} "$@"\n')
    _script(env_bin / "pip", f"#!{python}\n" + PIP_STUB.read_text())
    (agent_dir / "env" / "packages.txt").write_text("\n".join(ENV_PACKAGES) + "\n")
    (agent_dir / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (agent_dir / "config.json").chmod(0o600)


def _git(agent_dir: Path, owner: str | None, *args: str) -> str:
    """git in the agent's repo, as its owner when one is named (we are root then)."""
    repo = agent_dir / "repo"
    if owner is None:
        return git(repo, *args)
    home = str(agent_dir.parent / "home")
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        user=owner,
        group=owner,
        extra_groups=[],
        env={"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def checkout(agent_dir: Path, commit: str, owner: str | None = None) -> None:
    """What the update command does to the repo, without the network or SSH."""
    _git(agent_dir, owner, "fetch", "-q", "upstream")  # commits added after start
    _git(agent_dir, owner, "checkout", "-q", "--force", commit)
    _git(agent_dir, owner, "reset", "-q", "--hard", commit)
    _git(agent_dir, owner, "clean", "-q", "-fd")


def checked_out(agent_dir: Path, owner: str | None = None) -> str:
    return _git(agent_dir, owner, "rev-parse", "HEAD")


def trust_upstream(home: Path, upstream: Path) -> None:
    """The agent user's git config: the root-owned upstream is safe to fetch from."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {upstream}\n")
