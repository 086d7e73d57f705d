"""One machine, one server: two registry entries reaching one machine.

Such entries are refused when saved; entries saved twice before that rule
share one server lease, so two rollouts over the two names never have rows
in flight on the machine at once (the race runs on the loopback fleet).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from agent_update import cli
from agent_update.cli.exits import Exit
from agent_update.remote.resolve import addresses
from agent_update.remote.script import DEFAULT_UPDATE_TEMPLATE
from agent_update.rollout import machines
from agent_update.rollout.model import (
    IN_FLIGHT_ROW_STATUSES,
    Row,
    RowStatus,
    Server,
    UpdateStatus,
)
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update

# Logs "start|end <epoch> <commit>" on the host around the default command.
LOGGED_TEMPLATE = (
    'note() { echo "$$1 $$(date +%s.%N) $commit" >> $agent_dir/commands.log; }\n'
    "note start\n"
    "trap 'note end' EXIT\n" + DEFAULT_UPDATE_TEMPLATE
)


def host_commands(agent_dir: str) -> list[tuple[float, float, str]]:
    """(start, end, commit) of every command that ran on the host, by start time."""
    spans, starts = [], {}
    path = Path(agent_dir) / "commands.log"
    for line in path.read_text().splitlines() if path.exists() else []:
        what, at, commit = line.split()
        if what == "start":
            starts[commit] = float(at)
        else:
            spans.append((starts.pop(commit), float(at), commit))
    assert not starts, f"a command never ended: {starts}"
    return sorted(spans)


def entry(name: str, host: str, **kw: object) -> Server:
    return Server(name=name, host=host, agent_url=f"http://{host}:25052", **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- identity


def test_loopback_names_resolve_to_one_address() -> None:
    assert addresses("127.0.0.1") <= addresses("localhost")
    assert addresses("LocalHost") == addresses("localhost")
    assert addresses("127.0.0.2") == frozenset({"127.0.0.2"})
    assert addresses("no-such-host.invalid") == frozenset({"no-such-host.invalid"})


def test_same_address_port_and_directory_is_one_machine() -> None:
    registry = [
        entry("a", "127.0.0.1"),
        entry("b", "localhost"),  # the same address, spelled otherwise
        entry("c", "127.0.0.1", agent_dir="/home/frappe/agent2"),  # a second agent
        entry("d", "127.0.0.1", ssh_port=2222),  # another machine behind the same address
        entry("e", "127.0.0.3"),
        entry("f", "localhost", agent_dir="/home/frappe/agent/"),  # a trailing slash
    ]
    keys = machines.lease_keys(registry, addresses)
    assert keys == {"a": "a", "b": "a", "c": "c", "d": "d", "e": "e", "f": "a"}
    found = machines.duplicate_of(entry("z", "localhost"), registry, addresses)
    assert found is not None and found[0].name == "a"
    assert machines.duplicate_of(registry[0], registry[2:5], addresses) is None
    # An archived entry is no rival, and archiving is how a duplicate is retired.
    archived = [replace(registry[0], status="Archived")]
    assert machines.duplicate_of(registry[1], archived, addresses) is None
    assert machines.duplicate_of(replace(registry[1], status="Archived"), registry) is None


def test_the_index_names_every_alias_and_refreshes() -> None:
    registry = [entry("b", "127.0.0.5"), entry("a", "127.0.0.5")]
    now = [0.0]
    index = machines.MachineIndex(lambda: list(registry), addresses, lambda: now[0], refresh=30)
    assert index.key("b") == "a" and index.aliases("b") == ["a", "b"]
    assert index.key("unknown") == "unknown" and index.aliases("unknown") == ["unknown"]
    registry[1] = entry("a", "127.0.0.6")
    assert index.key("b") == "a"  # cached
    now[0] = 31.0
    assert index.key("b") == "b" and index.aliases("a") == ["a"]


def test_a_memo_lets_runners_share_one_index_of_the_registry() -> None:
    """What the desk's row jobs do (frappe_machines.shared_keys): the first computes,
    the others take its keys without listing or resolving the registry."""
    registry = [entry("b", "127.0.0.5"), entry("a", "127.0.0.5"), entry("c", "127.0.0.6")]
    listed: list[int] = []
    shared: dict[str, dict[str, str]] = {}

    def listing() -> list[Server]:
        listed.append(1)
        return list(registry)

    def memo(compute):
        if "keys" not in shared:
            shared["keys"] = compute()
        return shared["keys"]

    first, second = (machines.MachineIndex(listing, addresses, memo=memo) for _ in range(2))
    assert first.key("b") == "a" and len(listed) == 1
    assert second.key("b") == "a" and second.aliases("a") == ["a", "b"] and len(listed) == 1
    assert second.key("c") == "c"


# ---------------------------------------------------------------- the CLI


def call(*argv: str) -> int:
    try:
        return cli.run(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


def test_server_add_refuses_a_second_entry_for_one_machine(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENT_UPDATE_SETTINGS", raising=False)
    db = ("--db", str(tmp_path / "au.db"))
    url = ("--agent-url", "http://127.0.0.1:25052")
    assert call(*db, "init") == Exit.OK
    assert call(*db, "server-add", "web1", "--host", "127.0.0.1", *url) == Exit.OK
    capsys.readouterr()
    assert call(*db, "server-add", "web1b", "--host", "localhost", *url) == Exit.REFUSED
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("agent-update: host: web1b reaches the same machine as server web1 ")
    assert "127.0.0.1, SSH port 22, /home/frappe/agent" in err
    # Another agent directory or another SSH port is another machine.
    other_dir = ("--agent-dir", "/home/frappe/agent2")
    assert call(*db, "server-add", "web2", "--host", "localhost", *other_dir, *url) == Exit.OK
    assert call(*db, "server-add", "web3", "--host", "localhost", "--ssh-port", "2222", *url) == 0
    # Moving an entry onto a machine already listed is refused too.
    assert call(*db, "server-set", "web2", "--agent-dir", "/home/frappe/agent/") == Exit.REFUSED
    assert "same machine as server web1" in capsys.readouterr().err
    names = [s.name for s in SqliteStore(tmp_path / "au.db").list_servers()]
    assert names == ["web1", "web2", "web3"]


# ---------------------------------------------------------- the race (fleet)


@pytest.mark.fleet
def test_two_rollouts_over_two_names_of_one_machine_never_overlap(fleet, tmp_path):
    fleet.reset()
    host = fleet.hosts[0]
    (Path(host.agent_dir) / "commands.log").unlink(missing_ok=True)
    settings = fleet_settings(fleet, tmp_path, update_command_template=LOGGED_TEMPLATE)
    first = fleet_service(fleet, tmp_path / "db", settings=settings)
    for server in first.store.list_servers():
        if server.name != host.name:
            first.store.save_server(replace(server, status="Archived"))
    # Old data: a second name for the same machine, saved around the save check.
    alias = f"{host.name}-again"
    first.store.save_server(replace(first.store.get_server(host.name), name=alias))
    second = Service(SqliteStore(tmp_path / "db" / "store.db"), settings)
    a = first.create(fleet_update(fleet.commits.good))
    b = second.create(fleet_update(fleet.commits.good2))
    # Each rollout lists the machine under one of its names.
    first.store.replace_rows(a.name, [Row(idx=1, server=host.name, server_type="Server")])
    second.store.replace_rows(b.name, [Row(idx=1, server=alias, server_type="Server")])
    assert first.build_plan(a.name).status is UpdateStatus.PENDING
    assert second.build_plan(b.name).status is UpdateStatus.PENDING

    both: list[tuple[str, str]] = []  # moments with rows in flight in both updates
    samples: list[int] = []
    done = threading.Event()
    flight = tuple(s.value for s in IN_FLIGHT_ROW_STATUSES)

    def watch() -> None:
        db = sqlite3.connect(tmp_path / "db" / "store.db", timeout=30)
        try:
            while not done.is_set():
                found = dict(
                    db.execute(
                        "SELECT update_name, status FROM rows WHERE update_name IN (?, ?)",
                        [a.name, b.name],
                    ).fetchall()
                )
                samples.append(sum(status in flight for status in found.values()))
                if samples[-1] == 2:
                    both.append((found[a.name], found[b.name]))
                time.sleep(0.02)
        finally:
            db.close()

    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def go(service: Service, name: str) -> None:
        barrier.wait(10)
        try:
            service.start(name)
            results[name] = service.drive(name, timeout=240)
        except BaseException as exc:  # surfaced below
            results[name] = exc

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threads = [
        threading.Thread(target=go, args=(first, a.name)),
        threading.Thread(target=go, args=(second, b.name)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        done.set()
        watcher.join(10)
        assert not any(t.is_alive() for t in threads)
        for name in (a.name, b.name):
            final = results[name]
            assert not isinstance(final, BaseException), final
            assert final.status is UpdateStatus.SUCCESS, first.store.get_rows(name)
        assert not both, f"rows of both rollouts in flight on {host.name} at once: {both[:3]}"
        assert samples.count(1) > 10, "the watcher saw no row in flight"

        (row_a,) = first.store.get_rows(a.name)
        (row_b,) = first.store.get_rows(b.name)
        earlier, later = sorted((row_a, row_b), key=lambda r: r.started_at)
        assert earlier.ended_at <= later.started_at, (earlier, later)  # one after the other
        spans = host_commands(host.agent_dir)
        assert len(spans) == 2, spans
        (_, end1, c1), (start2, _, c2) = spans
        assert end1 <= start2, f"commands overlapped: {spans}"
        # Each row ended on what the host ran then; the later one on what it runs now.
        target = {a.name: fleet.commits.good, b.name: fleet.commits.good2}
        later_update = a.name if later is row_a else b.name
        assert later.status is RowStatus.SUCCESS and earlier.status is RowStatus.SUCCESS
        assert c2 == target[later_update] == later.reported_commit
        assert c1 == earlier.reported_commit
        assert fleet.running_commit(host) == c2 == fleet.reported_commit(host)
        assert fleet.checked_out_commit(host) == c2
        assert first.store.server_holders([host.name, alias], 0) == {}  # the lease was given back
    finally:
        done.set()
        fleet.reset()


def test_an_index_that_cannot_be_read_keeps_the_last_one(caplog) -> None:
    registry = [entry("b", "127.0.0.5"), entry("a", "127.0.0.5")]
    now = [0.0]

    def listing() -> list[Server]:
        if now[0] > 0:
            raise RuntimeError("database gone")
        return list(registry)

    index = machines.MachineIndex(listing, addresses, lambda: now[0], refresh=30)
    assert index.key("b") == "a"
    now[0] = 31.0
    assert index.key("b") == "a" and "cannot index the registry" in caplog.text
