"""Reading ``supervisorctl status`` to prove programs are up and did restart.

The agent's ``/version`` reports what is checked out, not what runs, and its
services carry no pids (docs/design.md §9). Pids read over SSH before and after an
update are what show that the programs meant to restart really restarted.
The text is parsed, never the exit code: supervisorctl exits 3 when some
program is down, and 0 during BACKOFF. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

AGENT_GROUP = "agent"
STATES = frozenset(
    {"STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN"}
)
_LINE = re.compile(r"^(?P<name>\S+)\s+(?P<state>[A-Z]+)\b[ \t]*(?P<description>.*)$")
_PID = re.compile(r"\bpid (\d+)")


@dataclass(frozen=True)
class ProgramState:
    name: str  # "group:program", or "program" outside a group
    state: str  # one of STATES
    pid: int | None
    description: str

    @property
    def running(self) -> bool:
        return self.state == "RUNNING"


def parse_status(output: str) -> dict[str, ProgramState]:
    """Programs found in ``supervisorctl status`` output; other lines ignored."""
    states: dict[str, ProgramState] = {}
    for raw in output.splitlines():
        match = _LINE.match(raw.strip())
        if not match or match.group("state") not in STATES:
            continue
        description = match.group("description").strip()
        pid_match = _PID.search(description) if match.group("state") == "RUNNING" else None
        name = match.group("name")
        states[name] = ProgramState(
            name=name,
            state=match.group("state"),
            pid=int(pid_match.group(1)) if pid_match else None,
            description=description,
        )
    return states


def agent_programs(
    states: Mapping[str, ProgramState], group: str = AGENT_GROUP
) -> dict[str, ProgramState]:
    """Only the programs of the agent's supervisor group."""
    prefix = f"{group}:"
    return {name: st for name, st in states.items() if name.startswith(prefix)}
