"""`agent-update`: the rollout without Frappe, over the embedded SQLite store.

``main`` turns every failure into one line on stderr and a documented exit
code (``exits.Exit``); ``--debug`` shows the traceback of an unexpected one.
``--log-level`` shows the engine's log on stderr (``logs``).

Modules: args (the parser), commands (one handler per subcommand),
create_flags, types (typed flags), settings_file, database (the SQLite
file), follow (waiting, Ctrl-C), output (tables, the live block), exits,
logs (the engine's log on stderr).
"""

from __future__ import annotations

import sqlite3
import sys
import traceback
from pathlib import Path

from agent_update.cli import logs
from agent_update.cli.args import build_parser, flag_for
from agent_update.cli.commands import HANDLERS
from agent_update.cli.database import open_store
from agent_update.cli.exits import CliError, Exit
from agent_update.cli.settings_file import load_settings
from agent_update.rollout.errors import AgentUpdateError, TransitionError, ValidationError
from agent_update.rollout.store import NotFound

__all__ = ["Exit", "main", "run"]

ALIASES = {"servers": "server-list"}


def run(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (tests call this)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = ALIASES.get(args.command, args.command)
    if args.log_level in ("DEBUG", "INFO") and hasattr(args, "no_progress"):
        args.no_progress = True  # log lines would tear the live block redrawn in place
    try:
        with logs.to_stderr(args.log_level):
            return _dispatch(args)
    except CliError as exc:
        return _fail(exc.message, exc.code)
    except NotFound as exc:
        name = getattr(args, "name", None)
        what = f"no update named {name}" if name else exc.args[0]
        return _fail(what, Exit.NOT_FOUND)
    except ValidationError as exc:  # named by the flag that sets the field, where one does
        return _fail(f"{flag_for(parser, args.command, exc.field)}: {exc.message}", Exit.REFUSED)
    except TransitionError as exc:
        return _fail(str(exc), Exit.REFUSED)
    except AgentUpdateError as exc:
        return _fail(str(exc), Exit.FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", Exit.INTERRUPTED)
    except sqlite3.OperationalError as exc:  # read-only file or folder, locked, disk full
        return _fail(database_problem(args.db, exc), Exit.FAILED)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else " (--debug shows the traceback)"
        return _fail(f"unexpected error: {type(exc).__name__}: {exc}{hint}", Exit.FAILED)


def _dispatch(args) -> int:
    settings = load_settings(args.settings)
    if args.command == "init":
        existed = Path(args.db).exists() and Path(args.db).stat().st_size > 0
        open_store(args.db, create=True).close()
        print(f"{args.db}: {'already there, nothing to do' if existed else 'created'}")
        return Exit.OK
    from agent_update.service import Service

    store = open_store(args.db)
    try:
        return HANDLERS[args.command](Service(store, settings), args)
    finally:
        store.close()


def database_problem(path: str, exc: sqlite3.OperationalError) -> str:
    """One line that says what is wrong with the database file and what to do."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (
            f"--db: {path} is read-only ({text}): this command writes; it needs write "
            "access to the file and to its folder (SQLite keeps a journal beside it)"
        )
    if "locked" in text or "busy" in text:
        return f"--db: {path} is locked by another process ({text}); try again when it is done"
    return f"--db: {path}: {text}"


def _fail(message: str, code: int) -> int:
    print(f"agent-update: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> None:
    sys.exit(run(argv))
