"""Exit codes of `agent-update` and the one error type its commands raise.

Scripts branch on these, so they are part of the interface (docs/cli.md).
"""

from __future__ import annotations

from enum import IntEnum

from agent_update.rollout.model import TEST_MODE_PAUSE, Update, UpdateStatus


class Exit(IntEnum):
    OK = 0  # done; `run`: the update ended Success (or paused as asked)
    FAILED = 1  # could not be done: a server, git or the disk said no (message says why)
    USAGE = 2  # the command line, settings file or database is wrong: fix and retry
    ENDED_BADLY = 3  # `run`: ended Failure or Partial Success; `plan`: servers left unplanned
    NOT_FOUND = 4  # no update or server of that name
    REFUSED = 5  # the rules refuse this value or this action in this status
    STALLED = 6  # `tick`: a rollout stalled (no server ended for its stall time)
    STOPPED_SHORT = 7  # `run` & co.: Paused (not for test mode) or Aborted: not all done
    INTERRUPTED = 130  # Ctrl-C or SIGTERM


EXIT_HELP = """exit codes:
  0    done (run: the update ended Success, or test mode paused it as asked)
  1    failed: a server, git or the disk refused (the message says which);
       tick: a rollout could not be resumed (the others were)
  2    usage: the command line, settings file or database is wrong
  3    run: the update ended Failure or Partial Success; plan: some servers
       could not be planned (the update stays Draft, the table says why)
  4    not found: no update or server of that name
  5    refused: the rules refuse this value, or this action in the current status
  6    tick: a rollout stalled (no server ended for its stall time; nothing was done)
  7    run, resume, force-continue, status --watch: stopped short of done: Paused
       (by a wave gate or an operator) or Aborted; the message says why
  130  interrupted (Ctrl-C or SIGTERM)"""


def rollout_exit(update: Update) -> Exit:
    """How a rollout that settled answers a script: done, ended badly, or stopped short."""
    if update.status is UpdateStatus.SUCCESS:
        return Exit.OK
    if update.status in (UpdateStatus.FAILURE, UpdateStatus.PARTIAL_SUCCESS):
        return Exit.ENDED_BADLY
    if update.status is UpdateStatus.PAUSED and update.pause_reason.startswith(TEST_MODE_PAUSE):
        return Exit.OK  # test mode: "update N servers, then pause" is what was asked
    return Exit.STOPPED_SHORT


class CliError(Exception):
    """One line for stderr and the exit code that goes with it."""

    def __init__(self, message: str, code: Exit = Exit.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
