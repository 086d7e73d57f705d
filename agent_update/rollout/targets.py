"""Which servers an update selects beyond their type: name patterns and tags.

Patterns are shell globs (``web-*``, ``db-eu-?``), comma-separated, any one
matching the name (case-insensitive, like names themselves). Tags are
comma-separated labels on a server; an update listing tags selects the
servers that carry every one of them (``eu, canary``: the EU canaries).
"""

from __future__ import annotations

import fnmatch
import re

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Server

_TAG = re.compile(r"^[\w.-]{1,64}$")


def split(text: str) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def tags_of(text: str, field: str = "tags") -> list[str]:
    """Tags as stored: trimmed, lower case, each a word of letters, digits, _ . -."""
    found = []
    for tag in split(text):
        if not _TAG.match(tag):
            raise ValidationError(field, f"{tag!r} is not a tag (letters, digits, _ . - only)")
        if tag.lower() not in found:
            found.append(tag.lower())
    return found


def validate_patterns(text: str, field: str = "server_pattern") -> None:
    for pattern in split(text):
        if any(ord(ch) < 32 for ch in pattern):
            raise ValidationError(field, f"{pattern!r} contains a control character")


def matches(server: Server, patterns: str, tags: str) -> bool:
    """Whether ``server`` is selected by the patterns (any) and the tags (all)."""
    wanted = split(patterns)
    name = server.name.casefold()
    if wanted and not any(fnmatch.fnmatchcase(name, p.casefold()) for p in wanted):
        return False
    required = set(tags_of(tags, "server_tags"))
    return required <= set(tags_of(server.tags))
