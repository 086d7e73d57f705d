"""Test tooling shipped with the package: the loopback fleet of simulated servers."""

from agent_update.testing.fleet import Fleet
from agent_update.testing.model import FleetCommits, FleetError, FleetHost

__all__ = ["Fleet", "FleetCommits", "FleetError", "FleetHost"]
