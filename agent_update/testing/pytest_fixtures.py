"""pytest fixtures over the fleet, for this package's tests and anyone else's.

In a conftest.py::

    from agent_update.testing.pytest_fixtures import fleet_fixture, make_fleet_fixture
    fleet = fleet_fixture(3)            # one shared fleet per test run
    make_fleet = make_fleet_fixture()   # make_fleet(size, workers=…) per test

A shared fleet outlives each test: a test that moves hosts off ``base``
should call ``fleet.reset()`` when done (cheap when nothing changed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_update.testing.fleet import Fleet


def fleet_fixture(size: int = 3, *, scope: str = "session", workers: int = 1) -> Any:
    """A fixture yielding a started fleet of ``size`` hosts, stopped at the end of ``scope``."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def fleet() -> Iterator[Fleet]:
        with Fleet(size, workers=workers) as started:
            yield started

    return fleet


def make_fleet_fixture(scope: str = "function") -> Any:
    """A fixture yielding ``make(size, **kwargs) -> Fleet``; every fleet made is stopped after."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def make_fleet() -> Iterator[Callable[..., Fleet]]:
        made: list[Fleet] = []

        def make(size: int, **kwargs: Any) -> Fleet:
            fleet = Fleet(size, **kwargs)
            made.append(fleet)
            return fleet.start()

        try:
            yield make
        finally:
            for fleet in made:
                fleet.stop()

    return make_fleet


def print_figure(request: pytest.FixtureRequest, line: str, label: str = "real agent") -> None:
    """Print a measured figure even under -q: a passing test's captured output is never shown."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is None or reporter is None:
        print(f"[{label}] {line}")
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"[{label}] {line}")
