"""A host's agent directory, laid out like the real agent's: ``repo/``, ``env/bin/``, config.

``env/bin/python`` wraps the fleet's own interpreter (a symlink would lose
the virtualenv), ``env/bin/agent`` runs the CLI of whatever is checked out,
``env/bin/pip`` is the stand-in of ``pipstub.py``. ``config.json`` sits
outside the repo so a checkout never touches the password or ports.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from agent_update.testing.upstream import git

PIP_STUB = Path(__file__).with_name("pipstub.py")


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


def create(agent_dir: Path, template: Path, config: dict[str, object]) -> None:
    """Copy the template clone to ``<agent_dir>/repo``; write env/bin and config.json."""
    agent_dir.mkdir(parents=True, exist_ok=True)
    repo = agent_dir / "repo"
    shutil.copytree(template, repo, symlinks=True)
    env_bin = agent_dir / "env" / "bin"
    env_bin.mkdir(parents=True, exist_ok=True)
    python = shlex.quote(sys.executable)
    _script(env_bin / "python", f'#!/bin/sh\nexec {python} "$@"\n')
    agent = f"{shlex.quote(str(env_bin / 'python'))} {shlex.quote(str(repo / 'testagent.py'))}"
    _script(env_bin / "agent", f'#!/bin/sh\nexec {agent} "$@"\n')
    _script(env_bin / "pip", f"#!{sys.executable}\n" + PIP_STUB.read_text())
    (agent_dir / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (agent_dir / "config.json").chmod(0o600)


def checkout(agent_dir: Path, commit: str) -> None:
    """What the update command does to the repo, without the network or SSH."""
    repo = agent_dir / "repo"
    git(repo, "fetch", "-q", "upstream")  # commits added after start
    git(repo, "checkout", "-q", "--force", commit)
    git(repo, "reset", "-q", "--hard", commit)
    git(repo, "clean", "-q", "-fd")


def checked_out(agent_dir: Path) -> str:
    return git(agent_dir / "repo", "rev-parse", "HEAD")
