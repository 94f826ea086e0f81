"""Engine fixtures: state stores of both kinds, on a fresh location each (PostgreSQL: the session's
throwaway server from ``tests/conftest.py``, one schema per test)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.engine.state import StateStore, open_store
from tests.postgres_server import PostgresServer, fresh_schema

StoreFactory = Callable[..., StateStore]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one fresh location of the parametrized kind; every store opened is closed after."""
    opened: list[StateStore] = []
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'stage.sqlite'}"
        password = None
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url, password = server.url(fresh_schema(server)), server.password

    def make(**options: Any) -> StateStore:
        if password is not None:
            options.setdefault("password", password)
        store = open_store(url, **options)
        opened.append(store)
        return store

    make.url = url  # type: ignore[attr-defined]
    make.kind = request.param  # type: ignore[attr-defined]
    make.password = password  # type: ignore[attr-defined]
    yield make
    for store in opened:
        with contextlib.suppress(Exception):  # a test may have closed it already
            store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> StateStore:
    return store_factory()
