"""The loopback test fleet: N simulated servers on 127.0.0.2, 127.0.0.3, …

Each host has a real sshd, its own supervisord and a test agent checked out
from a shared local upstream, so the real update command runs over real SSH
and verification reads what really runs (docs/design.md §9, §11). Used by tests,
benchmarks and the demo; ``python -m agent_update.testing`` starts one by hand.

Run as root, the fleet is production-like (see host.py): each host's agent
runs as its own user (``fl<fleet id>h<N>``, removed at stop), who is the SSH
user; supervisord is root's with a root-only socket, reached with ``sudo
supervisorctl``. Not as root, everything runs as the current user, as before.
"""

from __future__ import annotations

import atexit
import json
import shutil
import stat
import subprocess
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import requests

from agent_update.testing import agentdir, ports, procs, sshd, sshkeys, supervise, users
from agent_update.testing.host import SimHost
from agent_update.testing.model import FleetCommits, FleetError, FleetHost
from agent_update.testing.upstream import Upstream

__all__ = ["Fleet", "FleetCommits", "FleetError", "FleetHost"]

T = TypeVar("T")
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL; supervisord's own is 3
HostRef = FleetHost | str


def _let_others_in(root: Path) -> None:
    """The agent users must reach the upstream and their host dirs under ``root``.

    ``root`` becomes 0755; an ancestor that others cannot traverse (a 0700
    temporary directory) gains only the traverse bit, never read.
    """
    root.chmod(0o755)
    for parent in root.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


