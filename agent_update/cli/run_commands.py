"""`agent-update run`, `resume`, `force-continue`, `abort`, `approve`, `tick`: acting, then staying.

They act through the Service, then follow the rollout until it settles
(``cli.follow``) and exit with what it came to (``exits.rollout_exit``).
"""

from __future__ import annotations

import argparse
import sys

from agent_update.cli.exits import CliError, Exit, rollout_exit
from agent_update.cli.follow import (
    Abandoned,
    Follower,
    Interrupts,
    sleep_unless_interrupted,
    wait_for_rows,
)
from agent_update.cli.output import LiveView
from agent_update.cli.showing import show
from agent_update.rollout import approval, schedule
from agent_update.rollout.errors import tick_outcome
from agent_update.rollout.model import UpdateStatus
from agent_update.service import Service


def cmd_run(service: Service, args: argparse.Namespace) -> int:
    """run / resume / force-continue: act, then follow until the rollout settles."""
    name = args.name
    current = service.store.get_update(name)
    if args.command == "run":
        if current.status is UpdateStatus.DRAFT:
            raise CliError(f"{name} is Draft: run agent-update plan {name} first", Exit.REFUSED)
        if not args.now and not wait_for_start_time(service, name):
            return Exit.INTERRUPTED
        service.start_if_ready(name, resume=args.resume, user=args.user)
        after = service.store.get_update(name)
        if approval.waiting(after) and after.status is UpdateStatus.PENDING:
            print(
                f"{name}: {approval.note(after)}; approve with: "
                f"agent-update --user SOMEONE-ELSE approve {name}",
                file=sys.stderr,
            )
            return Exit.STOPPED_SHORT
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


def wait_for_start_time(service: Service, name: str) -> bool:
    """A Pending update scheduled for later: wait here until then (False: Ctrl-C)."""
    update = service.store.get_update(name)
    if update.status is not UpdateStatus.PENDING or update.start_at is None:
        return True
    if update.start_at <= service.clock():
        return True
    print(
        f"{name} is scheduled to start at {schedule.when(update.start_at)}; waiting for it "
        "(Ctrl-C leaves it scheduled: the watchdog tick starts it; --now starts it now)",
        file=sys.stderr,
    )
    interrupts = Interrupts()
    with interrupts.installed():
        while service.clock() < update.start_at:
            if sleep_unless_interrupted(interrupts, min(1.0, update.start_at - service.clock())):
                return False
            update = service.store.get_update(name)
            if update.status is not UpdateStatus.PENDING or update.start_at is None:
                break  # started by the watchdog, or rescheduled to now
    return True


def cmd_approve(service: Service, args: argparse.Namespace) -> int:
    update = service.approve(args.name, args.user)
    started = update.status is not UpdateStatus.PENDING
    then = "started" if started else "it starts when Start is pressed (or at its scheduled time)"
    print(f"{args.name} approved by {args.user}; {then}")
    return Exit.OK


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
    if final.status is UpdateStatus.PAUSED:
        why = f" ({final.pause_reason})" if final.pause_reason else ""
        print(f"paused{why}; go on with: agent-update resume {name}", file=sys.stderr)
    if args.command == "abort" and final.status is UpdateStatus.ABORTED:
        return Exit.OK  # what was asked
    if final.status is UpdateStatus.ABORTED:
        why = final.abort_reason or final.halt_reason or "aborted"
        print(f"{name} was aborted: {why}", file=sys.stderr)
    return rollout_exit(final)


def cmd_abort(service: Service, args: argparse.Namespace) -> int:
    """Abort, then stay while servers in flight (and any rollbacks) finish."""
    service.abort(args.name, rollback=args.rollback, reason=args.reason or "")
    return follow_and_report(service, args.name, args)


def cmd_tick(service: Service, args: argparse.Namespace) -> int:
    """Resume what dead runners left, and stay while those rows run; exit 1 when a
    rollout could not be resumed (the others were, and run to their end)."""
    touched, failure = tick_outcome(service.tick)
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
    if failure is not None:
        print(str(failure), file=sys.stderr)
        return Exit.FAILED
    stalled = service.stalls()
    for alert in stalled:
        print(f"STALLED {alert.message}")
    return Exit.STALLED if stalled else Exit.OK


RUN_HANDLERS = {
    "run": cmd_run,
    "resume": cmd_run,
    "force-continue": cmd_run,
    "abort": cmd_abort,
    "tick": cmd_tick,
    "approve": cmd_approve,
}
