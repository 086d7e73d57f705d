"""The fleet's public data: what a test needs to reach one simulated server.

Kept apart from the machinery that starts the servers so that code under
test can take a ``FleetHost`` without importing subprocess plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass


class FleetError(RuntimeError):
    """The loopback fleet could not do what was asked; the text names host and log."""


@dataclass(frozen=True)
class FleetHost:
    """One simulated server as an orchestrator sees it: SSH and agent coordinates."""

    name: str  # "host2" for 127.0.0.2
    address: str  # "127.0.0.2"
    ssh_port: int
    ssh_user: str
    agent_port: int
    agent_url: str  # f"http://{address}:{agent_port}"
    agent_password: str
    agent_dir: str  # absolute path of <host>/agent
    agent_user: str  # runs the agent; the SSH user too (root may log in as well)


@dataclass(frozen=True)
class FleetCommits:
    """The upstream commits, each 40-hex; all on ``master`` except ``side``."""

    base: str  # every host starts here
    good: str
    good2: str
    crash: str  # web exits at once: BACKOFF, then FATAL
    install_fail: str  # requirements.txt names a package that does not exist
    slow: str  # web sleeps ~3 s before it listens
    unhealthy: str  # web fine, the worker exits at start
    liar: str  # good code, but `agent update` exits 1 after restarting
    crashloop: str  # web lives 1.5 s (> startsecs) then dies: new pid each time, never FATAL
    dieloop: str  # web serves (/ping, /version fine) for 3 s after each start, then dies
    side: str  # on branch `side` only: not reachable from master


#: Order of the commits on master, oldest first (``side`` branches off ``base``).
MASTER_MARKERS: tuple[str, ...] = (
    "base",
    "good",
    "good2",
    "crash",
    "install_fail",
    "slow",
    "unhealthy",
    "liar",
    "crashloop",
    "dieloop",
)
