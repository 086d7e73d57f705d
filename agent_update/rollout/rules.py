"""Validation of an update's source and config: the rules of docs/design.md §2.

Runs before anything touches a server, and again whenever a value may have
changed (save, Build Plan, Start), so a later edit is never trusted blindly.
Every error names the field the operator must fix.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

from agent_update.rollout import budget, refs, schedule, targets, waves
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import EngineSettings, Server, Update, UpdateStatus

MAX_LANES = 200
MIN_VERDICT_WINDOW = 5.0  # seconds; supervisor's startsecs is 1 by default
MAX_VERDICT_WINDOW = 3600.0
MAX_MIN_HEALTHY_TIME = 3600.0


def apply_defaults(update: Update, settings: EngineSettings) -> Update:
    """Fill repo and branch from the settings when the operator left them empty."""
    return update.copy(
        repo=(update.repo or settings.default_repo).strip(),
        branch=(update.branch or settings.default_branch).strip(),
        commit=update.commit.strip().lower(),
        rollback_commit=update.rollback_commit.strip().lower(),
    )


def validate_source(update: Update, *, need_commit: bool = False) -> None:
    """Check repo, branch and (when given or needed) the commit's form."""
    if not update.repo:
        raise ValidationError("repo", "is required (set it here or in the settings)")
    refs.validate_repo_url(update.repo, "repo")
    if not update.branch:
        raise ValidationError("branch", "is required (set it here or in the settings)")
    refs.validate_branch(update.branch, "branch")
    if update.commit or need_commit:
        if not update.commit:
            raise ValidationError("commit", "is required; resolve the branch head first")
        refs.validate_commit(update.commit, "commit")


def validate_config(update: Update) -> None:
    """Restart modes, rollback, timeouts, lanes, budgets, test mode, waves, alerts."""
    if not (update.restart_web or update.restart_rq or update.restart_redis):
        raise ValidationError(
            "restart_web", "at least one of web workers, RQ workers or Redis must restart"
        )
    if update.restart_redis and not (update.restart_web and update.restart_rq):
        raise ValidationError(
            "restart_redis", "restarting Redis requires restarting web and RQ workers too"
        )
    if update.rollback_to_specific:
        if not update.auto_rollback:
            raise ValidationError(
                "rollback_to_specific", "needs auto rollback on (nothing rolls back otherwise)"
            )
        if not update.rollback_commit:
            raise ValidationError("rollback_commit", "is required with rollback to specific commit")
        refs.validate_commit(update.rollback_commit, "rollback_commit")
        if update.commit and update.rollback_commit == update.commit:
            raise ValidationError("rollback_commit", "must differ from the commit being rolled out")
    _positive(update.startup_timeout, "startup_timeout")
    _positive(update.command_timeout, "command_timeout")
    if update.command_timeout <= update.startup_timeout:
        # Graceful RQ restarts wait for busy workers: the command may take far
        # longer than the agent needs to answer once it is back.
        raise ValidationError("command_timeout", "must be longer than the agent startup timeout")
    if update.bake_time < 0:
        raise ValidationError("bake_time", "must not be negative")
    if update.bake_time >= update.startup_timeout:
        raise ValidationError("bake_time", "must be shorter than the agent startup timeout")
    if not 0 <= update.min_healthy_time <= MAX_MIN_HEALTHY_TIME:
        raise ValidationError(
            "min_healthy_time", f"must be between 0 and {MAX_MIN_HEALTHY_TIME:g} seconds"
        )
    if update.min_healthy_time > update.startup_timeout:
        # The programs must reach it before the verification gives up on them.
        raise ValidationError(
            "min_healthy_time", "must not be longer than the agent startup timeout"
        )
    if update.failed_command_grace < 0:
        raise ValidationError("failed_command_grace", "must not be negative")
    if not MIN_VERDICT_WINDOW <= update.verdict_window <= MAX_VERDICT_WINDOW:
        # Below supervisor's startsecs a healthy program may still be STARTING.
        raise ValidationError(
            "verdict_window",
            f"must be between {MIN_VERDICT_WINDOW:g} and {MAX_VERDICT_WINDOW:g} seconds",
        )
    if not 1 <= update.lanes <= MAX_LANES:
        raise ValidationError("lanes", f"must be between 1 and {MAX_LANES}")
    budget.validate(update)
    if update.test_mode and update.test_mode_count < 1:
        raise ValidationError("test_mode_count", "must be at least 1 in test mode")
    waves.validate(update)
    schedule.validate(update.start_at, update.window)
    targets.validate_patterns(update.server_pattern)
    targets.tags_of(update.server_tags, "server_tags")
    if update.stall_minutes < 0:
        raise ValidationError("stall_minutes", "must not be negative (0: no stall alert)")


