"""The docs' command-line sessions, run for real and checked against the docs.

A session in a doc is a fenced block right after a marker line
``<!-- transcript: NAME -->``: ``$ command`` lines, each followed by what
the command printed (stdout and stderr as a terminal interleaves them) and
``[exit N]`` when it did not exit 0. The sessions themselves are defined
here (``SESSIONS``) and run on a loopback fleet; ``check`` compares a run
with the doc after masking what differs from one run to the next (update
names, commits, ports, paths, passwords, pids, times), and ``--write``
puts a fresh run into the doc:

    python -m agent_update.testing.transcript --write        # docs/cli.md, docs/waves.md
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent_update.testing.fleet import Fleet
from agent_update.testing.harness import PASSWORD_VAR, server_add_args, write_cli_settings

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- transcript: {name} -->"
UPDATE_NAME = re.compile(r"\bAU-[0-9a-f]{10}\b")


@dataclass
class Step:
    command: str
    output: str
    code: int = 0

    def render(self) -> str:
        text = f"$ {self.command}\n{self.output}"
        if text and not text.endswith("\n"):
            text += "\n"
        return text + (f"[exit {self.code}]\n" if self.code else "")


@dataclass
class Session:
    """Runs commands one by one in a folder, like a shell a person types into."""

    fleet: Fleet
    workdir: Path
    steps: list[Step] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # update names, as printed

    def __post_init__(self) -> None:
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",  # stdout and stderr interleave as on a terminal
            "COLUMNS": "200",
        }
        for key in ("AGENT_UPDATE_DB", "AGENT_UPDATE_SETTINGS", "AGENT_UPDATE_LOG"):
            self.env.pop(key, None)

    def run(
        self, command: str, shown: str | None = None, env: dict[str, str] | None = None
    ) -> Step:
        """Run ``command`` (shown in the doc as ``shown``); remember the update names it printed."""
        if command.startswith("export "):
            for pair in shlex.split(command)[1:]:
                key, _, value = pair.partition("=")
                self.env[key] = value
            done = subprocess.CompletedProcess(command, 0, "", None)
        else:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.workdir,
                env={**self.env, **(env or {})},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=300,
                check=False,
            )
        for found in UPDATE_NAME.findall(done.stdout):
            if found not in self.names:
                self.names.append(found)
        step = Step(shown or command, done.stdout, done.returncode)
        self.steps.append(step)
        return step

    def update(self, number: int) -> str:
        """The ``number``-th update name this session saw (1-based)."""
        return self.names[number - 1]

    def register(self, hosts: int) -> None:
        """init, then server-add for the first ``hosts`` hosts (passwords from the variable)."""
        write_cli_settings(self.fleet, self.workdir / "settings.json")
        self.run("export AGENT_UPDATE_DB=fleet.db AGENT_UPDATE_SETTINGS=settings.json")
        self.run("agent-update init")
        for host in self.fleet.hosts[:hosts]:
            argv = shlex.join(["agent-update", *server_add_args(host)])
            self.run(argv, env={PASSWORD_VAR: host.agent_password})


TIMEOUTS = "--startup-timeout 15 --command-timeout 60"


def cli_session(s: Session) -> None:
    """docs/cli.md: registry, a rollout, history, undo, and three refusals."""
    commits = s.fleet.commits
    s.register(3)
    host4 = s.fleet.hosts[2].name
    s.run(f"agent-update server-set {host4} --opt-out")
    s.run("agent-update server-add HOST2 --host 10.0.0.9 --agent-url http://10.0.0.9/agent")
    s.run("agent-update server-list")
    s.run(f"agent-update create --commit {commits.good} --lanes 2 {TIMEOUTS}")
    first = s.update(1)
    s.run(f"agent-update run {first}")
    s.run(f"agent-update plan {first}")
    s.run(f"agent-update run {first} --no-progress")
    s.run(f"agent-update server-set {host4} --no-opt-out")
    s.run(f"agent-update create --commit {commits.good2} {TIMEOUTS}")
    second = s.update(2)
    s.run(f"agent-update plan {second}")
    s.run(f"agent-update run {second} --no-progress")
    s.run(f"agent-update history {s.fleet.hosts[0].name}")
    s.run(f"agent-update undo {second}")
    s.run(f"agent-update run {s.update(3)} --no-progress")
    s.run("agent-update list")
    s.run(
        f"agent-update status {second} --json | python3 -c 'import json, sys; "
        'd = json.load(sys.stdin); print(d["status"], d["counts"], '
        '[r["reported_commit"][:8] for r in d["rows"]])\''
    )
    s.run("agent-update create --test-mode -1")
    s.run("agent-update create --waves '5, 1'")
    s.run("agent-update status AU-nope")
    s.run(f"agent-update --db fleet.bd status {second}")


def waves_session(s: Session) -> None:
    """docs/waves.md: a wave gate that pauses on a broken commit, then Abort."""
    commits = s.fleet.commits
    s.register(3)
    s.run(
        f"agent-update create --commit {commits.install_fail} --waves '1, 50%' --lanes 2 "
        f"--wave-success-threshold 100 {TIMEOUTS}"
    )
    name = s.update(1)
    s.run(f"agent-update plan {name}")
    s.run(f"agent-update run {name} --no-progress")
    s.run(f"agent-update abort {name} --reason 'bad commit' --no-progress")
    s.run(f"agent-update resume {name}")


SESSIONS: dict[str, tuple[str, Callable[[Session], None]]] = {
    "cli": ("docs/cli.md", cli_session),
    "waves": ("docs/waves.md", waves_session),
}


# ------------------------------------------------------------------ the docs
def block(markdown: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the body of the fenced block after NAME's marker."""
    marker = MARKER.format(name=name)
    at = markdown.find(marker)
    if at < 0:
        raise ValueError(f"no {marker} in the document")
    opening = markdown.index("```", at)
    start = markdown.index("\n", opening) + 1
    end = markdown.index("```", start)
    return start, end


