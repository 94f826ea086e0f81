"""Fixtures of the end-to-end tests: a copy of the shipped mappings, and the emulators served over TLS.

``live`` keeps its state in SQLite; a test parametrised with ``@pytest.mark.parametrize("state_kind",
BOTH_STATES, indirect=True)`` runs once on SQLite and once on PostgreSQL (a fresh schema on the session's
throwaway server, its password given through ``${MAPSYNC_E2E_PG_PASSWORD}`` as a real config would).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mapsync.emulators.server import Emulator, Served, start_in_thread, write_config
from mapsync.engine.runner import Job, RunReport, load_job, run_job
from tests.paths import FIXTURE_MAPPINGS
from tests.postgres_server import PostgresServer, fresh_schema

ROOT = Path(__file__).resolve().parents[2]

# The two state stores, for `parametrize("state_kind", BOTH_STATES, indirect=True)`.
BOTH_STATES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PG_PASSWORD_VARIABLE = "MAPSYNC_E2E_PG_PASSWORD"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE_MAPPINGS, tmp_path / "mappings")
    return tmp_path


@contextmanager
def serving(*, seed: int, contacts: int) -> Iterator[tuple[Emulator, Served]]:
    """An emulator served over TLS on loopback while the block runs (for module-scoped fixtures)."""
    emulator = Emulator(seed=seed, contacts=contacts)
    served = start_in_thread(emulator)
    try:
        yield emulator, served
    finally:
        served.stop()


def counts(report: RunReport, flow: str) -> dict[str, int]:
    """One flow's counts in a run's report."""
    return next(r.counts.as_dict() for r in report.flows if r.flow == flow)


class Live:
    def __init__(self, emulator: Emulator, served: Served, config: Path) -> None:
        self.emulator = emulator
        self.served = served
        self.config = config

    def job(self) -> Job:
        return load_job(self.config, "emulator")

    def run(self, **kwargs: object) -> RunReport:
        return asyncio.run(run_job(self.job(), **kwargs))  # type: ignore[arg-type]

    def control(self, method: str, path: str, body: object = None) -> object:
        context = ssl.create_default_context(cafile=str(self.served.ca_file))
        with httpx.Client(base_url=self.served.base_url, verify=context, timeout=30) as c:
            resp = c.request(method, f"/_emulator/{path}", json=body)
            resp.raise_for_status()
            return resp.json() if resp.content else None


@pytest.fixture
def state_kind(request: pytest.FixtureRequest) -> str:
    """"sqlite" unless a test parametrises it (indirectly) with BOTH_STATES."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def state_url(state_kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The `state:` of the test's mapsync.yaml: a SQLite file in the project, or a fresh PostgreSQL schema."""
    if state_kind == "sqlite":
        return "sqlite:///.mapsync/e2e.sqlite"
    return postgres_state_url(request.getfixturevalue("postgres_server"), monkeypatch)


def postgres_state_url(server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `state:` URL of a fresh schema on ``server``, its password a ${VAR} set in the environment, as in
    production (subprocesses such as `mapsync run` inherit it)."""
    schema = fresh_schema(server)
    monkeypatch.setenv(PG_PASSWORD_VARIABLE, server.password.reveal())
    return (f"postgresql://{server.user}:${{{PG_PASSWORD_VARIABLE}}}@{server.host}:{server.port}/{server.database}"
            f"?options=-csearch_path%3D{schema}")


@pytest.fixture
def live(project: Path, state_url: str) -> Iterator[Live]:
    emulator = Emulator(seed=7, contacts=120)
    served = start_in_thread(emulator)
    config = write_config(project / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                          state=state_url, mappings="mappings")
    try:
        yield Live(emulator, served, config)
    finally:
        served.stop()
