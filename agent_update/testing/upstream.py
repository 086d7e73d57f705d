"""The fleet's upstream: a local bare repo whose commits are versions of the test agent.

Every commit is a full working tree (``testagent.py``, ``behaviour.json``,
``requirements.txt``, ``setup.py``); only ``behaviour.json`` and the
requirements differ, so each commit misbehaves in one known way. All commits
are written by one ``git fast-import`` run: no work tree, no per-commit git
processes, which matters when twenty hosts start at once.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_update.testing.model import MASTER_MARKERS

TEMPLATE = Path(__file__).with_name("testagent.py")
REQUIREMENTS = "# the fleet's pip stand-in checks these against the fleet's Python\nrequests\n"
MISSING_REQUIREMENT = "agent-update-fleet-no-such-package==0.0.1"
SETUP_PY = (
    "from setuptools import setup\n\n"
    "setup(name='agent', version='0.0.0', py_modules=['testagent'])\n"
)

#: How each commit differs from a good one (keys of testagent.DEFAULT_BEHAVIOUR).
VARIANTS: dict[str, dict[str, Any]] = {
    "crash": {"web": "crash"},
    "install_fail": {"missing_requirement": True},
    "slow": {"web": "slow", "web_delay": 3.0},
    "unhealthy": {"worker": "exit"},
    "liar": {"update_exit": 1},
    "crashloop": {"web": "crashloop"},
    "dieloop": {"web": "dieloop", "crash_after": 3.0},
    "norestart": {"update_restarts": False},  # not a fleet commit: the soak adds it
}

_IDENT = "Loopback Fleet <fleet@localhost>"


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _data(text: str) -> str:
    return f"data {len(text.encode())}\n{text}\n"


def tree(marker: str, missing_requirement: bool = False, **behaviour: Any) -> dict[str, str]:
    """The files of one commit of the test agent."""
    requirements = REQUIREMENTS + (MISSING_REQUIREMENT + "\n" if missing_requirement else "")
    body = json.dumps({"marker": marker, **behaviour}, indent=1, sort_keys=True) + "\n"
    return {
        "testagent.py": TEMPLATE.read_text(),
        "setup.py": SETUP_PY,
        "requirements.txt": requirements,
        "behaviour.json": body,
    }


class Upstream:
    """The bare repo at ``<root>/upstream.git``; commits go in through fast-import."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"

    def create(self) -> dict[str, str]:
        """Create master (base … dieloop) and side (off base); return marker → sha."""
        git(self.bare.parent, "init", "-q", "--bare", "-b", "master", str(self.bare))
        plan = [("master", marker, None, VARIANTS.get(marker, {})) for marker in MASTER_MARKERS]
        plan.append(("side", "side", ":1", {}))  # mark 1 is base
        return self._import(plan)

    def add_commit(self, marker: str, branch: str = "master", **behaviour: Any) -> str:
        """Append a commit to ``branch`` (created from master's tip if new)."""
        ref = f"refs/heads/{branch}"
        exists = subprocess.run(
            ["git", "rev-parse", "-q", "--verify", ref], cwd=self.bare, capture_output=True
        )
        parent = f"{ref}^0" if exists.returncode == 0 else "refs/heads/master^0"
        return self._import([(branch, marker, parent, behaviour)])[marker]

    def _import(self, plan: list[tuple[str, str, str | None, dict[str, Any]]]) -> dict[str, str]:
        stamp = f"{int(time.time())} +0000"
        stream = []
        for mark, (branch, marker, parent, behaviour) in enumerate(plan, start=1):
            stream.append(f"commit refs/heads/{branch}\nmark :{mark}\n")
            stream.append(f"author {_IDENT} {stamp}\ncommitter {_IDENT} {stamp}\n")
            stream.append(_data(f"test agent: {marker}"))
            if parent:
                stream.append(f"from {parent}\n")
            stream.append("deleteall\n")
            for name, text in tree(marker, **behaviour).items():
                stream.append(f"M 100644 inline {name}\n" + _data(text))
        with tempfile.TemporaryDirectory(dir=self.bare) as scratch:
            marks = Path(scratch) / "marks"  # written via a lock file: read it by path
            git(
                self.bare,
                "-c",
                "fastimport.unpackLimit=1",  # one pack, not dozens of loose-object dirs to copy
                "fast-import",
                "--quiet",
                f"--export-marks={marks}",
                stdin="".join(stream),
            )
            shas = dict(line[1:].split() for line in marks.read_text().splitlines())
        return {marker: shas[str(mark)] for mark, (_, marker, _, _) in enumerate(plan, start=1)}
