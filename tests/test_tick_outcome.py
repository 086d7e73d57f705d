"""tick_outcome: the watchdog's callers (the Frappe job, `agent-update tick`) get what
a tick touched even when it raised, so they finish their follow-up before failing."""

from __future__ import annotations

import pytest

from agent_update.rollout.errors import TickError, TransitionError, tick_outcome


def test_a_clean_tick_gives_what_it_touched_and_no_failure():
    assert tick_outcome(lambda: ["AU-1", "AU-2"]) == (["AU-1", "AU-2"], None)


def test_a_failed_tick_gives_the_rollouts_it_did_resume_and_its_error():
    def tick() -> list[str]:
        raise TickError({"AU-9": "TypeError: lanes"}, ["AU-1"])

    touched, failure = tick_outcome(tick)
    assert touched == ["AU-1"]
    assert isinstance(failure, TickError) and failure.failed == {"AU-9": "TypeError: lanes"}


def test_any_other_error_is_not_caught():
    def tick() -> list[str]:
        raise TransitionError("not a tick failure")

    with pytest.raises(TransitionError):
        tick_outcome(tick)
