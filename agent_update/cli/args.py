"""The command line: subcommands, typed flags with units, one-line usage errors.

Server flags are derived from the ``Server`` dataclass, so a registry field
added there gets its flag (``--agent-user`` …) without touching this file;
``SERVER_HELP`` only words the help. Every numeric flag is range-checked
by its type, before anything is opened.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from dataclasses import fields
from typing import Any, NoReturn, get_type_hints

from agent_update.cli.exits import EXIT_HELP, Exit
from agent_update.rollout.model import GateAction, Server

PROG = "agent-update"
DESCRIPTION = """\
Roll an agent update across a fleet without Frappe, over an SQLite file.

A session: init → server-add (once per server) → create → plan → run.
`run` stays until the rollout settles, with live progress on a terminal;
Ctrl-C once lets servers in flight finish, twice stops at once."""
EPILOG = f"""\
environment:
  AGENT_UPDATE_DB        default for --db
  AGENT_UPDATE_SETTINGS  default for --settings

{EXIT_HELP}

Times are in seconds everywhere in this command (the desk's form uses minutes)."""

UPDATE_NAME = "the update's name (AU-…, as create printed it)"
RUN_EPILOG = """\
While it waits it shows the servers in flight (on a terminal) and says which
servers another runner holds; it takes over those whose runner died (lease
expired). Ctrl-C (or SIGTERM) once: no new server starts, servers in flight
finish their step and verification, then it exits 130. Ctrl-C twice: it stops
at once and hands its servers back, so the next run resumes them at once.

exit codes: 0 Success (or paused), 3 Failure or Partial Success, 5 refused
(e.g. a Draft update: plan it first), 130 interrupted."""

SERVER_HELP = {
    "host": "address or host name SSH connects to",
    "server_type": "registry type the update's --server-type picks (default Server)",
    "ssh_port": "SSH port (default 22)",
    "ssh_user": "user SSH logs in as (default frappe)",
    "agent_dir": "the agent's directory on the server (default /home/frappe/agent)",
    "agent_url": "base URL of the agent's API, e.g. https://web1.example.com/agent",
    "agent_user": "user the update steps run as on the server (default frappe)",
    "status": "Active, or Archived / Inactive to leave the server out of updates",
    "disable_agent_update": "opt the server out of agent updates (--no-… opts it back in)",
    "self_hosted": "mark the server self-hosted (an update may exclude those)",
}
SERVER_METAVARS = {
    "host": "HOST",
    "server_type": "TYPE",
    "ssh_user": "USER",
    "agent_user": "USER",
    "agent_dir": "DIR",
    "agent_url": "URL",
}
SERVER_ALIASES = {"server_type": ["--type"], "disable_agent_update": ["--opt-out"]}
SERVER_STATUSES = ("Active", "Inactive", "Archived")
SECRET_SERVER_FIELDS = {"name", "agent_password"}  # not flags: positional / from the environment


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line and exits 2."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        choice = re.match(r"COMMAND: invalid choice: '([^']*)'", message)
        if choice:
            message = f"unknown command {choice.group(1)}"
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(Exit.USAGE)


# ------------------------------------------------------------------ types
def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text}")
    return value


def seconds(text: str) -> float:
    """More than zero seconds."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def seconds_or_zero(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 seconds or more, got {text}")
    return value


def whole(low: int, high: int | None = None):
    """A whole number within ``low`` … ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text}") from None
        if value < low or (high is not None and value > high):
            span = f"{low} or more" if high is None else f"within {low} … {high}"
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = "whole number"
    return parse


