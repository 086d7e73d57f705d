"""What each `agent-update` subcommand does, over a Service and its SQLite store."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from datetime import datetime

from agent_update.cli.args import server_values
from agent_update.cli.exits import CliError, Exit
from agent_update.cli.follow import (
    Abandoned,
    Follower,
    Interrupts,
    settled,
    wait_for_rows,
)
from agent_update.cli.output import (
    LiveView,
    dump,
    server_json,
    server_lines,
    update_json,
    update_lines,
)
from agent_update.remote.agent_client import AgentEndpoint
from agent_update.rollout import rules, waves
from agent_update.rollout.errors import ValidationError
from agent_update.rollout.model import GateAction, Server, Update, UpdateStatus
from agent_update.service import Service


def show(service: Service, name: str, as_json: bool = False) -> Update:
    update = service.store.get_update(name)
    rows = service.store.get_rows(name)
    if as_json:
        data = update_json(update, rows)
        if update.status in (UpdateStatus.RUNNING, UpdateStatus.PAUSED):
            data["eta"] = service.eta(name).text(time.time())
        dump(data)
    else:
        lines = update_lines(update, rows)
        lines[1:1] = ramp_lines(service, update, rows)
        print("\n".join(lines))
    return update


def ramp_lines(service: Service, update: Update, rows: list) -> list[str]:
    """Why it paused, where the waves stand, and the ETA, under the update's line."""
    lines = []
    if update.pause_reason:
        lines.append(f"  paused: {update.pause_reason}")
    if update.waves and not update.status.is_final:
        to_run = service.store.tally(update.name, 0).to_run
        lines.append(f"  waves {update.waves}: now {waves.describe(update, to_run)}")
    if update.status in (UpdateStatus.RUNNING, UpdateStatus.PAUSED):
        lines.append(f"  ETA: {service.eta(update.name).text(time.time())}")
    return lines


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


def validate_server(server: Server) -> None:
    """Every field that reaches a shell or a URL, checked before it is saved."""
    rules.validate_server(server)
    AgentEndpoint(server.agent_url, server.agent_password)


def cmd_server_add(service: Service, args: argparse.Namespace) -> int:
    store = service.store
    if store.get_server(args.name) is not None:
        raise CliError(
            f"server {args.name} exists; change it with: agent-update server-set {args.name} …",
            Exit.REFUSED,
        )
    values = server_values(args)
    for required in ("host", "agent_url"):
        if required not in values:
            raise CliError(f"server-add: --{required.replace('_', '-')} is required")
    password = agent_password(args)
    server = Server(name=args.name, **values, agent_password=password or "")
    validate_server(server)
    store.save_server(server)  # type: ignore[attr-defined]
    print(f"server {server.name} added")
    return Exit.OK


def cmd_server_set(service: Service, args: argparse.Namespace) -> int:
    store = service.store
    server = store.get_server(args.name)
    if server is None:
        raise CliError(f"no server named {args.name}; add it with server-add", Exit.NOT_FOUND)
    changes = server_values(args)
    password = agent_password(args)
    if password is not None:
        changes["agent_password"] = password
    if not changes:
        raise CliError("server-set: nothing to change; give at least one flag (see --help)")
    updated = replace(server, **changes)
    validate_server(updated)
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
    )


