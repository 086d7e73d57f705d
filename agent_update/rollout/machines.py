"""One machine, one server: which registry entries reach the same machine.

Two entries reach one machine when their hosts resolve to a common address
and they have the same SSH port and the same agent directory (one host may
carry two agents in two directories, and a NAT address may forward two SSH
ports to two machines). Such Active entries are refused when saved (the CLI's
``server-add``/``server-set``, the Agent Server form); entries saved twice
before that rule still share one server lease: the lease is keyed by the
machine, named by the first (sorted) registry name of its entries.

The grouping is pure (addresses come from an injected ``resolve``);
``MachineIndex`` caches it for the runner, refreshed every ``REFRESH`` seconds
(the registry's distinct hosts resolved in parallel, outside the store's lock).
"""

from __future__ import annotations

import ipaddress
import logging
import posixpath
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent_update.rollout.model import Server

logger = logging.getLogger(__name__)
Resolve = Callable[[str], frozenset[str]]
#: Shares the registry's lease keys between processes: given the function that
#: computes them, returns them (computed, or as another process computed them
#: for the same registry). The desk's row jobs are short-lived processes that
#: would otherwise each list and resolve the whole registry (frappe_machines.py).
Memo = Callable[[Callable[[], dict[str, str]]], dict[str, str]]
REFRESH = 30.0  # seconds an index of the registry is reused by a runner


def literal(host: str) -> frozenset[str]:
    """No lookup: an IP address in its canonical form, a name lower-cased."""
    text = host.strip().lower().rstrip(".")
    try:
        return frozenset({str(ipaddress.ip_address(text))})
    except ValueError:
        return frozenset({text})


@dataclass(frozen=True)
class MachineId:
    """Where an entry leads: the host's addresses, the SSH port, the agent directory."""

    addresses: frozenset[str]
    ssh_port: int
    agent_dir: str

    def same(self, other: MachineId) -> bool:
        return (
            self.ssh_port == other.ssh_port
            and self.agent_dir == other.agent_dir
            and bool(self.addresses & other.addresses)
        )

    def describe(self) -> str:
        shown = ", ".join(sorted(self.addresses))
        return f"{shown}, SSH port {self.ssh_port}, {self.agent_dir}"


def machine_id(server: Server, resolve: Resolve = literal) -> MachineId:
    """The entry's machine; a host that does not resolve stands for itself."""
    found = resolve(server.host) or literal(server.host)
    agent_dir = posixpath.normpath(server.agent_dir.strip() or "/")
    return MachineId(frozenset(found), int(server.ssh_port), agent_dir)


def duplicate_of(
    server: Server, registry: Iterable[Server], resolve: Resolve = literal
) -> tuple[Server, MachineId] | None:
    """Another Active entry (by name) reaching the same machine as ``server``, or None.

    An entry that is not Active is no rival (nothing is rolled out to it), and
    one saved as not Active is not checked: that is how a duplicate is retired.
    """
    if server.status != "Active":
        return None
    mine = machine_id(server, resolve)
    for other in sorted(registry, key=lambda s: s.name):
        if other.status != "Active" or other.name == server.name:
            continue
        if machine_id(other, resolve).same(mine):
            return other, mine
    return None


def duplicate_message(server: Server, other: Server, where: MachineId) -> str:
    """One line naming the existing entry."""
    return (
        f"{server.name} reaches the same machine as server {other.name} ({where.describe()}); "
        f"one machine has one registry entry: change or use {other.name}"
    )


def lease_keys(servers: Iterable[Server], resolve: Resolve = literal) -> dict[str, str]:
    """Registry name -> the name its server lease is held under (its machine's first name)."""
    ids = {s.name: machine_id(s, resolve) for s in servers}
    by_place: dict[tuple[int, str], list[str]] = {}
    for name, mid in ids.items():
        by_place.setdefault((mid.ssh_port, mid.agent_dir), []).append(name)
    keys: dict[str, str] = {}
    for names in by_place.values():
        parent = {n: n for n in names}

        def root(n: str, parent: dict[str, str] = parent) -> str:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        owner: dict[str, str] = {}  # address -> a name reaching it
        for name in names:
            for address in ids[name].addresses:
                if address in owner:
                    a, b = root(owner[address]), root(name)
                    parent[max(a, b)] = min(a, b)
                else:
                    owner[address] = name
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(root(name), []).append(name)
        for members in groups.values():
            first = min(members)
            keys.update({n: first for n in members})
    return keys


class MachineIndex:
    """The runner's view of ``lease_keys`` over the registry, cached a little while."""

    def __init__(
        self,
        list_servers: Callable[[], list[Server]],
        resolve: Resolve = literal,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH,
        memo: Memo | None = None,
    ) -> None:
        self._list, self._resolve, self._clock, self._refresh = (
            list_servers,
            resolve,
            clock,
            refresh,
        )
        self._memo = memo
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}
        self._aliases: dict[str, list[str]] = {}
        self._at: float | None = None

    def _current(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        with self._lock:
            now = self._clock()
            if self._at is None or now - self._at >= self._refresh:
                try:
                    self._keys, self._aliases = self._index()
                except Exception:  # keep the last index; the next call tries again
                    logger.exception("one machine, one server: cannot index the registry")
                else:
                    self._at = now
            return self._keys, self._aliases

    def _lease_keys(self) -> dict[str, str]:
        servers = self._list()
        hosts = sorted({s.host for s in servers})
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as pool:
            found = dict(zip(hosts, pool.map(self._resolve, hosts), strict=True))
        return lease_keys(servers, found.__getitem__)

    def _index(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        keys = self._memo(self._lease_keys) if self._memo else self._lease_keys()
        aliases: dict[str, list[str]] = {}
        for name, key in sorted(keys.items()):
            aliases.setdefault(key, []).append(name)
        return keys, aliases

    def warm(self) -> None:
        """Refresh now if due, so no lookup happens later under the store's lock."""
        self._current()

    def key(self, server: str) -> str:
        """The name ``server``'s lease is held under (itself when alone or unknown)."""
        return self._current()[0].get(server, server)

    def aliases(self, server: str) -> list[str]:
        """Every registry name of ``server``'s machine, ``server`` included."""
        keys, aliases = self._current()
        names = aliases.get(keys.get(server, server), [])
        return names if server in names else [server, *names]
