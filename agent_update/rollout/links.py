"""What the runner talks to: one server's I/O, the hooks around a row, the launcher.

Protocols only (and the stand-ins for a server gone from the registry), so
the engine's shells and the Frappe layer can implement them without the runner.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent_update.rollout.model import Row, Server, Update
from agent_update.rollout.observations import CommandObs, PrecheckObs, ProbeObs


class ServerLink(Protocol):
    """One server's I/O during one row: SSH commands and agent probes."""

    def precheck(self) -> PrecheckObs: ...
    def run_command(self, commit: str, timeout: float) -> CommandObs: ...
    def probe(self) -> ProbeObs: ...
    def close(self) -> None: ...


class Connector(Protocol):
    def open(self, server: Server, update: Update) -> ServerLink: ...


class RowHooks(Protocol):
    """Around each server: e.g. halt and release the agent's job queue."""

    def before_update(self, update: Update, row: Row) -> None: ...
    def after_update(self, update: Update, row: Row) -> None: ...


class NoHooks:
    def before_update(self, update: Update, row: Row) -> None:
        return None

    def after_update(self, update: Update, row: Row) -> None:
        return None


Launcher = Callable[[str, int, str], None]  # (update name, row idx, lease owner)
Listener = Callable[[str, "Row | None", "Update | None"], None]


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class MissingServer:
    """A link for a row whose server left the registry: every step fails."""

    name: str

    def precheck(self) -> PrecheckObs:
        return PrecheckObs(error=f"{self.name} is not in the server registry")

    def run_command(self, commit: str, timeout: float) -> CommandObs:
        return CommandObs(exit_code=None, error="server not in the registry")

    def probe(self) -> ProbeObs:
        return ProbeObs(error="server not in the registry")

    def close(self) -> None:
        return None


def skip_reason(name: str, server: Server | None) -> str:
    """Why a row's server is not to be touched at its turn ("" to go on).

    Read from the registry right before the precheck, so a server opted out,
    archived, broken, renamed or deleted since Build Plan is Skipped with
    nothing run on it.
    """
    if server is None:
        return (
            f"{name} is no longer in the server registry (renamed or deleted since "
            "Build Plan); nothing was run"
        )
    return server.opt_out_reason
