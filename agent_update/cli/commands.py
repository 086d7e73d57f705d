"""What each `agent-update` subcommand does, over a Service and its SQLite store."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import datetime

from agent_update.cli.args import server_values
from agent_update.cli.exits import CliError, Exit, rollout_exit
from agent_update.cli.follow import Interrupts, sleep_unless_interrupted
from agent_update.cli.history_commands import HISTORY_HANDLERS
from agent_update.cli.output import (
    LiveView,
    dump,
    server_json,
    server_lines,
    update_json,
    update_lines,
)
from agent_update.cli.run_commands import RUN_HANDLERS
from agent_update.cli.showing import ramp_lines, show
from agent_update.remote.agent_client import AgentEndpoint
from agent_update.remote.resolve import addresses
from agent_update.rollout import machines, rules
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import GateAction, Server, Update, UpdateStatus
from agent_update.service import Service


# --------------------------------------------------------------- registry
def agent_password(args: argparse.Namespace) -> str | None:
    """The password from the named variable; an unset or empty one is refused at once."""
    var = args.agent_password_env
    if var is None:
        return None
    value = os.environ.get(var, "")
    if not value:
        state = "is empty" if var in os.environ else "is not set"
        raise CliError(f"--agent-password-env: the variable {var} {state}; export the password")
    return value


def validate_server(server: Server, registry: list[Server] | None = None) -> None:
    """Every field that reaches a shell or a URL, checked before it is saved.

    With the ``registry``: an entry reaching the same machine as another
    (resolved address, SSH port, agent directory) is refused, naming it.
    """
    server = rules.validate_server(server)
    AgentEndpoint(server.agent_url, server.agent_password)
    found = machines.duplicate_of(server, registry or [], addresses)
    if found is not None:
        other, where = found
        raise CliError(f"host: {machines.duplicate_message(server, other, where)}", Exit.REFUSED)


def cmd_server_add(service: Service, args: argparse.Namespace) -> int:
    store = service.store
    existing = rules.same_name(store.list_servers(), args.name)
    if existing is not None:
        same = (
            ""
            if existing.name == args.name
            else f" (as {existing.name!r}: names match whatever their case and spacing)"
        )
        raise CliError(
            f"server {existing.name} exists{same}; change it with: "
            f"agent-update server-set {existing.name} …",
            Exit.REFUSED,
        )
    values = server_values(args)
    for required in ("host", "agent_url"):
        if required not in values:
            raise CliError(f"server-add: --{required.replace('_', '-')} is required")
    password = agent_password(args)
    server = Server(name=rules.normal_name(args.name), **values, agent_password=password or "")
    validate_server(server, store.list_servers())
    store.save_server(server)  # type: ignore[attr-defined]
    print(f"server {server.name} added")
    return Exit.OK


def cmd_server_set(service: Service, args: argparse.Namespace) -> int:
    store = service.store
    server = rules.same_name(store.list_servers(), args.name)
    if server is None:
        raise CliError(f"no server named {args.name}; add it with server-add", Exit.NOT_FOUND)
    changes = server_values(args)
    password = agent_password(args)
    if password is not None:
        changes["agent_password"] = password
    if not changes:
        raise CliError("server-set: nothing to change; give at least one flag (see --help)")
    updated = replace(server, **changes)
    validate_server(updated, store.list_servers())
    store.save_server(updated)  # type: ignore[attr-defined]
    print(f"server {server.name}: {', '.join(sorted(changes))} changed")
    return Exit.OK


def cmd_server_list(service: Service, args: argparse.Namespace) -> int:
    servers = service.store.list_servers()
    if args.json:
        dump([server_json(s) for s in servers])
    else:
        print("\n".join(server_lines(servers)))
    return Exit.OK


# ---------------------------------------------------------------- updates
def update_from_args(args: argparse.Namespace) -> Update:
    return Update(
        repo=args.repo or "",
        branch=args.branch or "",
        commit=args.commit or "",
        server_types=tuple(args.server_type or ()),
        exclude_self_hosted=args.exclude_self_hosted,
        restart_web=not args.no_restart_web,
        restart_rq=args.restart_rq,
        restart_redis=args.restart_redis,
        auto_rollback=not args.no_auto_rollback,
        rollback_to_specific=bool(args.rollback_commit),
        rollback_commit=args.rollback_commit or "",
        stop_after_single_rollback=args.stop_after_single_rollback,
        repair=args.repair,
        startup_timeout=args.startup_timeout,
        command_timeout=args.command_timeout,
        bake_time=args.bake_time,
        verdict_window=args.verdict_window,
        min_healthy_time=args.min_healthy_time,
        lanes=args.lanes,
        failure_budget=args.failure_budget,
        test_mode=args.test_mode > 0,
        test_mode_count=max(args.test_mode, 1),
        failure_budget_percent=args.failure_budget_percent,
        failure_min_sample=args.failure_min_sample,
        waves=args.waves or "",
        wave_success_threshold=args.wave_success_threshold,
        wave_gate_action=GateAction(args.wave_gate_action),
        deadline_at=deadline(args.deadline),
        stall_minutes=args.stall_minutes,
        server_pattern=", ".join(args.servers or ()),
        server_tags=", ".join(args.tag or ()),
        start_at=deadline(args.start_at, "start_at"),
        window=args.window or "",
        approval_required=args.require_approval,
    )


def deadline(text: str | None, field: str = "deadline") -> float | None:
    """An ISO 8601 time (local time when it names no zone) -> epoch seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValidationError(field, f"{text} is not a time like 2026-11-28T18:00") from None


