"""Build Plan against real servers: one bad server never aborts the plan."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from agent_update.rollout.errors import TickError
from agent_update.rollout.model import RowStatus, UpdateStatus
from agent_update.testing.harness import fleet_service, fleet_settings, fleet_update

pytestmark = pytest.mark.fleet


def swap_host_key(known_hosts: str, victim: str, donor: str) -> str:
    """known_hosts where ``victim`` is listed with ``donor``'s key (a changed host key)."""
    lines = known_hosts.splitlines()
    donor_key = next(line.split(" ", 1)[1] for line in lines if line.startswith(f"[{donor}]"))
    return "\n".join(
        f"{line.split(' ', 1)[0]} {donor_key}" if line.startswith(f"[{victim}]") else line
        for line in lines
    )


def test_a_silent_agent_is_planned_and_a_wrong_host_key_stays_draft(fleet, tmp_path):
    """A down agent is what a repair is for; a changed host key is for an operator to check."""
    a, b, c = fleet.hosts[:3]
    settings = fleet_settings(
        fleet, tmp_path, known_hosts=swap_host_key(fleet.known_hosts, b.address, c.address)
    )
    service = fleet_service(fleet, tmp_path, settings=settings)
    dead = replace(service.store.get_server(a.name), agent_url="http://127.0.0.1:9")
    service.store.save_server(dead)
    for host in fleet.hosts[3:]:
        service.store.save_server(replace(service.store.get_server(host.name), status="Archived"))
    update = service.create(fleet_update(fleet.commits.good))
    planned = service.build_plan(update.name)
    rows = {r.server: r for r in service.store.get_rows(update.name)}
    assert planned.status is UpdateStatus.DRAFT
    assert rows[a.name].status is RowStatus.PENDING and "127.0.0.1:9" in rows[a.name].reason
    assert rows[a.name].reason.startswith("current commit unknown: agent: ")
    assert rows[a.name].current_commit == "" and rows[a.name].rollback_commit == ""
    assert rows[b.name].status is RowStatus.DRAFT and "host key" in rows[b.name].reason.lower()
    assert rows[c.name].status is RowStatus.PENDING
    assert rows[c.name].current_commit == fleet.reported_commit(c)
    assert a.name not in planned.why_stuck and b.name in planned.why_stuck
    assert c.name not in planned.why_stuck


def test_opted_out_skipped_and_a_dead_planner_is_redone(fleet, tmp_path):
    service = fleet_service(fleet, tmp_path)
    update = service.create(fleet_update(fleet.commits.good))
    first = service.store.get_rows(update.name)[0]
    server = service.store.get_server(first.server)
    service.store.save_server(replace(server, disable_agent_update=True))
    # A planner that died: Planning with an expired lease.
    stuck = service.store.get_update(update.name).copy(
        status=UpdateStatus.PLANNING, lease_owner="dead", lease_expires=1.0
    )
    service.store.save_update(stuck, ["status", "lease_owner", "lease_expires"])
    assert service.tick() == [update.name]
    planned = service.store.get_update(update.name)
    rows = service.store.get_rows(update.name)
    assert planned.status is UpdateStatus.PENDING
    assert rows[0].status is RowStatus.SKIPPED and "opted out" in rows[0].reason
    assert all(r.status is RowStatus.PENDING for r in rows[1:])


def test_a_rollout_the_tick_cannot_read_does_not_starve_the_others(fleet, tmp_path):
    """The watchdog goes on past a rollout it cannot resume, then says which and why."""
    service = fleet_service(fleet, tmp_path)
    broken, fine = (service.create(fleet_update(fleet.commits.good)) for _ in range(2))
    for update in (broken, fine):  # two planners that died
        stuck = service.store.get_update(update.name).copy(
            status=UpdateStatus.PLANNING, lease_owner="dead", lease_expires=1.0
        )
        service.store.save_update(stuck, ["status", "lease_owner", "lease_expires"])
    with sqlite3.connect(tmp_path / "store.db") as db:  # a value no reader accepts
        db.execute("UPDATE updates SET lanes='many' WHERE name=?", (broken.name,))
    with pytest.raises(TickError) as caught:
        service.tick()
    assert list(caught.value.failed) == [broken.name]
    assert caught.value.failed[broken.name].startswith("TypeError")  # what the rules hit
    assert broken.name in str(caught.value)
    assert caught.value.touched == [fine.name]
    assert service.store.get_update(fine.name).status is UpdateStatus.PENDING
    rows = service.store.get_rows(fine.name)
    assert rows
    for row in rows:
        assert row.current_commit == fleet.reported_commit(fleet.host(row.server))


def test_a_server_ssh_cannot_reach_is_planned_with_the_reason(fleet, tmp_path):
    """Its precheck judges it at its turn (it may be back by then)."""
    host = fleet.hosts[0]
    service = fleet_service(fleet, tmp_path)
    for server in service.store.list_servers():
        if server.name != host.name:
            service.store.save_server(replace(server, status="Archived"))
    service.store.save_server(replace(service.store.get_server(host.name), ssh_port=9))
    update = service.create(fleet_update(fleet.commits.good))
    planned = service.build_plan(update.name)
    (row,) = service.store.get_rows(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    assert row.status is RowStatus.PENDING
    assert row.reason.startswith("current commit unknown: ssh: "), row.reason
    assert "127.0.0.2:9" in row.reason or "refused" in row.reason.lower(), row.reason


def test_the_registry_is_read_again_at_each_rows_turn(fleet, tmp_path):
    """Opted out, set Broken or renamed after Build Plan: Skipped with why, nothing run."""
    service = fleet_service(fleet, tmp_path)
    opted, broken, renamed, kept = fleet.hosts[:4]
    for host in fleet.hosts[4:]:
        service.store.save_server(replace(service.store.get_server(host.name), status="Archived"))
    update = service.create(fleet_update(fleet.commits.good))
    planned = service.build_plan(update.name)
    assert planned.status is UpdateStatus.PENDING, planned.why_stuck
    get = service.store.get_server
    service.store.save_server(replace(get(opted.name), disable_agent_update=True))
    service.store.save_server(replace(get(broken.name), status="Broken"))
    service.store.save_server(replace(get(renamed.name), name=renamed.name + "-new"))
    with service.store._tx() as db:
        db.execute("DELETE FROM servers WHERE name=?", [renamed.name])
    service.start(update.name)
    final = service.drive(update.name, timeout=120)
    rows = {r.server: r for r in service.store.get_rows(update.name)}
    assert rows[opted.name].status is RowStatus.SKIPPED
    assert "disable_agent_update is set" in rows[opted.name].reason
    assert rows[broken.name].status is RowStatus.SKIPPED
    assert "status is Broken" in rows[broken.name].reason
    assert rows[renamed.name].status is RowStatus.SKIPPED
    assert "no longer in the server registry" in rows[renamed.name].reason
    for host in (opted, broken, renamed):
        assert fleet.reported_commit(host) == fleet.commits.base, host.name
        assert fleet.running_commit(host) == fleet.commits.base, host.name
    assert rows[kept.name].status is RowStatus.SUCCESS
    assert fleet.running_commit(kept) == fleet.commits.good
    assert final.status is UpdateStatus.SUCCESS
