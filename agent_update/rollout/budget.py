"""Failure thresholds: when too many servers failed, start no more.

Two budgets, both "more than": an absolute number of failed rows, and a
percentage of the rows that ran and ended, which only counts once at least
``failure_min_sample`` rows ran (one failure out of one is no trend). The
percentage applies to the whole rollout and to the open wave alone, so a bad
wave halts even when earlier waves went well.
"""

from __future__ import annotations

from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import Update
from agent_update.rollout.tally import Tally


def validate(update: Update) -> None:
    if update.failure_budget < 0:
        raise ValidationError("failure_budget", "must not be negative")
    if not 0 <= update.failure_budget_percent < 100:
        raise ValidationError(
            "failure_budget_percent", "must be a percentage from 0 (no budget) to below 100"
        )
    if update.failure_min_sample < 1:
        raise ValidationError("failure_min_sample", "must be at least 1")


def over_percent(update: Update, failed: int, ended: int) -> bool:
    """More than the percentage failed, out of a large enough sample."""
    pct = update.failure_budget_percent
    return bool(pct) and ended >= update.failure_min_sample and failed * 100 > pct * ended


def budget_reason(update: Update, tally: Tally) -> str:
    """Why the failure budget stops the rollout, or ""."""
    failed, ended = tally.failed, tally.succeeded + tally.failed
    if update.failure_budget and failed > update.failure_budget:
        return f"{failed} servers failed, more than the failure budget of {update.failure_budget}"
    pct = update.failure_budget_percent
    if over_percent(update, failed, ended):
        return (
            f"{failed} of {ended} servers failed ({100 * failed / ended:.0f}%), "
            f"more than the failure budget of {pct:g}%"
        )
    if update.waves:
        w_failed = failed - update.wave_base_failed
        w_ended = w_failed + tally.succeeded - update.wave_base_succeeded
        if over_percent(update, w_failed, w_ended):
            return (
                f"{w_failed} of {w_ended} servers of wave {update.wave} failed "
                f"({100 * w_failed / w_ended:.0f}%), more than the failure budget of {pct:g}%"
            )
    return ""
