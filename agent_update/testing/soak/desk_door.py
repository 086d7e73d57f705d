"""Rollouts through the desk's door: a Frappe site of the soak's own, its RQ workers.

The soak's second front door (``--desk``). A site on a private MariaDB and
Redis (testing/desk_site.py) gets a part of the fleet as Agent Servers of
its own; its rollouts are created, planned, started and their buttons
pressed through ``desk_rpc``, as the desk's buttons do (jobs for the
workers), and the watchdog tick runs every ``TICK_EVERY`` seconds as the
scheduler would. Its faults: the worker running a job killed with its work
horse (SIGKILL; a new worker replaces it), the site's Redis restarted (its
queued jobs are lost), its MariaDB restarted. The desk's hosts are its own
(two stores know nothing of each other's leases), so the CLI's rollouts
never draw them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_update.rollout.model import Row, Update, UpdateStatus
from agent_update.testing import desk_check
from agent_update.testing.desk_site import DeskClient, DeskRefused, DeskSite, DeskSiteError
from agent_update.testing.soak.driver import BUTTON_STATES, Rollout, RolloutBook, Shape
from agent_update.testing.soak.faults import COMMIT_FAULTS, FaultKind, Scheduler
from agent_update.testing.soak.invariants import Span

if TYPE_CHECKING:
    from agent_update.testing.fleet import Fleet

log = logging.getLogger(__name__)
PREFIX = "desk:"  # the desk's rollouts in the soak's tables (the CLI's store names its own)
TICK_EVERY = 5.0
CALL_RETRY = 90.0  # seconds a call is retried while the site's database or queue comes back


class DeskDoor(RolloutBook):
    def __init__(
        self,
        fleet: Fleet,
        hosts: list[str],
        root: Path,
        scheduler: Scheduler,
        bench: Path,
        shape: Shape,
        *,
        lease_ttl: float,
        workers: int,
    ) -> None:
        self.fleet, self.hosts, self.scheduler, self.shape = fleet, hosts, scheduler, shape
        self.rollouts: dict[str, Rollout] = {}  # by the soak's name: desk:<name>
        self.started: set[str] = set()
        self.began = time.time()
        self.tick_answered = 0.0  # when the watchdog tick last returned
        self.tick_failed = ""  # a tick still failing after its retries (a finding)
        self.ticking = threading.Event()  # set: the ticker stops
        self.ticker: threading.Thread | None = None  # started once the site is registered
        self.in_call: tuple[str, float] | None = None  # the loop's call under way, since when
        self.calls = 0
        self.site = DeskSite(bench, root)
        self.clients: list[DeskClient] = []
        try:
            self.site.create()
            self.site.start_workers(workers)
            self.client = self._client()  # the soak's loop
            self.eyes = self._client()  # the observer's thread
            settings = {**desk_check.settings_of(fleet), "lease_ttl": lease_ttl}
            chosen = [s for s in desk_check.servers_of(fleet) if s["server_name"] in set(hosts)]
            self.call("register", settings={**settings, "poll_interval": 0.5}, servers=chosen)
            # The scheduler's stand-in, in a thread and a process of its own: started after
            # register, whose first password field makes the site's encryption key.
            self.ticker_client = self._client()
            self.ticker = threading.Thread(target=self._tick_loop, name="desk-tick", daemon=True)
            self.ticker.start()
        except BaseException:
            self.stop()
            raise

    def _client(self) -> DeskClient:
        client = DeskClient(self.site)
        self.clients.append(client)
        return client

    # ------------------------------------------------------------------ calls
    def call(self, op: str, *args: Any, client: DeskClient | None = None, **kwargs: Any) -> Any:
        """A desk call, retried while the site's MariaDB or Redis restarts."""
        self.calls += 1
        if client is not None:
            return client.call(op, *args, retry_for=CALL_RETRY, **kwargs)
        self.in_call = (op, time.time())
        try:
            return self.client.call(op, *args, retry_for=CALL_RETRY, **kwargs)
        finally:
            self.in_call = None

    @staticmethod
    def own(name: str) -> str:
        return name[len(PREFIX) :]

    # --------------------------------------------------------------- rollouts
    def create(self, now: float) -> tuple[Rollout, FaultKind | None]:
        rng = self.scheduler.rng
        kind, commit, hosts = self.draw("soak-desk")
        deadline = now + rng.uniform(*self.shape.deadline)
        name = self.call(
            "create",
            servers=hosts,
            deadline_at=deadline,
            commit_hash=commit,
            lanes=rng.randint(1, 2),
            agent_startup_timeout_minutes=0.25,
            command_timeout_minutes=1,
            failed_command_grace=4,
            min_healthy_time=1,
        )
        rollout = Rollout(PREFIX + name, kind, commit, hosts, deadline)
        self.rollouts[rollout.name] = rollout
        rollout.plan_tries = 1
        self.call("act", "build_plan", name)
        return rollout, COMMIT_FAULTS.get(kind)

    def step(self, now: float) -> None:
        """Read each rollout's status; Start one once planned (again if the plan stuck).
        A watchdog tick that failed for good (its own thread) is raised here."""
        for rollout in self.unfinished():
            rollout.status = self.call("store", "get_update", self.own(rollout.name)).status
            if rollout.status is not UpdateStatus.PAUSED:
                rollout.operator_paused = False
            if rollout.status is UpdateStatus.PENDING and rollout.name not in self.started:
                rollout.planned = True
                self.started.add(rollout.name)
                try:
                    self.call("act", "start", self.own(rollout.name))
                except DeskRefused as exc:  # e.g. started meanwhile: as the desk says
                    log.info("%s: Start refused: %s", rollout.name, exc)
            elif rollout.status is UpdateStatus.DRAFT and not rollout.planned:
                self._replan(rollout, now)
        if self.tick_failed:
            raise DeskSiteError(self.tick_failed)

    def _tick_loop(self) -> None:
        """The watchdog every TICK_EVERY seconds, as the scheduler runs it: apart from the
        buttons, so a slow or refused call never holds it back."""
        while not self.ticking.wait(TICK_EVERY):
            try:
                self.call("tick", client=self.ticker_client)
            except DeskSiteError as exc:
                if not self.ticking.is_set():
                    self.tick_failed = f"the watchdog tick failed for good: {exc}"
                return
            self.tick_answered = time.time()

    def _replan(self, rollout: Rollout, now: float) -> None:
        """A plan stuck on a host down (a fault) is tried again later, three times at most."""
        if rollout.next_plan_at is None:
            rollout.next_plan_at = now + self.scheduler.rng.uniform(5.0, 15.0)
        elif now >= rollout.next_plan_at:
            rollout.next_plan_at = None
            if rollout.plan_tries >= 3:
                rollout.dropped = True  # left Draft: not a rollout
                return
            rollout.plan_tries += 1
            with contextlib.suppress(DeskSiteError):  # still planning: asked again later
                self.call("act", "build_plan", self.own(rollout.name))

    def press(self, kind: FaultKind) -> str:
        """A button on a desk rollout where it makes sense; "" when none does."""
        wanted = BUTTON_STATES[kind]
        choices = [r for r in self.rollouts.values() if r.planned and r.status in wanted]
        if not choices:
            return ""
        rollout = self.scheduler.rng.choice(choices)
        name = self.own(rollout.name)
        if kind is not FaultKind.PAUSE:  # it may run again, past its deadline too
            rollout.acted_at = time.time()
        try:
            if kind is FaultKind.PAUSE:
                self.call("act", "pause", name)
                rollout.operator_paused = True
            elif kind is FaultKind.RESUME:
                self.call("act", "resume", name)
            elif kind is FaultKind.FORCE_CONTINUE:
                self.call("act", "force_continue", name)
            else:
                rollback = kind is FaultKind.ABORT_ROLLBACK
                self.call("act", "abort", name, rollback=rollback, reason="soak: an operator")
        except DeskSiteError as exc:  # refused in the state it has by now: as the desk says
            return f"{rollout.name} ({rollout.status.value}; refused: {str(exc)[-120:]})"
        return f"{rollout.name} ({rollout.status.value})"

    def wind_down(self) -> None:
        for rollout in self.unfinished():
            if rollout.status is UpdateStatus.PAUSED:
                with contextlib.suppress(DeskSiteError):
                    self.call("act", "resume", self.own(rollout.name))

    # ----------------------------------------------------------------- faults
    def kill_worker(self) -> str:
        """The worker running a job (or any, when none runs one) and its job: SIGKILL."""
        live = self.site.live_workers()
        if not live:
            return ""
        busy = self.site.busy_worker()
        worker, horse = busy or (self.scheduler.rng.choice(live), None)
        self.site.kill_worker(worker, horse)
        return f"worker pid {worker.pid}" + (f", job pid {horse}" if horse else " (idle)")

    def restart(self, service: str) -> str:
        target = self.site.redis if service == "redis" else self.site.db
        target.restart()
        return f"{service} port {target.port}"

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> tuple[dict[str, Update], dict[str, list[Row]]]:
        """For the observer (its own client): every desk rollout and its rows."""
        names = [self.own(n) for n in list(self.rollouts)]
        found = self.call("snapshot", names, client=self.eyes) if names else {}
        updates = {PREFIX + n: u for n, (u, _) in found.items()}
        rows = {PREFIX + n: r for n, (_, r) in found.items()}
        return updates, rows

    def spans(self) -> list[Span]:
        """The watchdog is the desk's runner of every rollout, all along."""
        return [Span(name, self.began, None) for name in self.rollouts]

    def state(self, now: float) -> str:
        """The desk loop's last tick and the call it waits on (a violation's context)."""
        tick = f"{now - self.tick_answered:.0f}s ago" if self.tick_answered else "never"
        pending = self.in_call
        call = f"; waiting {now - pending[1]:.0f}s on {pending[0]!r}" if pending else ""
        live = len(self.site.live_workers())
        return f"desk: last tick answered {tick}{call}; {live} workers alive"

    def explain(self, update: str, host: str) -> list[str]:
        """A violation's desk rows (status, lease, reason, log tail), as the CLI's are told:
        its rollout's, or for a host's violation every desk rollout's rows on that host."""
        if update.startswith(PREFIX):
            names = [self.own(update)]
        elif not update and host in self.hosts:
            names = [self.own(n) for n in self.rollouts]
        else:
            return []
        try:
            found = self.call("snapshot", names, client=self.eyes)
        except DeskSiteError as exc:
            return [f"  {update}: the site did not answer: {exc}"]
        lines = []
        for own, (stored, rows) in found.items():
            for row in rows:
                if (host and row.server != host) or (not update and not row.started_at):
                    continue  # a host's violation: the rows that touched it
                lines.append(
                    f"  {PREFIX}{own} ({stored.status.value}) #{row.idx} {row.server} "
                    f"{row.status.value}/{row.step.value} lease={row.lease_owner or '-'} "
                    f"until={row.lease_expires} reason={row.reason!r}"
                )
                lines += [f"      | {line}" for line in row.log.splitlines()[-25:]]
        return lines

    def leftovers(self) -> dict[str, list[str]]:
        return {k: v for k, v in self.call("leftovers", client=self.eyes).items() if v}

    def stop(self) -> None:
        self.ticking.set()
        if self.ticker is not None:
            self.ticker.join(CALL_RETRY + 130)
        for client in self.clients:
            client.close()
        self.site.stop()
