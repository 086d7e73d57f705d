"""What a runner saw on a server: the inputs of the pure decisions.

The shells produce these; the machine consumes them. Program states are
plain ``{name: (state, pid)}`` maps so the core needs nothing from the shells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_update.rollout.running import RunningObs

Programs = dict[str, tuple[str, "int | None"]]


@dataclass(frozen=True)
class PrecheckObs:
    """Before changing anything: opt-out, program states and pids, commit."""

    opted_out: bool = False
    skip_reason: str = ""  # why, when opted out (the registry's words)
    error: str = ""
    programs: Programs = field(default_factory=dict)
    commit: str | None = None
    agent_error: str = ""  # /version did not answer: fatal, except to a repair
    # HEAD's moves and program uptimes: which commit the programs run (rollback target)
    running: RunningObs | None = None


@dataclass(frozen=True)
class CommandObs:
    """How the update command ended; only a hint, verification decides."""

    exit_code: int | None
    output: str = ""
    timed_out: bool = False
    error: str = ""
    duration: float = 0.0
    not_started: bool = False  # never began (could not be built, lock held): nothing changed


@dataclass(frozen=True)
class ProbeObs:
    """One health probe: /ping, /version and the program states over SSH."""

    pong: bool = False
    commit: str | None = None
    services_ok: bool = True
    services_reason: str = ""
    programs: Programs | None = None
    error: str = ""
    # Seconds each RUNNING program has been up (supervisor's uptime); None: not shown.
    uptimes: dict[str, float] | None = None
