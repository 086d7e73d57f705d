"""The short soak (CI): 12 loopback hosts, two minutes of random faults, every invariant held.

The seed is fixed and printed, so a failure replays with
``python -m agent_update.testing.soak --seed 20261207 --hosts 12 --minutes 2``
(the machine's timing still varies). ``make soak`` runs the long form.
"""

from __future__ import annotations

import pytest

from agent_update.testing.soak.driver import Shape
from agent_update.testing.soak.faults import FaultKind
from agent_update.testing.soak.session import Options, run

pytestmark = [pytest.mark.fleet, pytest.mark.soak]
SEED = 20261207


def test_a_short_soak_holds_every_invariant(tmp_path):
    options = Options(
        minutes=2.0,
        seed=SEED,
        hosts=12,
        fault_every=2.5,
        shape=Shape(hosts=(3, 6), deadline=(40.0, 90.0), concurrent=3),
        root=tmp_path,
    )
    result = run(options)
    print(result.report)
    print(result.line)
    assert not result.violations, f"{result.line}\n{result.report}"
    kinds = {fault.kind for fault in result.faults}
    assert {FaultKind.PROGRAM_KILL, FaultKind.SSHD_FREEZE, FaultKind.RUNNER_KILL} <= kinds, kinds
    assert result.rollouts >= 5 and result.rows >= 15, result.line
    assert "host-vs-row checks" in result.report