def text(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value.strip()


def server_status(value: str) -> str:
    for status in SERVER_STATUSES:
        if value.strip().lower() == status.lower():
            return status
    raise argparse.ArgumentTypeError(f"must be one of {', '.join(SERVER_STATUSES)}, got {value}")


# ------------------------------------------------------------ server flags
def server_field_names() -> list[str]:
    return [f.name for f in fields(Server) if f.name not in SECRET_SERVER_FIELDS]


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per registry field; absent flags leave the field as it is."""
    hints = get_type_hints(Server)
    for name in server_field_names():
        flags = [f"--{name.replace('_', '-')}", *SERVER_ALIASES.get(name, [])]
        extra: dict[str, Any] = {}
        hint = hints[name]
        if hint is bool:
            extra["action"] = argparse.BooleanOptionalAction
        elif name == "ssh_port":
            extra.update(type=whole(1, 65535), metavar="PORT")
        elif name == "status":
            extra.update(type=server_status, metavar="|".join(SERVER_STATUSES))
        elif hint is int:
            extra.update(type=whole(0), metavar="N")
        else:
            extra.update(type=text, metavar=SERVER_METAVARS.get(name, name.upper()))
        help_text = SERVER_HELP.get(name, f"the server's {name.replace('_', ' ')}")
        parser.add_argument(
            *flags, dest=f"server_{name}", default=argparse.SUPPRESS, help=help_text, **extra
        )
    parser.add_argument(
        "--agent-password-env",
        metavar="VAR",
        help="environment variable holding the agent's password (never given on the line)",
    )


def server_values(args: argparse.Namespace) -> dict[str, Any]:
    """The registry fields given on the command line, and only those."""
    return {
        name: getattr(args, f"server_{name}")
        for name in server_field_names()
        if hasattr(args, f"server_{name}")
    }


# ------------------------------------------------------------------ parser
def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        default=os.environ.get("AGENT_UPDATE_DB", "agent-update.db"),
        help="SQLite file of updates and servers (default agent-update.db; create with init)",
    )
    parser.add_argument(
        "--settings",
        default=os.environ.get("AGENT_UPDATE_SETTINGS") or None,
        metavar="FILE",
        help="JSON file of engine settings (keys in docs/cli.md)",
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of failures")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    def command(name: str, help_text: str, **kwargs: Any) -> argparse.ArgumentParser:
        sentence = help_text[:1].upper() + help_text[1:] + "."
        made = sub.add_parser(name, help=help_text, description=sentence, **kwargs)
        parser.commands[name] = made
        return made

    parser.commands = {}

    command("init", "create the database file (the only command that does)")

    add = command("server-add", "add a server to the registry")
    add.add_argument("name", help="the server's name (as updates list it)")
    add_server_flags(add)
    edit = command("server-set", "change a server's registry fields; those not given stay")
    edit.add_argument("name", help="the server's name")
    add_server_flags(edit)
    listing = command(
        "server-list",
        "list the registry (passwords shown only as set or not)",
        aliases=["servers"],
    )
    listing.add_argument("--json", action="store_true", help="one JSON list, for scripts")

    _create_parser(command)

    plan = command("plan", "Build Plan: read each server's commit; Pending when all can go")
    plan.add_argument("name", help=UPDATE_NAME)
    plan.add_argument("--json", action="store_true", help="the planned update as JSON")

    for name, text_ in [
        ("run", "Start (or go on with) an update and stay until it settles"),
        ("resume", "Resume a Paused update and stay until it settles"),
        ("force-continue", "Force Continue: failed servers go again; stay until it settles"),
    ]:
        p = command(name, text_, epilog=RUN_EPILOG, formatter_class=raw)
        p.add_argument("name", help=UPDATE_NAME)
        if name == "run":
            p.add_argument("--resume", action="store_true", help="also resume a Paused update")
        p.add_argument("--json", action="store_true", help="the final update as JSON on stdout")
        p.add_argument(
            "--no-progress", action="store_true", help="no live progress even on a terminal"
        )

    pause = command("pause", "Pause: no new server starts; servers in flight finish")
    pause.add_argument("name", help=UPDATE_NAME)

    status = command("status", "show an update and its servers")
    status.add_argument("name", help=UPDATE_NAME)
    status.add_argument("--json", action="store_true", help="the update and its rows as JSON")
    status.add_argument("--watch", action="store_true", help="refresh until the update settles")
    status.add_argument(
        "--interval",
        type=seconds,
        default=2.0,
        metavar="SECONDS",
        help="refresh period of --watch (default 2)",
    )

    split = command("split", "Split Update into K balanced batches (Pending updates only)")
    split.add_argument("name", help=UPDATE_NAME)
    split.add_argument("batches", type=whole(2), metavar="K", help="number of batches, 2 or more")
    abort = command(
        "abort",
        "Abort: stop for good; servers in flight finish and are verified, none starts",
        epilog=RUN_EPILOG,
        formatter_class=raw,
    )
    abort.add_argument("name", help=UPDATE_NAME)
    abort.add_argument(
        "--rollback", action="store_true", help="also roll back the servers this update changed"
    )
    abort.add_argument("--reason", type=text, help="recorded as the end reason")
    abort.add_argument("--json", action="store_true", help="the final update as JSON on stdout")
    abort.add_argument(
        "--no-progress", action="store_true", help="no live progress even on a terminal"
    )
    command(
        "tick",
        "the watchdog: resume what a dead runner left, then wait for it; "
        "exit 6 when a rollout stalled",
    )
    return parser


def _create_parser(command) -> None:
    create = command("create", "create a Draft update, its servers filled from the registry")
    source = create.add_argument_group("source (repo and branch default to the settings)")
    source.add_argument("--repo", type=text, help="git URL or absolute path of the agent's repo")
    source.add_argument("--branch", type=text, help="branch to roll out from")
    source.add_argument("--commit", type=text, help="40-hex commit (default: the branch head)")
    servers = create.add_argument_group("servers")
    servers.add_argument(
        "--server-type",
        action="append",
        type=text,
        metavar="TYPE",
        help="only servers of this registry type (repeat for several; default all)",
    )
    servers.add_argument("--exclude-self-hosted", action="store_true", help="leave those out")
    restart = create.add_argument_group("restarts (at least one; Redis needs the other two)")
    restart.add_argument("--no-restart-web", action="store_true", help="keep web workers running")
    restart.add_argument(
        "--restart-rq",
        action="store_true",
        help="restart RQ workers (graceful: each busy worker finishes its job first; slow)",
    )
    restart.add_argument("--restart-redis", action="store_true", help="restart the agent's Redis")
    rollback = create.add_argument_group("rollback")
    rollback.add_argument("--no-auto-rollback", action="store_true", help="a failed server stays")
    rollback.add_argument(
        "--rollback-commit",
        type=text,
        metavar="COMMIT",
        help="roll back to this commit (default: each server's own)",
    )
    rollback.add_argument(
        "--stop-after-single-rollback", action="store_true", help="halt after one rollback"
    )
    timing = create.add_argument_group("timing (seconds)")
    timing.add_argument(
        "--startup-timeout",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="how long the agent has to come back healthy after the command (default 600)",
    )
    timing.add_argument(
        "--command-timeout",
        type=seconds,
        default=1800.0,
        metavar="SECONDS",
        help="how long the update command may run; longer than the startup timeout (default 1800)",
    )
    timing.add_argument(
        "--verdict-window",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="after the command ends: a crash loop or a program not restarted fails the server "
        "within this time, not at the startup timeout (default 30; 5 … 3600)",
    )
    timing.add_argument(
        "--bake-time",
        type=seconds_or_zero,
        default=0.0,
        metavar="SECONDS",
        help="how long the agent must stay healthy before a server counts as updated (default 0)",
    )
    pace = create.add_argument_group("pace")
    pace.add_argument(
        "--lanes", type=whole(1, 200), default=1, metavar="N", help="servers at once (default 1)"
    )
    pace.add_argument(
        "--failure-budget",
        type=whole(0),
        default=0,
        metavar="N",
        help="halt once more than N servers failed (default 0: no budget)",
    )
    pace.add_argument(
        "--test-mode",
        type=whole(0),
        default=0,
        metavar="N",
        help="pause after N servers; resume runs the rest (default 0: off)",
    )
    _ramp_up_flags(create)
    create.add_argument("--json", action="store_true", help="the created update as JSON")


def percent(value: str) -> float:
    """A percentage within 0 … 100."""
    number = _number(value.strip().removesuffix("%"))
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage within 0 … 100, got {value}")
    return number


def minutes_or_zero(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {value}") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 minutes or more, got {value}")
    return number


def _ramp_up_flags(create: argparse.ArgumentParser) -> None:
    """Waves, percentage thresholds, deadline and stall alert (docs/waves.md)."""
    ramp = create.add_argument_group("ramp-up and thresholds (docs/waves.md)")
    ramp.add_argument(
        "--waves",
        metavar="SIZES",
        help='sizes of the first waves, e.g. "1, 5, 20%%"; then the rest up to the lanes',
    )
    ramp.add_argument(
        "--wave-success-threshold",
        type=percent,
        default=95.0,
        metavar="PERCENT",
        help="successes so far needed to open the next wave (default 95)",
    )
    ramp.add_argument(
        "--wave-gate-action",
        choices=[a.value for a in GateAction],
        default=GateAction.PAUSE.value,
        help="when a wave's gate fails: Pause (resume opens the next wave) or Halt",
    )
    ramp.add_argument(
        "--failure-budget-percent",
        type=percent,
        default=0.0,
        metavar="PERCENT",
        help="halt once more than this share of the servers that ran failed, overall or "
        "in one wave (default 0: off)",
    )
    ramp.add_argument(
        "--failure-min-sample",
        type=whole(1),
        default=10,
        metavar="N",
        help="servers that must have run before the percentage can trip (default 10)",
    )
    ramp.add_argument(
        "--deadline",
        metavar="TIME",
        help="no new server starts after this time (ISO 8601, e.g. 2026-11-28T18:00)",
    )
    ramp.add_argument(
        "--stall-minutes",
        type=minutes_or_zero,
        default=0.0,
        metavar="MINUTES",
        help="tick reports the update (exit 6) when no server ended for this long (0: off)",
    )


# An engine field whose flag is not simply --field-name.
FIELD_FLAGS = {
    "restart_web": "--no-restart-web",
    "auto_rollback": "--no-auto-rollback",
    "rollback_to_specific": "--rollback-commit",
    "test_mode_count": "--test-mode",
    "server_types": "--server-type",
    "deadline_at": "--deadline",
    "deadline": "--deadline",
}


def flag_for(parser: Parser, command: str, field: str) -> str:
    """The flag of ``command`` that sets the engine's ``field``, or the field's own name."""
    sub = parser.commands.get(command)
    flag = FIELD_FLAGS.get(field, f"--{field.replace('_', '-')}")
    if sub is not None and flag in sub._option_string_actions:
        return flag
    return field
