"""The REAL frappe/agent as a test peer: loopback servers set up as standard servers.

See docs/real-agent.md. ``RealAgentFleet`` stands the servers up and tears them
down; ``source.locate()`` says where the agent's tarball is, or why there is none.
"""

from agent_update.testing.realagent.fleet import RealAgentFleet, real_update
from agent_update.testing.realagent.host import RealHost
from agent_update.testing.realagent.source import RealAgentError, RealCommits, locate

__all__ = ["RealAgentError", "RealAgentFleet", "RealCommits", "RealHost", "locate", "real_update"]
