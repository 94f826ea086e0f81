"""Shared fixtures. Tests run against the real code and the in-process emulators; nothing of ours is mocked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.postgres_server import PostgresServer, running_server

ROOT = Path(__file__).resolve().parent.parent

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
settings.load_profile("ci" if __import__("os").environ.get("CI") else "default")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


def pytest_addoption(parser: pytest.Parser) -> None:
    # Golden files (tests/fixtures/**): `pytest --update-golden` rewrites them from the current output.
    parser.addoption("--update-golden", action="store_true", default=False, help="rewrite golden files")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session (skips when the machine has no server binary)."""
    yield from running_server()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `pytest -m postgres` must select every test that talks to the server, also one that forgot its mark.
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()) and item.get_closest_marker("postgres") is None:
            item.add_marker(pytest.mark.postgres)
