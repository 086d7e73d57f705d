"""``python -m agent_update.cli``: the same as the ``agent-update`` command."""

from agent_update.cli import main

main()
