"""Reading ``supervisorctl status`` to prove programs are up and did restart.

The agent's ``/version`` reports what is checked out, not what runs, and its
services carry no pids (DESIGN §8). Pids read over SSH before and after an
update are what show that the programs meant to restart really restarted.
The text is parsed, never the exit code: supervisorctl exits 3 when some
program is down, and 0 during BACKOFF. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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


def pids(states: Mapping[str, ProgramState]) -> dict[str, int | None]:
    """``{program: pid}``, the record kept before an update to compare after."""
    return {name: st.pid for name, st in states.items()}


def all_running(states: Mapping[str, ProgramState], group: str = AGENT_GROUP) -> tuple[bool, str]:
    """Whether every agent program is RUNNING, with a reason when not.

    The agent's own update silently restarts nothing when one program is
    down, so this is checked before touching a server.
    """
    programs = agent_programs(states, group)
    if not programs:
        return False, f"no '{group}:' programs found in supervisorctl status"
    down = [f"{st.name} is {st.state}" for st in programs.values() if not st.running]
    down += [f"{st.name} has no pid" for st in programs.values() if st.running and not st.pid]
    if down:
        return False, "not every agent program is running: " + ", ".join(sorted(down))
    return True, f"{len(programs)} agent programs running"


def programs_for_restart(
    restart_web: bool,
    restart_rq: bool,
    restart_redis: bool,
    states: Mapping[str, ProgramState],
    group: str = AGENT_GROUP,
) -> list[str]:
    """Programs the agent's update is expected to restart, in a stable order.

    Web and Redis have fixed names; workers are whatever the server runs.
    """
    wanted: list[str] = []
    if restart_web:
        wanted.append(f"{group}:web")
    if restart_rq:
        prefixes = (f"{group}:worker-", f"{group}:worker_backup-")
        wanted += sorted(name for name in states if name.startswith(prefixes))
    if restart_redis:
        wanted.append(f"{group}:redis")
    return wanted


def restarted(
    before: Mapping[str, int | None],
    after: Mapping[str, ProgramState],
    programs: Iterable[str],
) -> tuple[bool, str]:
    """Whether each program now RUNS with a pid other than the one it had before."""
    problems: list[str] = []
    names = list(programs)
    for name in names:
        state = after.get(name)
        if state is None:
            problems.append(f"{name} is missing")
        elif not state.running or state.pid is None:
            problems.append(f"{name} is {state.state}")
        elif before.get(name) is not None and state.pid == before[name]:
            problems.append(f"{name} kept pid {state.pid} (not restarted)")
    if problems:
        return False, "; ".join(problems)
    return True, f"restarted: {', '.join(names)}" if names else "nothing to restart"
