"""Typed values of `agent-update` flags: each refuses a bad value in one line."""

from __future__ import annotations

import argparse
import math
import re

from agent_update.rollout.model import UpdateStatus

SERVER_STATUSES = ("Active", "Inactive", "Archived")


_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def _number(text: str, unit: str = "seconds") -> float:
    """A finite decimal number written in ASCII digits (no NaN, no infinity, no ٣)."""
    if not _DECIMAL.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text}")
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of {unit}, got {text}")
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
        if not re.fullmatch(r"[+-]?[0-9]{1,12}", text.strip(), re.ASCII):
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text}")
        value = int(text)
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


def percent(value: str) -> float:
    """A percentage within 0 … 100."""
    number = _number(value.strip().removesuffix("%"), "percent")
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage within 0 … 100, got {value}")
    return number


def minutes_or_zero(value: str) -> float:
    number = _number(value, "minutes")
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 minutes or more, got {value}")
    return number


STATUS_NAMES = {s.value.lower(): s.value for s in UpdateStatus}


def status_filter(text: str) -> str:
    """An update status, any case (``partial success`` too); argparse's type."""
    found = STATUS_NAMES.get(" ".join(text.split()).lower())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(s.value for s in UpdateStatus)}, got {text}"
        )
    return found