class Fleet:
    """Start with ``start()`` or ``with Fleet(3) as fleet:``; ``stop()`` ends every process."""

    branch = "master"
    commits: FleetCommits  # set by start()

    def __init__(
        self,
        size: int,
        root: str | Path | None = None,
        workers: int = 1,
        *,
        start_timeout: float = 60.0,
        keep_root: bool = False,
        same_agent_port: bool = False,
    ) -> None:
        if not 1 <= size <= 253:
            raise FleetError(f"fleet size {size} must be within 1 … 253 (127.0.0.2 … .254)")
        if workers < 1:
            raise FleetError("a host needs at least one worker")
        self.size = size
        self.workers = workers
        self.start_timeout = start_timeout
        self.keep_root = keep_root
        # Every agent on one port (each host has its own address): for registries
        # that derive an agent's URL from the host, like Frappe Press's servers.
        self.same_agent_port = same_agent_port
        self.agent_port = 0
        self._own_root = root is None
        self.root = Path(root).resolve() if root is not None else Path()
        self.hosts: list[FleetHost] = []
        self.upstream_url = ""
        self.known_hosts = ""
        self.known_hosts_path = Path()
        self.client_key = ""
        self.client_key_path = Path()
        self.timings: dict[str, float] = {}
        self._sims: dict[str, SimHost] = {}
        self._upstream: Upstream | None = None
        self._state = "new"  # new → starting → started → stopped

    # -- life cycle ---------------------------------------------------------

    def start(self) -> Fleet:
        """Bring every host up; return once all answer /ping with every program RUNNING."""
        if self._state != "new":
            raise FleetError(f"a fleet starts once (this one is {self._state})")
        self._state = "starting"
        began = time.monotonic()
        atexit.register(self.stop)
        try:
            self._build()
            self._run_all(SimHost.launch)
            self._wait_all(self.start_timeout)
        except BaseException:
            self.keep_root = True  # the logs explain the failure
            self.stop()
            raise
        self._state = "started"
        self.timings["start"] = time.monotonic() - began
        return self

    def _build(self) -> None:
        if self._own_root:
            self.root = Path(tempfile.mkdtemp(prefix="fleet-", dir="/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        if any(self.root.iterdir()):
            raise FleetError(f"fleet root {self.root} must be empty (or not exist yet)")
        fleet_id = users.fleet_id() if users.production_like() else ""
        if fleet_id:
            users.sweep_stale()  # users of fleets killed before their stop
            _let_others_in(self.root)
        sshd.ensure_privsep_dir()
        self.client_key_path = self.root / "client_key"
        client_public = sshkeys.generate(self.client_key_path, "agent_update fleet client")
        self.client_key = self.client_key_path.read_text()
        self._upstream = Upstream(self.root)
        shas = self._upstream.create()
        self.commits = FleetCommits(**shas)
        self.upstream_url = str(self._upstream.bare)
        addresses = [f"127.0.0.{index + 2}" for index in range(self.size)]
        self.agent_port = ports.common_free_port(addresses) if self.same_agent_port else 0
        sims = [
            SimHost.plan(self.root, index + 2, self.workers, fleet_id, self.agent_port)
            for index in range(self.size)
        ]
        self._sims = {sim.spec.name: sim for sim in sims}
        self.hosts = [sim.spec for sim in sims]
        if fleet_id:
            for sim in sims:
                sim.create_user()
        template = self.root / "agent-repo"
        agentdir.clone_template(template, self._upstream.bare, shas["base"])
        bare = self._upstream.bare
        lines = self._run_all(lambda sim: sim.prepare(template, client_public, bare))
        self.known_hosts = "\n".join(lines) + "\n"
        self.known_hosts_path = self.root / "known_hosts"
        self.known_hosts_path.write_text(self.known_hosts)

    def _run_all(self, action: Callable[[SimHost], T]) -> list[T]:
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(self._sims)))) as pool:
            return list(pool.map(action, self._sims.values()))

    def _wait_all(self, timeout: float) -> None:
        """Poll hosts round-robin from one thread: 20 polling threads would starve startup."""
        deadline = time.monotonic() + timeout
        pending = dict(self._sims)
        problems: dict[str, str] = {}
        while pending:
            for name, sim in list(pending.items()):
                problem = sim.problem()
                if problem is None:
                    del pending[name]
                    continue
                problems[name] = problem
                if sim.hopeless:
                    raise FleetError(f"{name} failed to start: {problem} (logs: {sim.logs})")
            if pending and time.monotonic() >= deadline:
                detail = "; ".join(
                    f"{name}: {problems[name]} (logs: {pending[name].logs})" for name in pending
                )
                raise FleetError(f"fleet not up after {timeout:g} s: {detail}")
            if pending:
                time.sleep(0.15)

    def stop(self) -> None:
        """End every process this fleet started (TERM, then KILL) and wait for them."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopped"
        atexit.unregister(self.stop)
        began = time.monotonic()
        children = procs.children_map()
        watched = {name: sim.signal_stop(children) for name, sim in self._sims.items()}
        procs.wait_dead(set().union(set(), *watched.values()), timeout=STOP_GRACE)
        for name, sim in self._sims.items():
            sim.finish(watched[name])
        problems = [problem for sim in self._sims.values() if (problem := sim.remove_user())]
        if problems:
            print("loopback fleet: " + "; ".join(problems))
        if self._own_root and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)
        self.timings["stop"] = time.monotonic() - began

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- lookup ---------------------------------------------------------------

    def host(self, name_or_address: str) -> FleetHost:
        for spec in self.hosts:
            if name_or_address in (spec.name, spec.address):
                return spec
        raise FleetError(f"no host {name_or_address!r} in this fleet")

    def _sim(self, host: HostRef) -> SimHost:
        name = host.name if isinstance(host, FleetHost) else self.host(host).name
        return self._sims[name]

    def pids(self) -> set[int]:
        """Every live process the fleet started (sshd, supervisord, programs, below)."""
        children = procs.children_map()
        return set().union(set(), *(sim.pids(children) for sim in self._sims.values()))

    def log_paths(self, host: HostRef) -> str:
        return self._sim(host).logs

    # -- the agent's view -------------------------------------------------

    def version(self, host: HostRef) -> dict[str, Any]:
        """``GET /version`` with the host's password; FleetError when it does not answer."""
        sim = self._sim(host)
        try:
            answer = sim.get("/version")
            answer.raise_for_status()
            return answer.json()
        except (requests.RequestException, ValueError) as error:
            raise FleetError(
                f"{sim.spec.name}: /version failed: {error}; see {sim.logs}"
            ) from error

    def reported_commit(self, host: HostRef) -> str:
        """What the agent reports: the commit checked out now (not what runs)."""
        return str(self.version(host)["commit"])

    def running_commit(self, host: HostRef) -> str:
        """The commit the web process read when it started: what really runs."""
        return str(self.version(host)["started_commit"])

    def checked_out_commit(self, host: HostRef) -> str:
        """HEAD of the host's repo, read with git directly."""
        sim = self._sim(host)
        return agentdir.checked_out(Path(sim.spec.agent_dir), sim.owner)

    # -- supervisord, directly (not over SSH) -----------------------------

    def program_states(self, host: HostRef) -> dict[str, tuple[str, int | None]]:
        return self._sim(host).states()

    def _call(self, host: HostRef, method: str, *args: Any, ignore: tuple[int, ...] = ()) -> Any:
        sim = self._sim(host)
        try:
            return getattr(supervise.rpc(sim.sup_files).supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode in ignore:
                return None
            raise FleetError(f"{sim.spec.name}: {method}{args}: {fault.faultString}") from fault

    def stop_program(self, host: HostRef, program: str, timeout: float = 20) -> None:
        """Stop ``program`` (e.g. "agent:worker-0") and wait until it is down.

        Or until another process runs it: an update on the host may start it
        again at once, and supervisord's own wait (``stopProcess`` with wait)
        would then never answer.
        """
        _, before = self.program_states(host).get(program, ("", None))
        self._call(host, "stopProcess", program, False, ignore=(70,))  # 70: NOT_RUNNING
        deadline = time.monotonic() + timeout
        while True:
            state, pid = self.program_states(host).get(program, ("", None))
            if state not in ("RUNNING", "STOPPING") or pid != before:
                return
            if time.monotonic() > deadline:
                name = self._sim(host).spec.name
                raise FleetError(f"{name}: {program} still {state} {timeout:g} s after a stop")
            time.sleep(0.05)

    def start_program(self, host: HostRef, program: str) -> None:
        """Start ``program`` and wait until supervisord calls it RUNNING."""
        self._call(host, "startProcess", program, True, ignore=(60,))  # 60: ALREADY_STARTED

    def set_commit(
        self, host: HostRef, commit: str, *, wait: bool = True, timeout: float = 15
    ) -> None:
        """Check ``commit`` out and restart every agent program, as if updated.

        With ``wait`` (the default) return once the web process runs that
        commit and the host is healthy; a commit that cannot get there (crash,
        unhealthy) needs ``wait=False``.
        """
        sim = self._sim(host)
        agentdir.checkout(Path(sim.spec.agent_dir), commit, sim.owner)
        self._call(host, "stopProcessGroup", supervise.GROUP, True)
        self._call(host, "startProcessGroup", supervise.GROUP, False)
        if wait:
            self._wait_running(sim, commit, timeout)

    def move_checkout(self, host: HostRef, commit: str) -> None:
        """Check ``commit`` out and restart nothing: a half-done update's leftover."""
        sim = self._sim(host)
        agentdir.checkout(Path(sim.spec.agent_dir), commit, sim.owner)

    def _wait_running(self, sim: SimHost, commit: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            problem = sim.problem()
            if problem is None:
                try:
                    running = self.running_commit(sim.spec)
                except FleetError as error:
                    running = str(error)
                if running == commit:
                    return
                problem = f"web runs {running}, not {commit}"
            if time.monotonic() >= deadline:
                raise FleetError(f"{sim.spec.name}: {problem} after {timeout:g} s; see {sim.logs}")
            time.sleep(0.05)

    def wait_healthy(self, host: HostRef, timeout: float = 15) -> None:
        """Wait until /ping answers pong and every program is RUNNING."""
        self._sim(host).wait_healthy(timeout)

    def reset(self, commit: str | None = None) -> None:
        """Put every host back on ``commit`` (default base), healthy; cheap when already so."""
        target = commit or self.commits.base

        def fix(sim: SimHost) -> None:
            if sim.problem() is None and self.checked_out_commit(sim.spec) == target:
                try:
                    if self.running_commit(sim.spec) == target:
                        return
                except FleetError:
                    pass
            self.set_commit(sim.spec, target)

        self._run_all(fix)

    def sabotage(self, host: HostRef, commit: str) -> None:
        """Make ``commit`` crash on start on this host only (a server-specific fault)."""
        config = Path(self._sim(host).spec.agent_dir) / "config.json"
        data = json.loads(config.read_text())
        data["crash_commits"] = sorted({*data.get("crash_commits", ()), commit})
        config.write_text(json.dumps(data))

    def add_commit(self, marker: str, branch: str = "master", **behaviour: Any) -> str:
        """Push a new test-agent commit to ``branch`` (see testagent.DEFAULT_BEHAVIOUR)."""
        if self._upstream is None:
            raise FleetError("start the fleet before adding commits")
        return self._upstream.add_commit(marker, branch, **behaviour)

    # -- SSH ------------------------------------------------------------------

    def ssh_argv(self, host: HostRef, command: str) -> list[str]:
        """argv of the OpenSSH client running ``command`` on ``host`` with fleet keys only."""
        spec = self._sim(host).spec
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key_path),
            "-o",
            f"UserKnownHostsFile={self.known_hosts_path}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            str(spec.ssh_port),
            f"{spec.ssh_user}@{spec.address}",
            command,
        ]

    def ssh(
        self, host: HostRef, command: str, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` over real SSH; output captured as text."""
        return subprocess.run(
            self.ssh_argv(host, command),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