def deadline(text: str | None) -> float | None:
    """An ISO 8601 time (local time when it names no zone) -> epoch seconds."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValidationError("deadline", f"{text} is not a time like 2026-11-28T18:00") from None


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
    if not args.watch:
        show(service, args.name, args.json)
        return Exit.OK
    view = LiveView(sys.stdout)
    last: tuple = ()
    while True:
        update = service.store.get_update(args.name)
        rows = service.store.get_rows(args.name)
        lines = update_lines(update, rows)
        # Off a terminal, print only when something other than a clock moved.
        state = (update.status, update.halt_reason, [(r.status, r.reason) for r in rows])
        if view.enabled and not args.json:
            view.draw(lines)
        elif state != last and not args.json:
            print("\n".join(lines), flush=True)
        last = state
        if settled(update, rows):
            break
        time.sleep(args.interval)
    if args.json:
        dump(update_json(update, rows))
    return Exit.OK


def cmd_split(service: Service, args: argparse.Namespace) -> int:
    for name in service.split(args.name, args.batches):
        print(name)
    return Exit.OK


# ------------------------------------------------------------ staying on
def cmd_run(service: Service, args: argparse.Namespace) -> int:
    """run / resume / force-continue: act, then follow until the rollout settles."""
    name = args.name
    current = service.store.get_update(name)
    if args.command == "run":
        if current.status is UpdateStatus.DRAFT:
            raise CliError(f"{name} is Draft: run agent-update plan {name} first", Exit.REFUSED)
        service.start_if_ready(name, resume=args.resume)
        after = service.store.get_update(name)
        if after.status is UpdateStatus.PAUSED and not args.resume:
            print(
                f"{name} is Paused; resume it with: agent-update run --resume {name}",
                file=sys.stderr,
            )
    elif args.command == "resume":
        service.resume(name)
    else:
        service.force_continue(name)
    return follow_and_report(service, name, args)


def follow_and_report(service: Service, name: str, args: argparse.Namespace) -> int:
    view = LiveView(sys.stderr, enabled=False if args.no_progress else None)
    interrupts = Interrupts()
    with interrupts.installed():
        follower = Follower(service, name, view, interrupts)
        try:
            final = follower.follow()
        except Abandoned as stop:
            servers = [service.store.get_row(n, i).server for n, i in stop.released]
            handed = f"; handed back {', '.join(servers)}" if servers else ""
            print(
                f"stopped at once{handed}: agent-update run {name} resumes at once",
                file=sys.stderr,
            )
            return Exit.INTERRUPTED
    show(service, name, args.json)
    if follower.stopped and not final.status.is_final:
        print(
            f"interrupted: servers not started yet stay Pending; agent-update run {name} goes on",
            file=sys.stderr,
        )
        return Exit.INTERRUPTED
    if final.status in (UpdateStatus.FAILURE, UpdateStatus.PARTIAL_SUCCESS):
        return Exit.ENDED_BADLY
    if final.status is UpdateStatus.PAUSED:
        print(f"paused; go on with: agent-update resume {name}", file=sys.stderr)
    return Exit.OK


def cmd_abort(service: Service, args: argparse.Namespace) -> int:
    """Abort, then stay while servers in flight (and any rollbacks) finish."""
    service.abort(args.name, rollback=args.rollback, reason=args.reason or "")
    return follow_and_report(service, args.name, args)


def cmd_tick(service: Service, args: argparse.Namespace) -> int:
    touched = service.tick()
    interrupts = Interrupts()
    with interrupts.installed():
        try:
            wait_for_rows(service, LiveView(sys.stderr, enabled=False), interrupts)
        except Abandoned:
            print("stopped at once; leases handed back", file=sys.stderr)
            return Exit.INTERRUPTED
    print("resumed: " + (", ".join(touched) if touched else "nothing"))
    if interrupts.count:
        return Exit.INTERRUPTED
    stalled = service.stalls()
    for alert in stalled:
        print(f"STALLED {alert.message}")
    return Exit.STALLED if stalled else Exit.OK


HANDLERS = {
    "server-add": cmd_server_add,
    "server-set": cmd_server_set,
    "server-list": cmd_server_list,
    "create": cmd_create,
    "plan": cmd_plan,
    "run": cmd_run,
    "resume": cmd_run,
    "force-continue": cmd_run,
    "pause": cmd_pause,
    "status": cmd_status,
    "split": cmd_split,
    "abort": cmd_abort,
    "tick": cmd_tick,
}