def cmd_create(service: Service, args: argparse.Namespace) -> int:
    update = service.create(update_from_args(args))
    if args.json:
        show(service, update.name, as_json=True)
    else:
        count = len(service.store.get_rows(update.name))
        print(update.name)
        print(
            f"Draft update of {count} servers created; next: agent-update plan {update.name}",
            file=sys.stderr,
        )
    return Exit.OK


def cmd_plan(service: Service, args: argparse.Namespace) -> int:
    update = service.build_plan(args.name)
    show(service, args.name, args.json)
    if update.status is not UpdateStatus.PENDING:  # stuck: the table says which and why
        print(f"not planned: fix the servers above, then plan {args.name} again", file=sys.stderr)
        return Exit.ENDED_BADLY
    if not args.json:
        print(f"planned; next: agent-update run {args.name}", file=sys.stderr)
    return Exit.OK


def cmd_pause(service: Service, args: argparse.Namespace) -> int:
    service.pause(args.name)
    show(service, args.name)
    return Exit.OK


def cmd_status(service: Service, args: argparse.Namespace) -> int:
    """``--watch`` follows a Pending, Paused or Running update until it ends (or Ctrl-C)."""
    if not args.watch:
        show(service, args.name, args.json)
        return Exit.OK
    view = LiveView(sys.stdout)
    last: tuple = ()
    interrupts = Interrupts()
    with interrupts.installed():
        while True:
            update = service.store.get_update(args.name)
            rows = service.store.get_rows(args.name)
            lines = update_lines(update, rows)
            lines[1:1] = ramp_lines(service, update, rows)
            # Off a terminal, print only when something other than a clock moved.
            state = (
                update.status,
                update.halt_reason,
                update.pause_reason,
                [(r.status, r.reason) for r in rows],
            )
            if view.enabled and not args.json:
                view.draw(lines)
            elif state != last and not args.json:
                print("\n".join(lines), flush=True)
            last = state
            if update.status.is_final or update.status is UpdateStatus.DRAFT:
                break
            if sleep_unless_interrupted(interrupts, args.interval):
                print(f"stopped watching {args.name} (it goes on)", file=sys.stderr)
                return Exit.INTERRUPTED
    if args.json:
        dump(update_json(update, rows))
    return Exit.OK if update.status is UpdateStatus.DRAFT else rollout_exit(update)


def cmd_split(service: Service, args: argparse.Namespace) -> int:
    for name in service.split(args.name, args.batches):
        print(name)
    return Exit.OK


HANDLERS = {
    "server-add": cmd_server_add,
    "server-set": cmd_server_set,
    "server-list": cmd_server_list,
    "create": cmd_create,
    "plan": cmd_plan,
    "pause": cmd_pause,
    "status": cmd_status,
    "split": cmd_split,
    **RUN_HANDLERS,
    **HISTORY_HANDLERS,
}
