"""Counts in the operators' words: "1 server", "2 servers", "1.5 rounds"."""

from __future__ import annotations


def count(number: float, singular: str, plural: str | None = None) -> str:
    """``number`` and the noun that agrees with it (``plural`` defaults to singular + s)."""
    word = singular if number == 1 else (plural or f"{singular}s")
    return f"{number:g} {word}"
