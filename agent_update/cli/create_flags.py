"""The flags of `agent-update create`: source, servers, restarts, rollback, timing, pace, waves."""

from __future__ import annotations

import argparse

from agent_update.cli.types import (
    minutes_or_zero,
    percent,
    seconds,
    seconds_or_zero,
    text,
    whole,
)
from agent_update.rollout.model import GateAction


def add_create_parser(command) -> None:
    create = command("create", "create a Draft update, its servers filled from the registry")
    source = create.add_argument_group("source (repo and branch default to the settings)")
    source.add_argument("--repo", type=text, help="git URL or absolute path of the agent's repo")
    source.add_argument("--branch", type=text, help="branch to roll out from")
    source.add_argument("--commit", type=text, help="40-hex commit (default: the branch head)")
    servers = create.add_argument_group("servers")
    servers.add_argument(
        "--server-type",
        action="append",
        type=text,
        metavar="TYPE",
        help="only servers of this registry type (repeat for several; default all)",
    )
    servers.add_argument("--exclude-self-hosted", action="store_true", help="leave those out")
    servers.add_argument(
        "--servers",
        action="append",
        type=text,
        metavar="PATTERN",
        help="only servers whose name matches this glob, e.g. 'web-*' (repeat: any matches)",
    )
    servers.add_argument(
        "--tag",
        action="append",
        type=text,
        metavar="TAG",
        help="only servers carrying this tag (repeat: they must carry every one)",
    )
    restart = create.add_argument_group("restarts (at least one; Redis needs the other two)")
    restart.add_argument("--no-restart-web", action="store_true", help="keep web workers running")
    restart.add_argument(
        "--restart-rq",
        action="store_true",
        help="restart RQ workers (graceful: each busy worker finishes its job first; slow)",
    )
    restart.add_argument("--restart-redis", action="store_true", help="restart the agent's Redis")
    rollback = create.add_argument_group("rollback")
    rollback.add_argument("--no-auto-rollback", action="store_true", help="a failed server stays")
    rollback.add_argument(
        "--rollback-commit",
        type=text,
        metavar="COMMIT",
        help="roll back to this commit (default: each server's own)",
    )
    rollback.add_argument(
        "--stop-after-single-rollback", action="store_true", help="halt after one rollback"
    )
    create.add_argument(
        "--repair",
        action="store_true",
        help="repair a broken fleet: start even where agent programs are down or "
        "crash-looping, restart every agent program; rolls back only to --rollback-commit",
    )
    timing = create.add_argument_group("timing (seconds)")
    timing.add_argument(
        "--startup-timeout",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="how long the agent has to come back healthy after the command (default 600)",
    )
    timing.add_argument(
        "--command-timeout",
        type=seconds,
        default=1800.0,
        metavar="SECONDS",
        help="how long the update command may run; longer than the startup timeout (default 1800)",
    )
    timing.add_argument(
        "--verdict-window",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="after the command ends: a crash loop or a program not restarted fails the server "
        "within this time, not at the startup timeout (default 30; 5 … 3600)",
    )
    timing.add_argument(
        "--bake-time",
        type=seconds_or_zero,
        default=0.0,
        metavar="SECONDS",
        help="how long the agent must stay healthy before a server counts as updated (default 0)",
    )
    timing.add_argument(
        "--min-healthy-time",
        type=seconds_or_zero,
        default=10.0,
        metavar="SECONDS",
        help="each restarted program must keep one pid, RUNNING, this long from its start "
        "before a server counts as updated: catches a program dying seconds after each "
        "start (default 10; 0 … 3600, at most the startup timeout)",
    )
    pace = create.add_argument_group("pace")
    pace.add_argument(
        "--lanes", type=whole(1, 200), default=1, metavar="N", help="servers at once (default 1)"
    )
    pace.add_argument(
        "--failure-budget",
        type=whole(0),
        default=0,
        metavar="N",
        help="halt once more than N servers failed (default 0: no budget)",
    )
    pace.add_argument(
        "--test-mode",
        type=whole(0),
        default=0,
        metavar="N",
        help="pause after N servers; resume runs the rest (default 0: off)",
    )
    _ramp_up_flags(create)
    create.add_argument("--json", action="store_true", help="the created update as JSON")


def _ramp_up_flags(create: argparse.ArgumentParser) -> None:
    """Waves, percentage thresholds, deadline and stall alert (docs/waves.md)."""
    ramp = create.add_argument_group("ramp-up and thresholds (docs/waves.md)")
    ramp.add_argument(
        "--waves",
        metavar="SIZES",
        help='sizes of the first waves, e.g. "1, 5, 20%%"; then the rest up to the lanes',
    )
    ramp.add_argument(
        "--wave-success-threshold",
        type=percent,
        default=95.0,
        metavar="PERCENT",
        help="successes so far needed to open the next wave (default 95)",
    )
    ramp.add_argument(
        "--wave-gate-action",
        choices=[a.value for a in GateAction],
        default=GateAction.PAUSE.value,
        help="when a wave's gate fails: Pause (resume opens the next wave) or Halt",
    )
    ramp.add_argument(
        "--failure-budget-percent",
        type=percent,
        default=0.0,
        metavar="PERCENT",
        help="halt once more than this share of the servers that ran failed, overall or "
        "in one wave (default 0: off)",
    )
    ramp.add_argument(
        "--failure-min-sample",
        type=whole(1),
        default=10,
        metavar="N",
        help="servers that must have run before the percentage can trip (default 10)",
    )
    ramp.add_argument(
        "--deadline",
        metavar="TIME",
        help="no new server starts after this time (ISO 8601, e.g. 2026-11-28T18:00)",
    )
    ramp.add_argument(
        "--start-at",
        metavar="TIME",
        help="start by itself at this time (ISO 8601; the watchdog tick starts it)",
    )
    ramp.add_argument(
        "--window",
        type=text,
        metavar="WINDOW",
        help="servers start only inside this maintenance window, in local time, e.g. "
        "'22:00-04:00' or 'Mon-Fri 21:30-23:00'",
    )
    ramp.add_argument(
        "--require-approval",
        action="store_true",
        help="Start by one person needs approval by another (agent-update approve)",
    )
    ramp.add_argument(
        "--stall-minutes",
        type=minutes_or_zero,
        default=0.0,
        metavar="MINUTES",
        help="tick reports the update (exit 6) when no server ended for this long (0: off)",
    )
