"""Opening the ``--db`` file: it must exist and be ours, unless the command creates it.

A mistyped path must not silently become a new, empty rollout database,
and a directory or a foreign file must be a one-line error, not a traceback.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent_update.cli.exits import CliError
from agent_update.rollout.store import SqliteStore

SQLITE_MAGIC = b"SQLite format 3\x00"
OUR_TABLES = {"updates", "rows", "servers"}


def open_store(path: str, *, create: bool = False) -> SqliteStore:
    """The store in ``path``; ``create`` allows a new file (``init``)."""
    db = Path(path)
    hint = f"create it with: agent-update --db {path} init"
    if db.is_dir():
        raise CliError(f"--db: {path} is a directory; name a database file")
    if not db.exists():
        if not create:
            raise CliError(f"--db: no database at {path}; {hint}")
        if not db.parent.is_dir():
            raise CliError(f"--db: no directory {db.parent} to create {db.name} in")
    else:
        _check_ours(db, path, hint, create)
    try:
        return SqliteStore(db)
    except sqlite3.Error as exc:
        raise CliError(f"--db: cannot open {path}: {exc}") from exc


def _check_ours(db: Path, path: str, hint: str, create: bool) -> None:
    try:
        with db.open("rb") as handle:
            head = handle.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise CliError(f"--db: cannot read {path}: {exc.strerror or exc}") from exc
    if not head:  # an empty file is an empty SQLite database
        if not create:
            raise CliError(f"--db: {path} is empty; {hint}")
        return
    if head != SQLITE_MAGIC:
        raise CliError(f"--db: {path} is not an SQLite database")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            found = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise CliError(f"--db: cannot read {path}: {exc}") from exc
    tables = {name for (name,) in found}
    if tables and not tables.issuperset(OUR_TABLES):
        raise CliError(f"--db: {path} is an SQLite database of something else, not agent-update")
    if not tables and not create:
        raise CliError(f"--db: {path} is empty; {hint}")
