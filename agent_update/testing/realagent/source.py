"""The real agent's source and the upstream the harness builds from it.

The source is frappe/agent as a tarball (top folder ``agent/``): by default
``../shared/peers/frappe-agent.tar.gz`` beside the project, or a path or URL
in ``AGENT_UPDATE_REAL_AGENT``. The upstream is a local bare repo: commit A
is the tarball as shipped; every other commit is A's tree plus one change,
so each misbehaves in exactly one known way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from agent_update.testing.upstream import git

ENV_VAR = "AGENT_UPDATE_REAL_AGENT"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TARBALL = PROJECT_ROOT.parent / "shared" / "peers" / "frappe-agent.tar.gz"
CACHE = Path.home() / ".cache" / "agent_update"
SLOW_SECONDS = 6  # the slow commit's import delay: well inside any startup timeout
_IDENT = ["-c", "user.name=Real Agent Harness", "-c", "user.email=harness@localhost"]


class RealAgentError(RuntimeError):
    """The real-agent harness could not do what was asked; the text says why and where."""


@dataclass(frozen=True)
class RealCommits:
    """The upstream's commits (40 hex each), all on ``master`` in this order."""

    a: str  # the tarball as shipped
    b: str  # a harmless change
    crash: str  # agent.web raises at import: web cycles STARTING <-> RUNNING, never FATAL
    norestart: str  # `agent update` restarts nothing and exits 0
    fatal: str  # the supervisor template makes web exit at once: FATAL
    slow: str  # agent.web sleeps SLOW_SECONDS at import, then runs fine
    hang: str  # `agent update` hangs (to make the update command time out)
    dieloop: str  # agent.web SIGTERMs its gunicorn master 3 s after import: healthy, then dead


def locate() -> tuple[Path | None, str]:
    """(tarball path, "") or (None, why there is none): the one skip reason tests print."""
    given = os.environ.get(ENV_VAR, "").strip()
    if not given:
        if DEFAULT_TARBALL.is_file():
            return DEFAULT_TARBALL, ""
        return None, f"no {DEFAULT_TARBALL} and {ENV_VAR} is not set"
    if given.startswith(("http://", "https://")):
        return _download(given), ""
    path = Path(given).expanduser()
    if not path.is_file():
        return None, f"{ENV_VAR}={given!r} is not a file"
    return path.resolve(), ""


def _download(url: str) -> Path:
    target = CACHE / "real-agent" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".tar.gz")
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        answer = requests.get(url, timeout=60)
        answer.raise_for_status()
    except requests.RequestException as error:
        raise RealAgentError(f"{ENV_VAR}: cannot download {url}: {error}") from error
    partial = target.with_suffix(".part")
    partial.write_bytes(answer.content)
    partial.replace(target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` once; fail loudly when the agent's source no longer has it."""
    text = path.read_text()
    if old not in text:
        raise RealAgentError(f"{path}: expected text {old[:60]!r} not found (agent changed?)")
    path.write_text(text.replace(old, new, 1))


def _harmless(tree: Path) -> None:
    with open(tree / "agent" / "__init__.py", "a") as out:
        out.write("\n# agent_update test upstream: a harmless change (commit B)\n")


def _crash(tree: Path) -> None:
    with open(tree / "agent" / "web.py", "a") as out:
        out.write('\nraise RuntimeError("agent_update test upstream: crash at import")\n')


def _norestart(tree: Path) -> None:
    _edit(
        tree / "agent" / "cli.py",
        "    Server().update_agent_cli(",
        '    print("agent_update test upstream: update restarts nothing")\n'
        "    return\n    Server().update_agent_cli(",
    )


def _fatal(tree: Path) -> None:
    template = tree / "agent" / "templates" / "agent" / "supervisor.conf.jinja2"
    text = template.read_text()
    start = text.index("[program:web]\ncommand=")
    end = text.index("\n", start + len("[program:web]\n"))
    template.write_text(text[:start] + '[program:web]\ncommand=bash -c "exit 3"' + text[end:])


def _slow(tree: Path) -> None:
    web = tree / "agent" / "web.py"
    text = web.read_text()
    future = "from __future__ import annotations\n"
    at = text.index(future) + len(future) if future in text else 0  # must stay first
    delay = f"import time as _slow_time\n\n_slow_time.sleep({SLOW_SECONDS})  # slow start\n"
    web.write_text(text[:at] + delay + text[at:])


def _dieloop(tree: Path) -> None:
    """A web that answers, then dies ~3 s after each start, forever (never FATAL).

    A daemon thread in each gunicorn worker sends SIGTERM to its parent, the
    master; supervisor restarts the master, whose workers do it again.
    """
    web = tree / "agent" / "web.py"
    text = web.read_text()
    future = "from __future__ import annotations\n"
    at = text.index(future) + len(future) if future in text else 0  # must stay first
    killer = (
        "import os as _die_os\n"
        "import signal as _die_signal\n"
        "import threading as _die_threading\n"
        "import time as _die_time\n\n\n"
        "def _die_later():  # agent_update test upstream: the master dies 3 s after start\n"
        "    _die_time.sleep(3)\n"
        "    _die_os.kill(_die_os.getppid(), _die_signal.SIGTERM)\n\n\n"
        "_die_threading.Thread(target=_die_later, daemon=True).start()\n"
    )
    web.write_text(text[:at] + killer + text[at:])


def _hang(tree: Path) -> None:
    _edit(
        tree / "agent" / "cli.py",
        "    Server().update_agent_cli(",
        "    import time\n\n    time.sleep(3600)\n    Server().update_agent_cli(",
    )


VARIANTS: dict[str, Callable[[Path], None]] = {
    "b": _harmless,
    "crash": _crash,
    "norestart": _norestart,
    "fatal": _fatal,
    "slow": _slow,
    "hang": _hang,
    "dieloop": _dieloop,
}


def build_upstream(tarball: Path, root: Path) -> tuple[Path, RealCommits]:
    """Create ``root/upstream.git`` (branch master: A, then each variant of A)."""
    work = root / "upstream-work"
    bare = root / "upstream.git"
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        with tarfile.open(tarball) as archive:
            archive.extractall(scratch, filter="data")
        top = Path(scratch) / "agent"
        if not (top / "agent" / "web.py").is_file():
            raise RealAgentError(f"{tarball}: no agent/agent/web.py (not frappe/agent?)")
        shutil.move(str(top), work)
    git(work, "init", "-q", "-b", "master")
    git(work, "add", "-A")
    git(work, *_IDENT, "commit", "-q", "-m", "import frappe/agent")
    # The agent's /version runs `git show`: a root commit of the whole tree would
    # make every probe print megabytes. A is an empty commit on top of the import.
    git(work, *_IDENT, "commit", "-q", "--allow-empty", "-m", "A: frappe/agent as shipped")
    shas = {"a": git(work, "rev-parse", "HEAD")}
    for name, change in VARIANTS.items():
        git(work, "read-tree", "--reset", "-u", shas["a"])  # A's files, HEAD stays the tip
        change(work)
        git(work, "add", "-A")
        git(work, *_IDENT, "commit", "-q", "-m", f"{name}: agent_update test variant")
        shas[name] = git(work, "rev-parse", "HEAD")
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    shutil.rmtree(work)
    return bare, RealCommits(**shas)
