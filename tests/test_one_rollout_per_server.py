"""Two rollouts racing over the same servers on the real loopback fleet.

Each host logs when an update command starts and ends (the template wraps
the default one), so overlap is judged on the host itself. The old code ran
both rollouts' commands on a host at once; now the second waits.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from agent_update.remote.script import DEFAULT_UPDATE_TEMPLATE
from agent_update.rollout.model import Row, RowStatus, UpdateStatus
from agent_update.rollout.store import SqliteStore
from agent_update.service import Service
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update

pytestmark = pytest.mark.fleet

HOSTS = 3
# Logs "start|end <epoch> <commit>" to a file on the host around the default command.
LOGGED_TEMPLATE = (
    'note() { echo "$$1 $$(date +%s.%N) $commit" >> $agent_dir/commands.log; }\n'
    "note start\n"
    "trap 'note end' EXIT\n" + DEFAULT_UPDATE_TEMPLATE
)


def host_commands(agent_dir: str) -> list[tuple[float, float, str]]:
    """(start, end, commit) of every command that ran on the host, by start time."""
    path = Path(agent_dir) / "commands.log"
    starts: dict[str, list[float]] = {}
    spans = []
    for line in path.read_text().splitlines() if path.exists() else []:
        what, at, commit = line.split()
        if what == "start":
            starts.setdefault(commit, []).append(float(at))
        else:
            spans.append((starts[commit].pop(0), float(at), commit))
    assert not any(starts.values()), f"a command never ended: {starts}"
    return sorted(spans)


def test_two_racing_rollouts_never_run_two_commands_on_one_host(fleet, tmp_path):
    fleet.reset()
    chosen = fleet.hosts[:HOSTS]
    for host in chosen:
        (Path(host.agent_dir) / "commands.log").unlink(missing_ok=True)
    settings = fleet_settings(fleet, tmp_path, update_command_template=LOGGED_TEMPLATE)
    waits: list[str] = []

    def listen(name: str, row: Row | None, update: object) -> None:
        if row is not None and row.reason.startswith("waiting: "):
            waits.append(row.reason)

    first = fleet_service(fleet, tmp_path / "db", settings=settings, listener=listen)
    for server in first.store.list_servers():
        if server.name not in {h.name for h in chosen}:
            first.store.save_server(replace(server, status="Archived"))
    # A second runner over the same database, as another process would be.
    second = Service(SqliteStore(tmp_path / "db" / "store.db"), settings, listener=listen)
    a = first.create(fleet_update(fleet.commits.good, lanes=HOSTS))
    b = second.create(fleet_update(fleet.commits.good2, lanes=HOSTS))
    assert first.build_plan(a.name).status is UpdateStatus.PENDING
    planned = second.build_plan(b.name)
    assert planned.status is UpdateStatus.PENDING
    assert planned.overlap_warning.startswith(f"servers also in other unfinished updates: {a.name}")

    try:
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def go(service: Service, name: str) -> None:
            barrier.wait(10)
            try:
                service.start(name)
                results[name] = service.drive(name, timeout=240)
            except BaseException as exc:  # surfaced below
                results[name] = exc

        threads = [
            threading.Thread(target=go, args=(first, a.name)),
            threading.Thread(target=go, args=(second, b.name)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(t.is_alive() for t in threads)
        for name in (a.name, b.name):
            final = results[name]
            assert not isinstance(final, BaseException), final
            assert final.status is UpdateStatus.SUCCESS, (name, first.store.get_rows(name))
        assert waits, "one rollout must have waited for the other"
        # A finished rollout holds no server: its overlap warning went with its end.
        assert first.store.get_update(a.name).overlap_warning == ""
        assert first.store.get_update(b.name).overlap_warning == ""

        names = (a.name, b.name)
        rows = {name: {r.server: r for r in first.store.get_rows(name)} for name in names}
        target = {a.name: fleet.commits.good, b.name: fleet.commits.good2}
        for host in chosen:
            spans = host_commands(host.agent_dir)
            assert len(spans) == 2, spans  # one command per rollout, none repeated
            (_, e1, c1), (s2, _, c2) = spans
            assert e1 <= s2, f"{host.name}: commands overlapped: {spans}"
            assert {c1, c2} == {fleet.commits.good, fleet.commits.good2}
            # Every final status matches the host: the last row verified what runs now.
            ended = sorted((rows[n][host.name] for n in names), key=lambda r: r.ended_at)
            last = ended[-1]
            last_update = next(n for n in names if rows[n][host.name] is last)
            assert last.status is RowStatus.SUCCESS
            assert target[last_update] == c2  # the later command is the later verdict
            assert fleet.running_commit(host) == c2 == fleet.reported_commit(host)
            assert fleet.checked_out_commit(host) == c2
            # The earlier row had ended before the later command began.
            assert ended[0].ended_at <= s2 + 0.05
        # Every lease was given back.
        assert first.store.server_holders([h.name for h in chosen], 0) == {}
    finally:
        fleet.reset()
