"""The app's log: ``logs/agent_update.log``, with the engine's own lines in it.

Frappe's ``frappe.logger(module)`` writes at ERROR in production (WARNING
under ``bench start``), so the INFO line of each step a server goes through
would never be written; and the engine logs through Python's ``logging``
under the ``agent_update`` package, which no Frappe handler listens to (in
a worker, only its warnings reached the worker's stderr). ``app_log`` sets
the level (site config ``agent_update_log_level``, INFO by default) and
hands the bench-level file handler to the engine's package logger once per
process, so one file holds the whole trail of a rollout: every stored step
(``AU-… #2 s2: Running/command -> …``), each lease taken over, each
renewal that failed, each exception caught and logged.
"""

from __future__ import annotations

import logging

import frappe

LOGGER = "agent_update"
LEVEL_KEY = "agent_update_log_level"
DEFAULT_LEVEL = "INFO"
_engine = logging.getLogger(LOGGER)  # the engine's modules log under agent_update.*


def level() -> int:
    """The site's ``agent_update_log_level`` (a name such as INFO or DEBUG), else INFO."""
    wanted = str(frappe.conf.get(LEVEL_KEY) or DEFAULT_LEVEL).upper()
    found = logging.getLevelName(wanted)
    if not isinstance(found, int):
        frappe.logger(LOGGER).warning(f"{LEVEL_KEY}: {wanted!r} is not a log level; using INFO")
        return logging.INFO
    return found


def app_log() -> logging.Logger:
    """Frappe's logger for the app at the configured level; the engine writes to it too."""
    logger = frappe.logger(LOGGER)
    wanted = level()
    logger.setLevel(wanted)
    _engine.setLevel(wanted)
    if not _engine.handlers and logger.handlers:
        # The first handler is the bench's logs/agent_update.log (the others are
        # per site): one handler, so a worker serving many sites writes each line once.
        _engine.addHandler(logger.handlers[0])
        _engine.propagate = False
    return logger
