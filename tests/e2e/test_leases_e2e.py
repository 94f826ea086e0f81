"""The whole run under the leases: two runners on one state store write each opt-out change once, and a
runner that leaves a flow to another one also leaves the flows and opt-out rules that depend on it."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from mapsync.engine.runner import RunReport, run_job
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live, counts, postgres_state_url
from tests.e2e.gateway import Gateway
from tests.e2e.holdings import held
from tests.postgres_server import PostgresServer


def is_profile_read(method: str, path: str, query: str) -> bool:
    return method == "GET" and path.endswith("/profileAndServicesExt/profile")


def test_a_runner_that_skips_a_held_flow_skips_what_depends_on_it(live: Live) -> None:
    live.run()
    pkey = next(iter(held(live.emulator, "profile").values()))[0]
    live.control("POST", f"campaign/profiles/{pkey}/opt-out", {"channel": "email"})
    job = live.job()
    with open_store(job.env.state_url) as store:  # a live runner (this process) holds the contacts flow
        store.acquire_lease("contacts", "emulator", f"{socket.gethostname()}:{os.getpid()}:other", 600)
    report = live.run()
    outcomes = {r.flow: r.outcome for r in report.flows}
    assert outcomes["contacts"] == outcomes["vehicles"] == "skipped"
    assert counts(report, "vehicles") == dict.fromkeys(counts(report, "vehicles"), 0)
    assert all(outcome == "ok" for flow, outcome in outcomes.items() if flow.startswith("email_"))
    assert report.optouts == []  # its pairs come from the contacts flow
    assert any(e.startswith("flow vehicles: skipped: it links to flow contacts, which another runner is running")
               for e in report.errors), report.errors
    assert any(e.startswith("optout email: skipped: its pairs come from flow contacts") for e in report.errors)


def two_runners(live: Live) -> tuple[RunReport, RunReport]:
    """Two runners at once on one state store, made to read Campaign's profiles at the same moment."""
    gateway = Gateway(live.emulator.app)
    gateway.rendezvous(is_profile_read)

    async def both() -> tuple[RunReport, RunReport]:
        first, second = await asyncio.gather(run_job(live.job(), transport=gateway.transport()),
                                             run_job(live.job(), transport=gateway.transport()))
        return first, second

    return asyncio.run(both())


def opt_out_ten_profiles(live: Live) -> None:
    contacts = {r["contactid"]: r for r in live.emulator.dataverse.store.rows("contact")}
    profiles = held(live.emulator, "profile")
    keys = [k for k in sorted(profiles) if not contacts[k].get("donotbulkemail")][:10]
    for key in keys:
        live.control("POST", f"campaign/profiles/{profiles[key][0]}/opt-out", {"channel": "email"})


def check_two_runners(live: Live) -> None:
    live.run()
    opt_out_ten_profiles(live)
    reports = two_runners(live)
    written = [o.written_to_d365 for r in reports for o in r.optouts]
    assert sum(written) == 10 and written in ([10], [10, 0], [0, 10]), written
    errors = [e for r in reports for e in r.errors]
    assert all("skipped" in e or "is being run by" in e for e in errors), errors  # only the leases said no
    if len(written) == 1:  # the other runner left the rule alone, and said so
        assert any(e.startswith("optout email: skipped") for e in errors), errors
    again = live.run()
    assert again.optouts[0].written_to_d365 == again.optouts[0].written_to_campaign == 0


def test_two_runners_write_each_opt_out_change_once(live: Live) -> None:
    check_two_runners(live)


@pytest.mark.postgres
def test_two_runners_on_postgresql_write_each_opt_out_change_once(
        live: Live, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres_state_url(postgres_server, monkeypatch)
    live.config.write_text(live.config.read_text().replace("sqlite:///.mapsync/e2e.sqlite", url))
    check_two_runners(live)
