"""Reading, over SSH, when a server's checkout last moved and when its programs started.

One command prints the newest HEAD reflog entries, HEAD's mtime, the
supervisor status and the server's clock; files are read directly (no git
process, so no "dubious ownership" when the SSH user is not the owner).
Parsing is pure; the connector runs the command.
"""

from __future__ import annotations

import re
import shlex

from agent_update.remote import supervisor
from agent_update.remote.script import render_status_command
from agent_update.rollout.refs import validate_agent_dir
from agent_update.rollout.running import RunningObs

_UPTIME = re.compile(r"\buptime (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")
_REFLOG_TIME = re.compile(r"> (\d+) [+-]\d{4}\t")
_REFLOG_MOVE = re.compile(r"^([0-9a-f]{40}) ([0-9a-f]{40}) ")
_MARK = "@agent-update"
REFLOG_LINES = 50  # newest HEAD moves read: what ran before the last few updates


def command(agent_dir: str, status_command: str) -> str:
    """The shell command; ``agent_dir`` validated and quoted, status command checked."""
    git_dir = shlex.quote(validate_agent_dir(agent_dir) + "/repo/.git")
    status = render_status_command(status_command)
    return (
        f'echo "{_MARK} head $(stat -c %Y {git_dir}/HEAD 2>/dev/null)"; '
        f"tail -n {REFLOG_LINES} {git_dir}/logs/HEAD 2>/dev/null | sed 's/^/{_MARK} reflog /'; "
        f'{status}; echo "{_MARK} now $(date +%s)"'
    )


def uptime_seconds(description: str) -> float | None:
    """``pid 12, uptime 1 day, 2:03:04`` -> seconds; None when absent."""
    match = _UPTIME.search(description)
    if not match:
        return None
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def parse(output: str) -> RunningObs:
    """The command's output -> RunningObs (missing pieces stay None)."""
    marks: dict[str, str] = {}
    moves: list[tuple[float, str, str]] = []
    status_lines = []
    for line in output.splitlines():
        if line.startswith(_MARK + " "):
            key, _, value = line[len(_MARK) + 1 :].partition(" ")
            marks[key] = value
            if key == "reflog" and (move := _reflog_move(value)):
                moves.append(move)
        else:
            status_lines.append(line)
    times = [_int(marks.get("head", ""))]
    reflog = _REFLOG_TIME.search(marks.get("reflog", "") + "\t")
    times.append(int(reflog.group(1)) if reflog else None)
    known = [t for t in times if t is not None]
    states = supervisor.agent_programs(supervisor.parse_status("\n".join(status_lines)))
    programs = {
        name: (st.state, uptime_seconds(st.description) if st.running else None)
        for name, st in states.items()
    }
    error = ""
    if not programs:
        text = " ".join(line.strip() for line in status_lines if line.strip())
        error = text[-300:] if text else ""
    now = _int(marks.get("now", ""))
    return RunningObs(
        now=float(now) if now is not None else None,
        head_moved_at=float(max(known)) if known else None,
        programs=programs,
        error=error,
        reflog=tuple(moves),
    )


def _reflog_move(line: str) -> tuple[float, str, str] | None:
    """``<old> <new> name <email> <time> <tz>\t<message>`` -> (time, old, new)."""
    move, when = _REFLOG_MOVE.match(line), _REFLOG_TIME.search(line + "\t")
    if not move or not when:
        return None
    return float(when.group(1)), move.group(1), move.group(2)


def status_text(output: str) -> str:
    """The status command's part of the output (the marked lines left out)."""
    return "\n".join(line for line in output.splitlines() if not line.startswith(_MARK + " "))
