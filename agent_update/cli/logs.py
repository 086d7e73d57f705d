"""The engine's log on stderr: ``--log-level`` (or ``AGENT_UPDATE_LOG``), WARNING by default.

WARNING shows only what went wrong inside the tool (an exception caught
and survived, a lost lease); INFO adds every step each server goes
through, with the update, row and server on each line; DEBUG adds polling
detail. Set only for the command's run, then put back, so a caller running
``cli.run`` in-process (tests) keeps its own logging.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator

ENV = "AGENT_UPDATE_LOG"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT = "WARNING"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ROOT = "agent_update"  # every engine module logs under it (logging.getLogger(__name__))


def level_name(text: str) -> str:
    """argparse type: a level name, any case; the error names the flag and the variable."""
    name = text.strip().upper()
    if name not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not one of {', '.join(LEVELS)} (the default comes from {ENV})"
        )
    return name


@contextlib.contextmanager
def to_stderr(level: str) -> Iterator[None]:
    """Engine records at ``level`` and above go to stderr while the block runs."""
    logger = logging.getLogger(ROOT)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    before = logger.level
    if logger.getEffectiveLevel() > handler.level:  # let the records reach the handler
        logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
