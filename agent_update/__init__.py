"""agent_update: roll an update of the server agent across a fleet.

rollout/       the engine (no frappe): decisions, runner, stores
remote/        SSH, the agent's HTTP API, git, the update command
service.py     the buttons' operations over any store (CLI, tests, the app)
watchdog.py    the scheduled tick and stall alerts, mixed into Service
cli/           the ``agent-update`` command
testing/       the loopback fleet, the real agent as a peer, the soak, docs sessions
frappe_*.py, api.py, tasks.py, install.py, hooks.py, patches/, agent_update/
               the Frappe app: codec, store, service wiring, Press defaults,
               whitelisted API, RQ jobs, doctypes
"""

__version__ = "0.1.0"
