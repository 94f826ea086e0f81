"""Fixtures of the end-to-end tests: a copy of the shipped mappings, and the emulators served over TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mapsync.emulators.server import Emulator, Served, start_in_thread, write_config
from mapsync.engine.runner import Job, RunReport, load_job, run_job

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    return tmp_path


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
def live(project: Path) -> Iterator[Live]:
    emulator = Emulator(seed=7, contacts=120)
    served = start_in_thread(emulator)
    config = write_config(project / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                          state="sqlite:///.mapsync/e2e.sqlite", mappings="mappings")
    try:
        yield Live(emulator, served, config)
    finally:
        served.stop()
