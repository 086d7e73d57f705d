"""The command line: subcommands, typed flags with units, one-line usage errors.

Server flags are derived from the ``Server`` dataclass, so a registry field
added there gets its flag (``--agent-user`` …) without touching this file;
``SERVER_HELP`` only words the help. Every numeric flag is range-checked
by its type, before anything is opened.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from dataclasses import fields
from typing import Any, NoReturn, get_type_hints

from agent_update.cli import logs
from agent_update.cli.create_flags import add_create_parser
from agent_update.cli.exits import EXIT_HELP, Exit
from agent_update.cli.types import (  # noqa: F401 (re-exported)
    SERVER_STATUSES,
    seconds,
    seconds_or_zero,
    server_status,
    status_filter,
    text,
    whole,
)
from agent_update.rollout.model import Server

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
  AGENT_UPDATE_LOG       default for --log-level (WARNING)

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
def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without /etc/passwd entry)
        return ""


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
    parser.add_argument(
        "--user",
        type=text,
        default=os.environ.get("AGENT_UPDATE_USER") or default_user(),
        help="who acts, recorded for approvals (default $AGENT_UPDATE_USER, else your login)",
    )
    parser.add_argument(
        "--log-level",
        type=logs.level_name,
        default=os.environ.get(logs.ENV) or logs.DEFAULT,
        metavar="LEVEL",
        help="engine log on stderr: WARNING (default: only trouble inside the tool), "
        "INFO (every step of every server), DEBUG, ERROR",
    )
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

    add_create_parser(command)

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
            p.add_argument(
                "--now", action="store_true", help="start now even if scheduled for later"
            )
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
    listing = command("list", "list the updates, newest first")
    listing.add_argument(
        "--status", action="append", type=status_filter, help="only this status (repeatable)"
    )
    listing.add_argument("--limit", type=whole(1), metavar="N", help="at most N updates")
    listing.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    past = command("history", "every update that named a server: from, to, how it ended")
    past.add_argument("server", help="the server's name")
    past.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    delete = command("delete", "delete a Draft, Pending or (with --finished) finished update")
    delete.add_argument("name", help=UPDATE_NAME)
    delete.add_argument("--finished", action="store_true", help="also a finished one (history)")
    undo = command("undo", "take every server a finished update changed back to what it ran before")
    undo.add_argument("name", help=UPDATE_NAME)
    undo.add_argument("--json", action="store_true", help="the new updates as JSON")
    approve = command("approve", "approve an update that requires it (by another person)")
    approve.add_argument("name", help=UPDATE_NAME)
    command(
        "tick",
        "the watchdog: resume what a dead runner left, then wait for it; "
        "exit 6 when a rollout stalled",
    )
    return parser


# An engine field whose flag is not simply --field-name.
FIELD_FLAGS = {
    "restart_web": "--no-restart-web",
    "auto_rollback": "--no-auto-rollback",
    "rollback_to_specific": "--rollback-commit",
    "test_mode_count": "--test-mode",
    "server_types": "--server-type",
    "deadline_at": "--deadline",
    "deadline": "--deadline",
    "start_at": "--start-at",
    "server_pattern": "--servers",
    "server_tags": "--tag",
    "approval_required": "--require-approval",
}


def flag_for(parser: Parser, command: str, field: str) -> str:
    """The flag of ``command`` that sets the engine's ``field``, or the field's own name."""
    sub = parser.commands.get(command)
    flag = FIELD_FLAGS.get(field, f"--{field.replace('_', '-')}")
    if sub is not None and flag in sub._option_string_actions:
        return flag
    return field
