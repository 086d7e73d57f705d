"""`agent-update list`, `history`, `delete` and `undo`: the rollouts as history.

``list`` and ``history`` only read; ``delete`` never removes an update with
a server in flight; ``undo`` builds (and plans) new updates like any other.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agent_update.cli.exits import CliError, Exit
from agent_update.cli.output import dump, update_json
from agent_update.rollout import history, rules, words
from agent_update.rollout.model import UpdateStatus
from agent_update.service import Service


def when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else ""


def cmd_list(service: Service, args: argparse.Namespace) -> int:
    updates = service.store.list_updates(args.status or (), args.limit)  # type: ignore[attr-defined]
    if args.json:
        dump([_summary(service, u) for u in updates])
        return Exit.OK
    if not updates:
        print("no updates" + (f" with status {', '.join(args.status)}" if args.status else ""))
        return Exit.OK
    print(f"{'update':<16} {'status':<16} {'commit':<12} {'servers':>7}  {'started':<19}  ended")
    for update in updates:
        data = _summary(service, update)
        print(
            f"{update.name:<16} {update.status.value:<16} {update.commit[:12]:<12} "
            f"{data['servers']:>7}  {when(update.started_at):<19}  {when(update.ended_at)}"
        )
    return Exit.OK


def _summary(service: Service, update: Any) -> dict[str, Any]:
    tally = service.store.tally(update.name, 0)
    data = update_json(update, [])
    data.pop("rows", None)
    data["servers"] = tally.total
    return data


def cmd_history(service: Service, args: argparse.Namespace) -> int:
    server = rules.same_name(service.store.list_servers(), args.server)
    name = server.name if server is not None else rules.normal_name(args.server)
    pairs = service.store.server_rows(name)  # type: ignore[attr-defined]
    if not pairs and server is None:
        raise CliError(f"no server named {args.server} and no update ever named it", Exit.NOT_FOUND)
    entries = history.sort_newest_first([history.entry(u, r) for u, r in pairs])
    if args.json:
        dump([e.as_dict() for e in entries])
        return Exit.OK
    if not entries:
        print(f"{name}: no update has named it yet")
        return Exit.OK
    print(
        f"{'update':<16} {'status':<12} {'from':<12} {'to':<12} {'runs':<12} {'ended':<19}  reason"
    )
    for e in entries:
        print(
            f"{e.update:<16} {e.status:<12} {e.before[:12] or '?':<12} {e.target[:12]:<12} "
            f"{e.after[:12] or '?':<12} {when(e.ended_at):<19}  {e.reason}"
        )
    return Exit.OK


def cmd_delete(service: Service, args: argparse.Namespace) -> int:
    service.delete(args.name, finished=args.finished)
    print(f"{args.name} deleted")
    return Exit.OK


def cmd_undo(service: Service, args: argparse.Namespace) -> int:
    made, left_out = service.undo(args.name)
    for server, why in left_out:
        print(f"left out {server}: {why}", file=sys.stderr)
    if args.json:
        dump([update_json(u, service.store.get_rows(u.name)) for u in made])
    else:
        for update in made:
            print(update.name)
    bad = [u for u in made if u.status is not UpdateStatus.PENDING]
    for update in made:
        count = len(service.store.get_rows(update.name))
        state = "planned" if update in bad else "planned, Pending"
        servers = words.count(count, "server")
        print(
            f"{update.name}: {servers} back to {update.commit[:12]} ({state}); "
            f"next: agent-update run {update.name}",
            file=sys.stderr,
        )
    return Exit.ENDED_BADLY if bad else Exit.OK


HISTORY_HANDLERS = {
    "list": cmd_list,
    "history": cmd_history,
    "delete": cmd_delete,
    "undo": cmd_undo,
}
