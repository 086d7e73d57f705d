"""Errors the engine raises: each names the field an operator must fix."""

from __future__ import annotations

from collections.abc import Callable


class AgentUpdateError(Exception):
    """Base of every error this package raises on purpose."""


class ValidationError(AgentUpdateError, ValueError):
    """A value an operator typed is not acceptable; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TransitionError(AgentUpdateError):
    """An operator action does not apply to the update's current status."""


class LeaseLost(AgentUpdateError):
    """Another runner holds the row: this one must stop touching it."""


class TickError(AgentUpdateError):
    """The watchdog could not resume some rollouts (each logged); it went on with the others."""

    def __init__(self, failed: dict[str, str], touched: list[str]) -> None:
        listed = "; ".join(f"{name}: {why}" for name, why in failed.items())
        super().__init__(f"tick: {len(failed)} rollout(s) not resumed ({listed})")
        self.failed = failed
        self.touched = touched


def tick_outcome(tick: Callable[[], list[str]]) -> tuple[list[str], TickError | None]:
    """The rollouts a tick touched and its TickError, if any: callers finish their
    own follow-up (stall alerts, waiting for resumed rows) before reporting it."""
    try:
        return tick(), None
    except TickError as exc:
        return exc.touched, exc
