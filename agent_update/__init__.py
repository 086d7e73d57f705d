"""agent_update: roll an update of the server agent across a fleet."""

__version__ = "0.1.0"
