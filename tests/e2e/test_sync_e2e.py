"""The four use cases end to end: real connectors, real state store, emulators served over TLS on loopback.

Every test ends by comparing both emulated systems with what the mappings imply from the source data
(``mapsync.engine.demo.verify``): no record lost, none duplicated, nothing left over.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mapsync.dsl.runtime import Mapped
from mapsync.engine.auth import TokenCache
from mapsync.engine.demo import run_demo, verify
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live, counts


def test_demo_story_ends_in_the_expected_state(project: Path) -> None:
    result = run_demo(project, contacts=150, seed=3)
    assert result.mismatches == []
    first, second, third = result.runs
    assert counts(first, "contacts")["created"] > 100
    # the day in the life: one edit, one deactivation (on filtered: delete), one delete
    assert counts(second, "contacts")["updated"] == 1
    assert counts(second, "contacts")["deleted"] == 2
    assert sum(counts(second, f)["created"] for f in ("email_sends", "email_opens", "email_clicks")) > 50
    assert second.optouts[0].written_to_d365 == 1
    assert all(r.counts.written == 0 for r in third.flows)


def test_a_run_leaves_no_connection_open(live: Live) -> None:
    live.run()  # every service, Entra ID through MSAL's own session included
    for _ in range(100):  # the server thread sees closed connections a moment later
        if live.served.open_connections() == 0:
            break
        time.sleep(0.05)
    assert live.served.open_connections() == 0


def test_runs_sharing_a_token_cache_ask_entra_and_ims_once(live: Live) -> None:
    tokens = TokenCache()  # what `mapsync run --watch` keeps across its rounds
    live.run(tokens=tokens)
    first = live.emulator.counters()["requests"]
    live.run(tokens=tokens)
    second = live.emulator.counters()["requests"]
    assert second["dataverse"] > first["dataverse"] and second["campaign"] > first["campaign"]  # it did run
    assert (second["entra"], second["ims"]) == (first["entra"], first["ims"])


def test_contacts_edits_deletes_and_filter_changes(live: Live) -> None:
    live.run()
    store = live.emulator.dataverse.store
    flow = live.job().flows["contacts"]
    synced = [r for r in store.rows("contact") if isinstance(flow.evaluate(r), Mapped)]
    inactive = next(r for r in store.rows("contact") if r.get("statecode") == 1 and r.get("emailaddress1"))
    live.control("PATCH", f"d365/contact/{synced[0]['contactid']}", {"firstname": "Zoë"})
    live.control("PATCH", f"d365/contact/{inactive['contactid']}", {"statecode": 0, "statuscode": 1})
    live.control("DELETE", f"d365/contact/{synced[1]['contactid']}")
    report = live.run()
    c = counts(report, "contacts")
    assert (c["updated"], c["created"], c["deleted"]) == (1, 1, 1)
    assert verify(live.job(), live.emulator) == []
    again = live.run()
    assert counts(again, "contacts")["read"] == 0


def test_replay_resyncs_without_duplicates(live: Live) -> None:
    live.run()
    report = live.run(replay=["contacts"])
    c = counts(report, "contacts")
    assert c["created"] == 0 and c["updated"] > 0  # the key map was forgotten: records are found and adopted
    assert verify(live.job(), live.emulator) == []  # ... not duplicated


def test_events_replay_makes_no_duplicate_activities(live: Live) -> None:
    live.run()
    live.control("POST", "campaign/deliveries", {"label": "Spring", "campaign": "Q2"})
    first = live.run()
    created = counts(first, "email_sends")["created"]
    assert created > 0
    live.run(replay=["email_sends"], only=["email_sends"])
    rows = list(live.emulator.dataverse.store.rows("acs_emailsend"))
    assert len(rows) == len({r["acs_eventid"] for r in rows}) == created
    assert verify(live.job(), live.emulator) == []


def test_a_second_runner_on_a_flow_is_refused_and_the_rest_runs(live: Live) -> None:
    job = live.job()
    with open_store(job.env.state_url) as store:
        # a live process (this one) holds the contacts lease on this host
        import socket

        store.acquire_lease("contacts", "emulator", f"{socket.gethostname()}:{os.getpid()}:other", 600)
    report = live.run()
    assert any("contacts" in e and "lease" in e.lower() for e in report.errors)
    assert next(r for r in report.flows if r.flow == "contacts").outcome == "skipped"
    assert counts(report, "vehicles")["read"] > 0


@pytest.mark.slow
def test_hostile_faults_lose_and_duplicate_nothing(project: Path) -> None:
    result = run_demo(project, contacts=60, seed=11, faults="hostile")
    assert result.mismatches == []


def test_killed_runs_resume_to_the_exact_state(live: Live) -> None:
    """SIGKILL `mapsync run` at 20 seeded points (before a write is sent, after the target acknowledged it but
    before the state store recorded it, after a page was recorded); the CRM keeps changing in between. After one
    clean run both systems hold exactly what the mappings say: nothing lost, nothing twice."""
    rng = random.Random(20261124)
    sites = ("before-write", "after-write", "after-ack")
    store = live.emulator.dataverse.store
    contacts = [r["contactid"] for r in store.rows("contact")]
    killed = attempts = 0
    while killed < 20:
        attempts += 1
        assert attempts <= 60, f"only {killed} of {attempts} runs reached their failpoint"
        if attempts % 2 == 0:  # new work for the incremental runs that follow: creates, updates, deletes, events
            for key in rng.sample(contacts, 4):
                live.control("PATCH", f"d365/contact/{key}", {"lastname": f"Crash{attempts}"})
            for n in range(3):
                live.control("POST", "d365/contact", {"firstname": "New", "lastname": f"Contact{attempts}-{n}",
                                                       "emailaddress1": f"new{attempts}.{n}@example.com",
                                                       "statecode": 0, "statuscode": 1})
            gone = rng.choice(contacts)
            contacts.remove(gone)
            live.control("DELETE", f"d365/contact/{gone}")
            live.control("POST", "campaign/deliveries", {"label": f"Run {attempts}", "campaign": "Crash"})
        # the first run (all creates) dies after Campaign acknowledged its first writes, unrecorded
        point = "after-write:1" if attempts == 1 else f"{rng.choice(sites)}:{rng.randint(1, 3)}"
        env = {**os.environ, "MAPSYNC_FAILPOINT": point}
        proc = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                               "emulator"], cwd=live.config.parent, env=env, capture_output=True, timeout=300)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
    final = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                            "emulator"], cwd=live.config.parent, capture_output=True, text=True, timeout=300)
    assert final.returncode in (0, 1), final.stderr  # 1: dead letters of records the seed makes invalid
    problems = verify(live.job(), live.emulator)
    assert problems == [], '\n'.join(problems)


def test_links_follow_a_profile_that_was_removed_and_made_again(live: Live) -> None:
    """Deactivating a vehicle's owner removes its profile (Campaign drops the vehicle's link); reactivating
    makes a new profile. The vehicle row never changed in Dynamics 365, yet its link must follow."""
    live.run()
    store = live.emulator.dataverse.store
    flow = live.job().flows["vehicles"]
    vehicle = next(v for v in store.rows("new_vehicle") if isinstance(flow.evaluate(v), Mapped)
                   and (store.get("contact", v["_new_contactid_value"]) or {}).get("statecode") == 0
                   and (store.get("contact", v["_new_contactid_value"]) or {}).get("emailaddress1"))
    owner = vehicle["_new_contactid_value"]
    live.control("PATCH", f"d365/contact/{owner}", {"statecode": 1, "statuscode": 2})
    live.run()
    live.control("PATCH", f"d365/contact/{owner}", {"statecode": 0, "statuscode": 1})
    report = live.run()
    assert counts(report, "vehicles")["updated"] >= 1
    assert verify(live.job(), live.emulator) == []


def test_mirror_mode_removes_what_a_full_read_no_longer_sees_within_max_deletes(live: Live) -> None:
    mapping = live.config.parent / "mappings" / "contacts.map"
    mapping.write_text(mapping.read_text().replace("  mode upsert\n", "  mode mirror\n  max deletes 2\n"))
    live.run(only=["contacts"], optouts=False)
    store = live.emulator.dataverse.store
    flow = live.job().flows["contacts"]
    synced = [r["contactid"] for r in store.rows("contact") if isinstance(flow.evaluate(r), Mapped)]

    def in_campaign(key: str) -> bool:
        return any(p.get("externalId") == key for _, p in live.emulator.adobe.store.rows_where("profile"))

    for key in synced[:3]:  # three gone: more than `max deletes 2`
        live.control("DELETE", f"d365/contact/{key}")
    refused = live.run(only=["contacts"], optouts=False, full=True)
    assert [r.outcome for r in refused.flows] == ["failed"]
    assert len(refused.errors) == 1 and "mirror mode would delete 3 of" in refused.errors[0]
    assert "more than `max deletes` allows (2); nothing was deleted" in refused.errors[0]
    assert all(in_campaign(k) for k in synced[:3])

    mapping.write_text(mapping.read_text().replace("max deletes 2", "max deletes 3"))
    report = live.run(only=["contacts"], optouts=False, full=True)
    assert counts(report, "contacts")["deleted"] == 3
    assert not any(in_campaign(k) for k in synced[:3]) and in_campaign(synced[3])
