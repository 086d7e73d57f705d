"""The settings file: JSON parsed into typed, range-checked EngineSettings.

Checked when loaded, not when first used: a wrong type or value found
mid-rollout leaves rows half-walked, so every problem is refused up front
with the key's name. ``ssh_private_key_file`` and ``known_hosts_file`` name
files (relative paths are taken from the settings file's directory) instead
of carrying their text.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

from agent_update.cli.exits import CliError, Exit
from agent_update.rollout import refs, rules
from agent_update.rollout.errors import AgentUpdateError
from agent_update.rollout.model import EngineSettings

FILE_KEYS = {"ssh_private_key_file": "ssh_private_key", "known_hosts_file": "known_hosts"}
# Numbers that must be > 0 (a zero poll interval spins, a zero lease is always expired).
POSITIVE = {"poll_interval", "probe_timeout", "connect_timeout", "lease_ttl", "plan_concurrency"}
UNITS = {
    float: "a number of seconds",
    int: "a whole number",
    str: "a string",
    bool: "true or false",
}


def known_keys() -> list[str]:
    return sorted({f.name for f in fields(EngineSettings)} | set(FILE_KEYS))


def load_settings(path: str | None) -> EngineSettings:
    """EngineSettings from ``path`` (none: the defaults); CliError naming the key."""
    if not path:
        return EngineSettings()
    source = Path(path)
    data = _read_json(source)
    values: dict[str, Any] = {}
    hints = get_type_hints(EngineSettings)
    for key, value in data.items():
        if key in FILE_KEYS:
            target = FILE_KEYS[key]
            if target in data:
                raise _error(source, key, f"give either {key} or {target}, not both")
            values[target] = _read_named_file(source, key, value)
        elif key in hints:
            values[key] = _typed(source, key, value, hints[key])
        else:
            close = difflib.get_close_matches(key, known_keys(), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(known_keys())}"
            raise CliError(f"{source}: unknown setting {key}{hint}")
    settings = EngineSettings(**values)
    _check_values(source, settings)
    return settings


def _read_json(source: Path) -> dict[str, Any]:
    if not source.exists():
        raise CliError(f"--settings: no file at {source}")
    if source.is_dir():
        raise CliError(f"--settings: {source} is a directory, not a JSON file")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--settings: cannot read {source}: {_why(exc)}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(data, dict):
        raise CliError(f"{source}: expected a JSON object of settings, got {_kind(data)}")
    return data


def _typed(source: Path, key: str, value: Any, hint: Any) -> Any:
    """The value when its JSON type fits the field; ints are fine where seconds go."""
    ok = (
        (hint is str and isinstance(value, str))
        or (hint is bool and isinstance(value, bool))
        or (hint is int and isinstance(value, int) and not isinstance(value, bool))
        or (hint is float and isinstance(value, (int, float)) and not isinstance(value, bool))
    )
    if not ok:
        want = UNITS.get(hint, str(hint))
        raise _error(source, key, f"must be {want}, got {json.dumps(value)} ({_kind(value)})")
    if hint is float:
        value = float(value)
    if hint is float and not math.isfinite(value):  # json reads NaN and Infinity
        raise _error(source, key, f"must be a finite number, got {json.dumps(value)}")
    if hint in (int, float):
        if key in POSITIVE and value <= 0:
            raise _error(source, key, f"must be greater than 0, got {value:g}")
        if value < 0:
            raise _error(source, key, f"must not be negative, got {value:g}")
    return value


def _read_named_file(source: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(source, key, f"must name a file, got {json.dumps(value)}")
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = source.parent / path
    if not path.exists():
        raise _error(source, key, f"no file at {path}")
    if not path.is_file():
        raise _error(source, key, f"{path} is not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(source, key, f"cannot read {path}: {_why(exc)}") from exc


def _check_values(source: Path, settings: EngineSettings) -> None:
    """What a type cannot say: refs are well formed, the key is a usable key."""
    try:
        rules.validate_settings(settings)
        if settings.default_repo:
            refs.validate_repo_url(settings.default_repo, "default_repo")
        if settings.default_branch:
            refs.validate_branch(settings.default_branch, "default_branch")
    except AgentUpdateError as exc:
        raise CliError(f"{source}: {exc}") from exc
    if settings.ssh_private_key.strip():
        from agent_update.remote.ssh import load_private_key

        try:
            load_private_key(settings.ssh_private_key)
        except AgentUpdateError as exc:
            raise _error(source, "ssh_private_key", str(exc).removeprefix("the ")) from exc


def _error(source: Path, key: str, message: str) -> CliError:
    return CliError(f"{source}: {key}: {message}", Exit.USAGE)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