def rendered(steps: list[Step], passwords: list[str]) -> str:
    text = "\n".join(step.render() for step in steps)
    for secret in passwords:
        text = text.replace(secret, "…")
    return text


class Masks:
    """What differs between two runs of one session, replaced by stable tokens.

    Hex tokens are keyed by their first 8 characters (the tables print 8 or 12,
    the commands 40) and numbered in order of first appearance, so two runs
    of one session mask to the same text whatever their commits and names.
    """

    RULES: list[tuple[re.Pattern[str], str]] = [
        (re.compile(r"/tmp/[\w.-]+"), "<tmp>"),  # noqa: S108 (a pattern, not a file)
        (re.compile(rf"{PASSWORD_VAR}=\S+"), f"{PASSWORD_VAR}=…"),
        (re.compile(r"(127\.0\.0\.\d+):\d+"), r"\1:<port>"),
        (re.compile(r"--ssh-port \d+"), "--ssh-port <port>"),
        (re.compile(r"\bfl[0-9a-f]{6}h\d+\b"), "<user>"),
        (re.compile(r"\bpid \d+"), "pid <pid>"),
        (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
        (re.compile(r"\b\d+:\d\d\b"), "<m:ss>"),
        (re.compile(r"\b\d+(\.\d+)? ?s\b"), "<n> s"),
    ]
    HEX = re.compile(r"\b[0-9a-f]{8}(?:[0-9a-f]{4}|[0-9a-f]{32})?\b")

    def __call__(self, text: str) -> str:
        names: dict[str, str] = {}
        text = UPDATE_NAME.sub(lambda m: names.setdefault(m[0], f"AU-<{len(names) + 1}>"), text)
        for pattern, replacement in self.RULES:
            text = pattern.sub(replacement, text)
        commits: dict[str, str] = {}
        text = self.HEX.sub(lambda m: commits.setdefault(m[0][:8], f"<c{len(commits) + 1}>"), text)
        return "\n".join(line.rstrip() for line in text.splitlines()).strip() + "\n"


def run_session(name: str, fleet: Fleet, workdir: Path) -> str:
    """One fresh run of session ``name`` on ``fleet`` (reset to base first), as doc text."""
    fleet.reset()
    session = Session(fleet, workdir)
    SESSIONS[name][1](session)
    return rendered(session.steps, [h.agent_password for h in fleet.hosts])


def difference(name: str, live: str) -> str:
    """ "" when the doc's session masks to the same text as ``live``, else a diff."""
    path = ROOT / SESSIONS[name][0]
    doc = path.read_text(encoding="utf-8")
    start, end = block(doc, name)
    masks = Masks()
    want, got = masks(doc[start:end]), masks(live)
    if want == got:
        return ""
    diff = difflib.unified_diff(
        want.splitlines(),
        got.splitlines(),
        f"{path.name} (masked)",
        "this run (masked)",
        lineterm="",
    )
    return "\n".join(diff)


def write(name: str, live: str) -> Path:
    path = ROOT / SESSIONS[name][0]
    doc = path.read_text(encoding="utf-8")
    start, end = block(doc, name)
    path.write_text(doc[:start] + live + doc[end:], encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_update.testing.transcript")
    parser.add_argument("--write", action="store_true", help="put a fresh run into the docs")
    parser.add_argument("names", nargs="*", default=list(SESSIONS), help="sessions to run")
    args = parser.parse_args(argv)
    status = 0
    with Fleet(3) as fleet, tempfile.TemporaryDirectory(prefix="transcript-") as tmp:
        for name in args.names:
            workdir = Path(tmp) / name
            workdir.mkdir()
            live = run_session(name, fleet, workdir)
            if args.write:
                print(f"{write(name, live)}: session {name} written")
                continue
            diff = difference(name, live)
            print(f"session {name}: " + ("matches the doc" if not diff else f"differs\n{diff}"))
            status = status or (1 if diff else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
