"""`agent-update`: the rollout without Frappe, over the embedded SQLite store.

Settings come from a JSON file (``--settings``) whose keys are those of
``EngineSettings``; ``ssh_private_key_file`` and ``known_hosts_file`` may
name files instead of carrying their text. Every command prints what it did;
``run`` starts (or resumes) an update and stays until it settles.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, fields
from pathlib import Path

from agent_update.rollout.errors import AgentUpdateError
from agent_update.rollout.model import EngineSettings, Row, Server, Update, UpdateStatus
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service

FILE_KEYS = {"ssh_private_key_file": "ssh_private_key", "known_hosts_file": "known_hosts"}


def load_settings(path: str | None) -> EngineSettings:
    """EngineSettings from a JSON file; unknown keys are an error naming them."""
    if not path:
        return EngineSettings()
    data = json.loads(Path(path).read_text())
    for key, target in FILE_KEYS.items():
        if key in data:
            data[target] = Path(data.pop(key)).read_text()
    known = {f.name for f in fields(EngineSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AgentUpdateError(f"{path}: unknown settings {', '.join(unknown)}")
    return EngineSettings(**data)


def format_row(row: Row) -> str:
    commit = (row.reported_commit or row.current_commit)[:12]
    return f"{row.idx:>4}  {row.server:<24} {row.status.value:<13} {commit:<12}  {row.reason}"


def print_update(service: Service, name: str) -> None:
    update = service.store.get_update(name)
    print(
        f"{update.name}: {update.status.value}  commit {update.commit[:12]}  lanes {update.lanes}"
    )
    if update.halt_reason:
        print(f"  halted: {update.halt_reason}")
    if update.why_stuck:
        print("  stuck at planning:\n    " + update.why_stuck.replace("\n", "\n    "))
    if update.overlap_warning:
        print(f"  warning: {update.overlap_warning}")
    for row in service.store.get_rows(name):
        print("  " + format_row(row))


def _update_from_args(args: argparse.Namespace) -> Update:
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
        lanes=args.lanes,
        failure_budget=args.failure_budget,
        test_mode=args.test_mode > 0,
        test_mode_count=max(args.test_mode, 1),
    )


def cmd_server_add(service: Service, args: argparse.Namespace) -> None:
    password = os.environ.get(args.agent_password_env, "") if args.agent_password_env else ""
    server = Server(
        name=args.name,
        host=args.host,
        server_type=args.type,
        ssh_port=args.ssh_port,
        ssh_user=args.ssh_user,
        agent_dir=args.agent_dir,
        agent_user=args.agent_user,
        agent_url=args.agent_url,
        agent_password=password,
    )
    service.store.save_server(server)  # type: ignore[attr-defined]
    print(f"server {server.name} saved")


def cmd_servers(service: Service, args: argparse.Namespace) -> None:
    for server in service.store.list_servers():
        data = asdict(server)
        data["agent_password"] = "***" if server.agent_password else ""
        print(json.dumps(data))


def cmd_create(service: Service, args: argparse.Namespace) -> None:
    update = service.create(_update_from_args(args))
    print(update.name)


def cmd_run(service: Service, args: argparse.Namespace) -> None:
    update = service.store.get_update(args.name)
    if update.status is UpdateStatus.PENDING:
        service.start(args.name)
    elif update.status is UpdateStatus.PAUSED and args.resume:
        service.resume(args.name)
    final = service.drive(args.name)
    print_update(service, args.name)
    sys.exit(0 if final.status in (UpdateStatus.SUCCESS, UpdateStatus.PAUSED) else 3)


def _simple(method: str):
    def run(service: Service, args: argparse.Namespace) -> None:
        getattr(service, method)(args.name)
        print_update(service, args.name)

    return run


def cmd_split(service: Service, args: argparse.Namespace) -> None:
    for name in service.split(args.name, args.batches):
        print(name)


def cmd_tick(service: Service, args: argparse.Namespace) -> None:
    touched = service.tick()
    service.runner.launcher.wait()  # type: ignore[attr-defined]
    print("resumed: " + (", ".join(touched) if touched else "nothing"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-update", description=__doc__)
    parser.add_argument("--db", default="agent-update.db", help="SQLite file of the store")
    parser.add_argument("--settings", help="JSON file of EngineSettings")
    sub = parser.add_subparsers(dest="command", required=True)

    add = sub.add_parser("server-add", help="add or replace a server in the registry")
    add.add_argument("name")
    add.add_argument("--host", required=True)
    add.add_argument("--type", default="Server")
    add.add_argument("--ssh-port", type=int, default=22)
    add.add_argument("--ssh-user", default="frappe")
    add.add_argument("--agent-dir", default="/home/frappe/agent")
    add.add_argument("--agent-user", default="frappe", help="the steps run as this user")
    add.add_argument("--agent-url", required=True)
    add.add_argument("--agent-password-env", help="environment variable holding the password")
    add.set_defaults(func=cmd_server_add)
    sub.add_parser("servers", help="list the registry").set_defaults(func=cmd_servers)

    create = sub.add_parser("create", help="create a Draft update filled from the registry")
    create.add_argument("--repo")
    create.add_argument("--branch")
    create.add_argument("--commit")
    create.add_argument("--server-type", action="append")
    create.add_argument("--exclude-self-hosted", action="store_true")
    create.add_argument("--no-restart-web", action="store_true")
    create.add_argument("--restart-rq", action="store_true")
    create.add_argument("--restart-redis", action="store_true")
    create.add_argument("--no-auto-rollback", action="store_true")
    create.add_argument("--rollback-commit")
    create.add_argument("--stop-after-single-rollback", action="store_true")
    create.add_argument("--startup-timeout", type=float, default=600)
    create.add_argument("--command-timeout", type=float, default=1800)
    create.add_argument("--bake-time", type=float, default=0)
    create.add_argument("--lanes", type=int, default=1)
    create.add_argument("--failure-budget", type=int, default=0)
    create.add_argument("--test-mode", type=int, default=0, help="pause after N servers")
    create.set_defaults(func=cmd_create)

    for name, method, text in [
        ("plan", "build_plan", "Build Plan"),
        ("start", "start", "Start (runs in this process until it settles: see run)"),
        ("pause", "pause", "Pause"),
        ("resume", "resume", "Resume"),
        ("force-continue", "force_continue", "Force Continue"),
        ("status", None, "show an update and its rows"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("name")
        p.set_defaults(func=_simple(method) if method else lambda s, a: print_update(s, a.name))

    run = sub.add_parser("run", help="start or resume an update and stay until it settles")
    run.add_argument("name")
    run.add_argument("--resume", action="store_true", help="also resume a Paused update")
    run.set_defaults(func=cmd_run)

    split = sub.add_parser("split", help="Split Update into K batches")
    split.add_argument("name")
    split.add_argument("batches", type=int)
    split.set_defaults(func=cmd_split)
    sub.add_parser("tick", help="the watchdog: resume what a dead runner left").set_defaults(
        func=cmd_tick
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        service = Service(SqliteStore(args.db), load_settings(args.settings))
        args.func(service, args)
        if args.command in ("start", "resume", "force-continue"):
            service.runner.launcher.wait()  # type: ignore[attr-defined]
            print_update(service, args.name)
    except AgentUpdateError as exc:
        print(f"agent-update: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
