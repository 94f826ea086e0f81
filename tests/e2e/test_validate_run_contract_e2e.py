"""validate = run: a project that validates clean plans and runs against the emulators without a configuration
or internal error. Generated from the fixture mappings by varying their clauses (an `optout` without `via`
among them)."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync.dsl import check, load_project
from mapsync.dsl.schema import load_catalog
from mapsync.emulators.server import Emulator, Served, write_config
from mapsync.engine.runner import load_job, run_job
from tests.e2e.conftest import serving
from tests.paths import FIXTURE_MAPPINGS, FIXTURE_SNAPSHOTS

CLAUSES = {
    "mode": ("upsert", "update", "create", "mirror"),
    "on delete": ("ignore", "delete"),
    "on filtered": ("ignore", "delete"),
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[Emulator, Served]]:
    with serving(seed=5, contacts=10) as pair:
        yield pair


def _flow_clauses(text: str, flow: str, choice: dict[str, str]) -> str:
    """``text`` with the clauses of ``flow`` set to ``choice`` (a clause the flow lacks is added)."""
    start = text.index(f"flow {flow} {{")
    end = text.index("\n  map {", start)
    head = text[start:end]
    for clause, value in choice.items():
        line = f"  {clause}{':' if clause.startswith('on ') else ''} {value}"
        pattern = re.compile(rf"^  {re.escape(clause)}:? .*$", re.M)
        head = pattern.sub(line, head) if pattern.search(head) else f"{head}\n{line}"
    return text[:start] + head + text[end:]


def _optout(direction: str | None, conflict: str | None, via: bool) -> str:
    lines = ["optout email {", "  d365.contact.donotbulkemail <-> campaign.profile.blackListEmail"]
    lines += [f"  direction {direction}"] if direction else []
    lines += [f"  conflict {conflict}"] if conflict else []
    lines += ["  via contacts"] if via else []
    return "\n".join([*lines, "}", ""])


projects = st.fixed_dictionaries({
    "contacts": st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CLAUSES.items()}),
    "vehicles": st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CLAUSES.items()}),
    "direction": st.none() | st.sampled_from(("d365-to-campaign", "campaign-to-d365", "both")),
    "conflict": st.none() | st.sampled_from(("latest-wins", "optout-wins", "d365-wins", "campaign-wins")),
    "via": st.booleans(),
})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(projects)
def test_a_project_that_validates_clean_runs_clean(emulator: tuple[Emulator, Served], choice: dict) -> None:
    emu, served = emulator
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(FIXTURE_MAPPINGS, folder / "mappings")
        for flow, file in (("contacts", "contacts.map"), ("vehicles", "vehicles.map")):
            path = folder / "mappings" / file
            path.write_text(_flow_clauses(path.read_text(encoding="utf-8"), flow, choice[flow]), encoding="utf-8")
        (folder / "mappings" / "optout.map").write_text(
            _optout(choice["direction"], choice["conflict"], choice["via"]), encoding="utf-8")
        project, diagnostics = load_project([folder / "mappings"])
        errors = [d for d in [*diagnostics, *check(project, load_catalog(FIXTURE_SNAPSHOTS))] if d.is_error]
        if errors:
            return  # what validate refuses, run need not take
        emu.reset()
        config = write_config(folder / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                              state="sqlite:///.mapsync/contract.sqlite", mappings="mappings")
        _deliver(served)
        job = load_job(config, "emulator")
        planned = asyncio.run(run_job(job, dry_run=True))
        assert not planned.errors and not planned.outages, planned.errors
        report = asyncio.run(run_job(job))
        assert not report.errors and not report.outages, report.errors
        assert all(r.outcome == "ok" for r in report.flows), [(r.flow, r.outcome) for r in report.flows]
        assert len(report.optouts) == 1 and report.optouts[0].failed == 0


def _deliver(served: Served) -> None:
    context = ssl.create_default_context(cafile=str(served.ca_file))
    with httpx.Client(base_url=served.base_url, verify=context, timeout=30) as client:
        client.request("POST", "/_emulator/campaign/deliveries", json={"label": "Contract", "campaign": "Q"}
                       ).raise_for_status()
