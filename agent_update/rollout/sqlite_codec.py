"""Rows of the SQLite store <-> the engine's dataclasses, by their fields' types.

The schema is derived from the dataclasses, so a field added there becomes a
column; a database made by an older version gains it when opened.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, fields
from enum import Enum
from typing import Any, get_type_hints

from agent_update.rollout.model import Row, Server, Update


def quote(name: str) -> str:
    return f'"{name}"'


def marks(names: list[str]) -> str:
    return ", ".join("?" for _ in names)


def _sql_type(hint: Any) -> str:
    text = str(hint)
    if hint in (int, bool):
        return "INTEGER"
    if hint is float or "float" in text:
        return "REAL"
    return "TEXT"


def _encode(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return value


def _decoder(hint: Any) -> Callable[[Any], Any] | None:
    """How a stored value becomes the field's value; None when it already is."""
    if isinstance(hint, type) and issubclass(hint, Enum):
        return {member.value: member for member in hint}.__getitem__
    if hint is bool:
        return bool
    if hint == tuple[str, ...]:
        return lambda v: tuple(json.loads(v or "[]"))
    return None


class _Codec:
    """Column list, DDL and value conversion derived from a dataclass."""

    def __init__(self, cls: type) -> None:
        self.cls = cls
        hints = get_type_hints(cls)
        self.names = [f.name for f in fields(cls)]
        self.types = {n: _sql_type(hints[n]) for n in self.names}
        self.decoders = [_decoder(hints[n]) for n in self.names]
        self.select = ", ".join(map(quote, self.names))  # from_row relies on this order

    def columns(self) -> str:
        return ", ".join(f'"{n}" {self.types[n]}' for n in self.names)

    def defaults(self) -> dict[str, Any]:
        """Each field's default as stored (None when the field has none)."""
        out: dict[str, Any] = {}
        for f in fields(self.cls):
            if f.default is not MISSING:
                out[f.name] = _encode(f.default)
            elif f.default_factory is not MISSING:
                out[f.name] = _encode(f.default_factory())
            else:
                out[f.name] = None
        return out

    def to_row(self, obj: Any, names: Iterable[str]) -> list[Any]:
        return [_encode(getattr(obj, n)) for n in names]

    def from_some(self, names: Sequence[str], row: sqlite3.Row) -> Any:
        """An object from the columns ``names`` only (the rest keep their defaults)."""
        decoders = dict(zip(self.names, self.decoders, strict=True))
        return self.cls(
            **{
                n: v if v is None or decoders[n] is None else decoders[n](v)
                for n, v in zip(names, row, strict=True)
            }
        )

    def from_row(self, row: sqlite3.Row) -> Any:
        return self.cls(
            *[
                v if d is None or v is None else d(v)
                for d, v in zip(self.decoders, row, strict=True)
            ]
        )

    def check(self, names: Iterable[str]) -> list[str]:
        names = list(dict.fromkeys(names))
        unknown = set(names) - set(self.names)
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        return names


UPDATE_CODEC = _Codec(Update)
ROW_CODEC = _Codec(Row)
SERVER_CODEC = _Codec(Server)


def add_missing_columns(db: sqlite3.Connection, table: str, codec: _Codec) -> None:
    """A database made by an older version gains the fields added since, at their defaults."""
    have = {info[1] for info in db.execute(f"PRAGMA table_info({table})")}
    defaults = codec.defaults()
    for name in codec.names:
        if name not in have:
            default = defaults[name]
            clause = "" if default is None else f" DEFAULT {_literal(default)}"
            db.execute(f"ALTER TABLE {table} ADD COLUMN {quote(name)} {codec.types[name]}{clause}")


def _literal(value: Any) -> str:
    """An SQL literal for a default (DDL takes no parameters)."""
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"
