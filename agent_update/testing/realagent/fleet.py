"""N loopback servers running the real frappe/agent, and what the engine needs to reach them.

``with RealAgentFleet(2) as fleet:`` builds the upstream from the tarball,
makes sure the wheelhouse exists, prepares and starts every host, and waits
until each answers /ping with every program RUNNING on commit A. ``stop()``
(also at exit) ends every process it started and removes users and files.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agent_update.rollout.model import EngineSettings, Server, Update
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service
from agent_update.testing import sshkeys
from agent_update.testing.realagent import cleanup, source, wheelhouse
from agent_update.testing.realagent.host import RealHost
from agent_update.testing.realagent.source import RealAgentError, RealCommits

T = TypeVar("T")


class RealAgentFleet:
    """Start with ``start()`` or as a context manager; ``stop()`` cleans up everything."""

    branch = "master"
    commits: RealCommits  # set by start()

    def __init__(self, size: int = 2, *, tarball: Path | None = None, keep_root: bool = False):
        if not 1 <= size <= 20:
            raise RealAgentError(f"size {size} must be within 1 … 20 (each host costs ~350 MB)")
        self.size = size
        self.tarball = tarball
        self.keep_root = keep_root
        self.tag = secrets.token_hex(3)
        self.root = Path()
        self.hosts: list[RealHost] = []
        self.upstream = Path()
        self.known_hosts = ""
        self.client_key = ""
        self.timings: dict[str, float] = {}
        self._state = "new"

    # -- life cycle -------------------------------------------------------

    def start(self) -> RealAgentFleet:
        if self._state != "new":
            raise RealAgentError(f"a fleet starts once (this one is {self._state})")
        self._state = "starting"
        atexit.register(self.stop)
        began = time.monotonic()
        try:
            self._build()
        except BaseException:
            self.keep_root = True  # the logs explain the failure
            self.stop()
            raise
        self._state = "started"
        self.timings["setup"] = time.monotonic() - began
        return self

    def _build(self) -> None:
        tarball = self.tarball
        if tarball is None:
            tarball, why = source.locate()
            if tarball is None:
                raise RealAgentError(why)
        self.timings["swept"] = len(cleanup.sweep_stale())  # runs whose owner was killed
        self.root = Path(tempfile.mkdtemp(prefix=f"ra-{self.tag}-", dir=cleanup.RUNS_DIR))
        self.root.chmod(0o755)  # agent users read the upstream, wheels and shims below
        began = time.monotonic()
        requirements = self.root / "requirements.txt"
        with tarfile.open(tarball) as archive:
            member = archive.extractfile("agent/requirements.txt")
            if member is None:
                raise RealAgentError(f"{tarball}: no agent/requirements.txt")
            requirements.write_bytes(member.read())
        house = wheelhouse.ensure(requirements)
        golden = wheelhouse.golden_env(house, requirements)
        wheels = wheelhouse.share(house, self.root / "wheels")
        self.timings["wheelhouse"] = time.monotonic() - began
        self.upstream, self.commits = source.build_upstream(tarball, self.root)
        key = self.root / "client_key"
        public = sshkeys.generate(key, "agent_update real-agent client")
        self.client_key = key.read_text()
        self.hosts = [RealHost.plan(self.root, i + 1, self.tag) for i in range(self.size)]
        self._write_owner()
        began = time.monotonic()
        lines = self._each(
            lambda h: h.prepare(self.upstream, self.commits.a, wheels, golden, public)
        )
        self.known_hosts = "\n".join(lines) + "\n"
        (self.root / "known_hosts").write_text(self.known_hosts)
        self.timings["prepare"] = time.monotonic() - began
        began = time.monotonic()
        self._each(RealHost.launch)
        self._write_owner()
        self._each(lambda h: h.wait_healthy(90, self.commits.a))
        self.timings["launch"] = time.monotonic() - began

    def _write_owner(self) -> None:
        daemons = [p.pid for h in self.hosts for p in (h.sshd_proc, h.sup_proc) if p is not None]
        cleanup.write_owner(
            self.root, [h.user for h in self.hosts], [h.sudoers_file for h in self.hosts], daemons
        )

    def _each(self, action: Callable[[RealHost], T]) -> list[T]:
        with ThreadPoolExecutor(max_workers=max(1, len(self.hosts))) as pool:
            return list(pool.map(action, self.hosts))

    def stop(self) -> None:
        """End every process started (by pid), delete the users, sudoers files and root."""
        if self._state == "stopped":
            return
        self._state = "stopped"
        atexit.unregister(self.stop)
        began = time.monotonic()
        errors = []

        def stop(host: RealHost) -> None:
            try:
                host.stop()
            except Exception as error:  # one host's trouble must not leave the others running
                errors.append(f"{host.name}: {error}")

        if self.hosts:
            self._each(stop)
        if self.root != Path() and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)
        self.timings["stop"] = time.monotonic() - began
        if errors:
            raise RealAgentError("stop: " + "; ".join(errors))

    def __enter__(self) -> RealAgentFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pids(self) -> set[int]:
        """Every live process of this run: daemons, programs, and anything its users run."""
        return set().union(set(), *(host.live_pids() for host in self.hosts))

    def leftovers(self) -> list[str]:
        """What ``stop()`` should have removed and did not (empty when all is clean)."""
        found = [f"user {h.user}" for h in self.hosts if cleanup.pwd_entry(h.user) is not None]
        found += [str(h.sudoers_file) for h in self.hosts if h.sudoers_file.exists()]
        if not self.keep_root and self.root != Path() and self.root.exists():
            found.append(str(self.root))
        return found

    def reset(self, commit: str | None = None) -> None:
        """Every host back on ``commit`` (default A), healthy; cheap when already so."""
        target = commit or self.commits.a
        self._each(lambda host: host.reset(target))

    # -- what the engine needs --------------------------------------------

    def server(self, host: RealHost, ssh_as: str = "agent") -> Server:
        """A registry entry; ``ssh_as`` "root" logs in as root, "agent" as the agent's user."""
        if ssh_as not in ("root", "agent"):
            raise RealAgentError(f"ssh_as must be 'root' or 'agent', not {ssh_as!r}")
        return Server(
            name=host.name,
            host=host.address,
            ssh_port=host.ssh_port,
            ssh_user="root" if ssh_as == "root" else host.user,
            agent_dir=str(host.agent_dir),
            agent_url=host.agent_url,
            agent_password=host.password,
            agent_user=host.user,
        )

    def settings(self, workdir: Path, **overrides: object) -> EngineSettings:
        """Default settings, but trusting exactly these host keys and this upstream."""
        values: dict[str, object] = {
            "ssh_private_key": self.client_key,
            "known_hosts": self.known_hosts,
            "git_cache_dir": str(workdir / "git-cache"),
            "default_repo": str(self.upstream),
            "default_branch": self.branch,
        }
        values.update(overrides)
        return EngineSettings(**values)  # type: ignore[arg-type]

    def service(
        self,
        workdir: Path,
        ssh_as: list[str] | str = "agent",
        *,
        settings: EngineSettings | None = None,
        **kwargs: object,
    ) -> Service:
        """A Service over a fresh SQLite store listing every host (``ssh_as`` per host)."""
        workdir.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(workdir / "store.db")
        logins = [ssh_as] * len(self.hosts) if isinstance(ssh_as, str) else ssh_as
        for host, login in zip(self.hosts, logins, strict=True):
            store.save_server(self.server(host, login))
        return Service(store, settings or self.settings(workdir), **kwargs)  # type: ignore[arg-type]


def real_update(commit: str, **overrides: object) -> Update:
    """An Update with the engine's default timeouts unless a test says otherwise."""
    return Update(commit=commit, **overrides)  # type: ignore[arg-type]
