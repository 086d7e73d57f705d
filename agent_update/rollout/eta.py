"""The expected end of a rollout, from observed per-server times and the waves to come.

Rounds of ``lanes`` servers (or fewer inside a small wave), each as long as
the mean server so far; rows in flight count as half done. Test-mode and
gate pauses are not foreseen: the estimate is "if nothing stops it".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent_update.rollout import waves
from agent_update.rollout.model import Update, UpdateStatus
from agent_update.rollout.tally import RowTimes, Tally
from agent_update.rollout.words import count


@dataclass(frozen=True)
class Eta:
    seconds_left: float | None  # None: no server has ended yet
    per_server: float | None
    sample: int  # servers the mean is taken over
    rounds: float  # server lengths still to go, one after the other
    paused: bool = False  # no clock runs while paused: the time left is work, not a time

    def text(self, now: float) -> str:
        if self.rounds == 0:
            return "nothing left to run"
        rounds = count(self.rounds, "round")
        if self.seconds_left is None or self.per_server is None:
            return f"{rounds} to go; time per server unknown until one ends"
        left = _duration(self.seconds_left)
        how = f"{rounds} of {_duration(self.per_server)} per server, mean of {self.sample}"
        if self.paused:
            return f"paused: about {left} of work left once resumed ({how})"
        return f"about {left} left ({how})"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rounds_left(update: Update, tally: Tally) -> float:
    """Server lengths still to go on the critical path, waves included."""
    waiting, active = tally.waiting, len(tally.active)
    if update.status.is_final or (not waiting and not active):
        return 0.0
    total = 0.0
    wave = update.wave
    sizes = waves.parse_waves(update.waves)
    to_run = tally.to_run
    in_wave_started = update.wave_started
    first = True
    while waiting > 0 or (first and active):
        if wave <= len(sizes):
            size = sizes[wave - 1].size(to_run)
            take = min(max(size - in_wave_started, 0), waiting)
            lanes = min(update.lanes, size)
        else:
            take, lanes = waiting, update.lanes
        running = active if first else 0
        if take or running:
            total += math.ceil((take + running) / lanes) - (0.5 if running else 0.0)
        waiting -= take
        wave, in_wave_started, first = wave + 1, 0, False
    return total


def estimate(update: Update, tally: Tally, times: RowTimes) -> Eta:
    rounds = rounds_left(update, tally)
    seconds = None if times.mean is None else rounds * times.mean
    return Eta(seconds, times.mean, times.count, rounds, update.status is UpdateStatus.PAUSED)