def validate_update(update: Update, *, need_commit: bool = False) -> None:
    """All checks of an update, source first."""
    validate_source(update, need_commit=need_commit)
    validate_config(update)


def validate_deadline(update: Update, now: float) -> None:
    """A deadline, when set, must lie ahead: past it nothing starts (the run would do nothing).

    So must a scheduled start, and it must come before the deadline.
    """
    if update.deadline_at is not None and update.deadline_at <= now:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(update.deadline_at))
        raise ValidationError("deadline_at", f"{when} has already passed; set a time in the future")
    if update.start_at is not None and update.status is UpdateStatus.DRAFT:
        if update.start_at <= now:
            when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(update.start_at))
            raise ValidationError(
                "start_at", f"{when} has already passed; set a time in the future"
            )
        if update.deadline_at is not None and update.start_at >= update.deadline_at:
            raise ValidationError("start_at", "must come before the deadline")


def validate_server_types(update: Update, servers: Iterable[Server]) -> None:
    """Each server type asked for is one the registry has (a typo selects no server)."""
    known = sorted({s.server_type for s in servers})
    for kind in update.server_types:
        if kind not in known:
            have = ", ".join(known) if known else "none: the registry is empty"
            raise ValidationError(
                "server_types", f"no server of type {kind!r} in the registry (types: {have})"
            )


def _positive(value: float, field: str) -> None:
    if not value or value <= 0:
        raise ValidationError(field, "must be greater than zero")


# The engine settings' numbers: finite, and within what a runner can live with
# (a zero poll interval spins, a 10^12-wide Build Plan opens 10^12 threads).
SETTING_RANGES: dict[str, tuple[float, float, str]] = {
    "poll_interval": (0.01, 60.0, "seconds"),
    "probe_timeout": (0.1, 300.0, "seconds"),
    "connect_timeout": (0.1, 300.0, "seconds"),
    "lease_ttl": (1.0, 86400.0, "seconds"),
    "plan_concurrency": (1, 1024, "servers at once"),
}


def validate_settings(settings: EngineSettings) -> None:
    """Every number of the engine settings finite and in its range, naming the key."""
    for key, (low, high, unit) in SETTING_RANGES.items():
        value = getattr(settings, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(key, f"must be a number of {unit}, got {value!r}")
        if not math.isfinite(value) or not low <= value <= high:
            raise ValidationError(key, f"must be within {low:g} … {high:g} {unit}, got {value!r}")
    if settings.agent_ca_file and not os.path.isfile(settings.agent_ca_file):
        raise ValidationError(
            "agent_ca_file", f"{settings.agent_ca_file} is not a file (a PEM CA bundle)"
        )


def normal_name(name: str) -> str:
    """A server name as stored: trimmed, inner runs of spaces made one."""
    return " ".join(name.split())


def name_key(name: str) -> str:
    """What two names must differ in to be two servers: not case, not spacing."""
    return normal_name(name).casefold()


def same_name(servers: Iterable[Server], name: str) -> Server | None:
    """The registry entry whose name matches ``name`` but for case and spacing, or None."""
    key = name_key(name)
    return next((s for s in servers if name_key(s.name) == key), None)


def validate_server(server: Server) -> Server:
    """Every registry field that reaches a shell, SSH or a URL, checked when saved.

    The same checks run again when a command is built, so a value written
    behind the rules' back still never reaches a server. Returns the server
    with its values normalised (trimmed, no trailing slash).
    """
    name = normal_name(server.name or "")
    if not name:
        raise ValidationError("name", "is required")
    if any(ord(ch) < 32 for ch in name):
        raise ValidationError("name", f"server name {name!r} contains a control character")
    return server.copy(
        name=name,
        host=refs.validate_host(server.host, "host"),
        ssh_port=refs.validate_port(server.ssh_port, "ssh_port"),
        ssh_user=refs.validate_unix_user(server.ssh_user, "ssh_user"),
        agent_user=refs.validate_unix_user(server.agent_user, "agent_user"),
        agent_dir=refs.validate_agent_dir(server.agent_dir, "agent_dir"),
        agent_url=refs.validate_agent_url(server.agent_url, "agent_url"),
        tags=", ".join(targets.tags_of(server.tags)),
    )
