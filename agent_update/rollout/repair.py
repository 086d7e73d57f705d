"""Repair: the two places where a repair update walks a row differently.

A repair (``Update.repair``) brings back servers left down or crash-looping
by a bad commit (docs/repair.md). Its precheck accepts programs that are not
RUNNING, and a failed repair row rolls back only to a commit the operator
chose. Its command restarts every agent program (remote.script) and its
verification is the usual one (machine.restart_set names every program). Pure.
"""

from __future__ import annotations

import json

from agent_update.rollout.model import Row, RowStatus, Step, Update, append_log
from agent_update.rollout.observations import PrecheckObs


def precheck(row: Row, obs: PrecheckObs) -> Row:
    """Go on whatever state the programs are in; the pids of those RUNNING are kept.

    A program down or crash-looping has no pid to compare: whatever runs
    after the command is new. The command restarts every agent program.
    """
    pids = {name: pid for name, (state, pid) in obs.programs.items() if state == "RUNNING"}
    down = [f"{n} {st}" for n, (st, _) in sorted(obs.programs.items()) if st != "RUNNING"]
    seen = f"{len(pids)} of {len(obs.programs)} programs running"
    seen += f" ({', '.join(down)})" if down else ""
    seen += f"; agent: {obs.agent_error}" if obs.agent_error else ""
    return row.copy(
        status=RowStatus.RUNNING,
        step=Step.COMMAND,
        reported_commit=obs.commit or row.reported_commit,
        pids_before=json.dumps(pids, sort_keys=True),
        attempts=row.attempts + 1,
        reason="",
        log=append_log(row.log, f"repair precheck: {seen}"),
    )


def keeps_failed(update: Update) -> bool:
    """A failed repair row stays as it is unless a specific rollback commit is set.

    The commit the server ran before was the broken one.
    """
    return update.repair and not update.rollback_to_specific
