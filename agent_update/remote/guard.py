"""How a command runs on a server: as the agent user, locked, bounded, never orphaned.

The update command must run as the agent's own user (git refuses a checkout
owned by someone else: "dubious ownership"), so when the SSH user differs it
goes through ``sudo -n -u <agent user> -H`` (``-n``: a missing sudo right is
an immediate error, not a password prompt nobody answers). Around it, a
small POSIX shell wrapper (``flock``, ``timeout``: util-linux and coreutils)

* takes the server's update lock, a file in the agent directory, waiting a
  bounded time, so two commands (a rollback after a timeout, another
  rollout) never overlap on one server; the lock stays held while any
  process of the command lives (they inherit its descriptor);
* runs the command in its own process group under a server-side time limit
  (``timeout`` signals the whole group, then kills it);
* watches its standard input, which only the SSH channel feeds: when the
  session is cut or the client gives up, the input ends and the wrapper
  stops the group, so nothing goes on running behind the orchestrator's back
  (``timeout`` itself is signalled too: it may not lead its group yet, and
  it passes the signal on). A client must keep the input open meanwhile.

Markers in the output tell the caller what happened before the command
proper began (lock refused) and whether the time limit stopped it.
Pure: no I/O.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.refs import validate_agent_dir, validate_unix_user

LOCK_NAME = ".agent-update.lock"
LOCK_WAIT = 60  # seconds a command waits for another one on the same server
KILL_GRACE = 10  # seconds between TERM and KILL of a command's process group
EXIT_BUSY = 75  # EX_TEMPFAIL: the lock was not got, nothing ran
EXIT_TIME_LIMIT = (124, 137)  # timeout(1): TERM sent; KILL sent
STARTED = "agent-update: lock taken, command started"
BUSY = "agent-update: another update is running on this server"
TIME_LIMIT = "agent-update: the command passed its time limit"
NEVER_STARTED_OUTPUT = 8192  # bytes: an output this short still holds its first line
_BUSY_LINE = re.compile(rf"^{re.escape(BUSY)}", re.MULTILINE)


@dataclass(frozen=True)
class RunAs:
    """Who runs the steps: the agent user, reached from the SSH user."""

    ssh_user: str
    agent_user: str

    @property
    def needs_sudo(self) -> bool:
        return self.ssh_user != self.agent_user


def as_agent_user(command: str, run_as: RunAs) -> str:
    """``command`` run by ``sh`` as the agent user: through sudo when SSH logs in as another."""
    user = validate_unix_user(run_as.agent_user, "agent_user")
    if not run_as.needs_sudo:
        return f"sh -c {shlex.quote(command)}"  # POSIX sh, whatever the login shell is
    return f"sudo -n -u {shlex.quote(user)} -H -- sh -c {shlex.quote(command)}"


def guarded(
    body: str,
    *,
    agent_dir: str,
    time_limit: float,
    run_as: RunAs,
    lock_wait: float | None = None,
    kill_grace: float = KILL_GRACE,
) -> str:
    """The full command line for SSH: ``body`` under the lock, the limit and the watch."""
    lock_wait = LOCK_WAIT if lock_wait is None else lock_wait
    if not body.strip():
        raise ValidationError("update_command_template", "the command to run is empty")
    for name, value in (("time_limit", time_limit), ("lock_wait", lock_wait)):
        if not isinstance(value, int | float) or value <= 0:
            raise ValidationError(name, f"{name} must be a positive number of seconds")
    lock = f"{validate_agent_dir(agent_dir)}/{LOCK_NAME}"
    limit, wait, grace = _seconds(time_limit), _seconds(lock_wait), _seconds(kill_grace)
    ticks = int(grace) * 5  # 0.2 s each: the watcher leaves as soon as the group is gone
    script = f"""\
exec 8<&0
lock={shlex.quote(lock)}
if ! (true >>"$lock") 2>/dev/null; then
  echo "agent-update: cannot open the lock file $lock as $(id -un)"; exit {EXIT_BUSY}
fi
exec 9>>"$lock"
if ! flock -w {wait} 9; then
  echo "{BUSY} (its lock $lock is still held after {wait} s); nothing was changed"
  exit {EXIT_BUSY}
fi
echo "{STARTED}"
timeout -k {grace} {limit} sh -c {shlex.quote(body)} </dev/null 8<&- &
cmd=$!
(while read -r _; do :; done; kill -s TERM -- "-$cmd" "$cmd"; n=0
 while {{ kill -0 -- "-$cmd" || kill -0 "$cmd"; }} && [ "$n" -lt {ticks} ]; do
  sleep 0.2; n=$((n + 1))
 done
 kill -s KILL -- "-$cmd" "$cmd") <&8 9>&- >/dev/null 2>&1 &
watch=$!
wait "$cmd"; code=$?
kill "$watch" 2>/dev/null
if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
  echo "{TIME_LIMIT} of {limit} s and was stopped (exit $code)"
fi
exit "$code"
"""
    return as_agent_user(script, run_as)


def _seconds(value: float) -> str:
    return str(max(1, round(value)))


def refused_by_lock(exit_code: int | None, output: str) -> bool:
    """The command never began: another one held the server's lock."""
    return exit_code == EXIT_BUSY and bool(_BUSY_LINE.search(output))


def stopped_by_time_limit(exit_code: int | None, output: str) -> bool:
    return exit_code in EXIT_TIME_LIMIT and TIME_LIMIT in output


def never_started(exit_code: int | None, output: str) -> bool:
    """The wrapper never reached the command (sudo refused, no lock file, no shell).

    Only a real exit status with a short output counts: a lost session has
    no status, and a long output may have lost its first lines to the limit.
    """
    return (
        exit_code is not None
        and exit_code > 0
        and STARTED not in output
        and len(output) < NEVER_STARTED_OUTPUT
    )
