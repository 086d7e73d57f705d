"""Shared fixtures: ``fleet`` (4 loopback hosts, one per run) and ``make_fleet(size)``."""

from __future__ import annotations

import pytest
from hypothesis import settings

from agent_update.testing.pytest_fixtures import fleet_fixture, make_fleet_fixture

# Properties are checked, not timed: a shared machine may take longer than
# hypothesis's 200 ms per example (speed goals live in benchmarks/).
settings.register_profile("agent_update", deadline=None)
settings.load_profile("agent_update")

fleet = fleet_fixture(4)
make_fleet = make_fleet_fixture()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fleet: starts real processes on 127.0.0.N (seconds)")
    config.addinivalue_line(
        "markers", "soak: the short fault soak (minutes; deselect with -m 'not soak')"
    )
    config.addinivalue_line(
        "markers",
        "real_agent: the real frappe/agent on 127.0.9.N, as root (minutes; skipped without it)",
    )
