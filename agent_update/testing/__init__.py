"""Test tooling shipped with the package: the loopback fleet of simulated servers.

fleet, host, model      the fleet and its hosts (127.0.0.N), their coordinates
sshd, sshkeys, supervise, users, ports, procs   each host's sshd, keys,
                        supervisord, Unix user, ports and processes
upstream, testagent, agentdir, pipstub, ctlshim the test agent, its commits
harness, pytest_fixtures                        wiring for tests and benchmarks
demo, transcript, __main__                      make demo, the docs sessions, by hand
realagent/              the real frappe/agent as loopback servers
private_services, desk_site, desk_rpc   a Frappe site of a test's own: private
                        MariaDB and Redis, RQ workers, calls into the site
desk_check              one rollout through the desk under its faults (CI)
soak/                   the fault soak (its desk door: soak/desk_door.py)
"""

from agent_update.testing.fleet import Fleet
from agent_update.testing.model import FleetCommits, FleetError, FleetHost

__all__ = ["Fleet", "FleetCommits", "FleetError", "FleetHost"]
