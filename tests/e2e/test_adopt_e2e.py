"""A state store that does not know what Campaign holds must not duplicate it.

The state file deleted, a new host with a new state path, the same configuration moved from SQLite to
PostgreSQL: each time the key map is empty while Campaign already has every profile and vehicle. mapsync
adopts them (one paged read of the target, no lookup per record) instead of creating them again, in every
mode, and the key map is rebuilt. On a later full read, a record the key map lost is looked up alone.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mapsync.engine.demo import verify
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live, counts, postgres_state_url
from tests.e2e.gateway import Gateway, is_lookup
from tests.e2e.holdings import duplicates, held
from tests.postgres_server import PostgresServer


def is_profile_read(method: str, path: str, query: str) -> bool:
    return method == "GET" and path.endswith("/profileAndServicesExt/profile")


def assert_key_map_rebuilt(live: Live) -> None:
    job = live.job()
    with open_store(job.env.state_url, password=job.env.state_password) as store:
        for flow, resource in (("contacts", "profile"), ("vehicles", "cusVehicle")):
            entries = {e.source_key: e.target_id for e in store.iter_keys(flow) if not e.deleted}
            assert entries == {k: pkeys[0] for k, pkeys in held(live.emulator, resource).items()}, flow


def rerun_on_an_empty_key_map(live: Live) -> Gateway:
    """The second run of every state-loss case, through a gateway that counts its requests."""
    gateway = Gateway(live.emulator.app)
    report = live.run(transport=gateway.transport())
    assert report.errors == []
    assert counts(report, "contacts")["created"] == 0 and counts(report, "vehicles")["created"] == 0
    assert duplicates(live.emulator) == {}
    assert verify(live.job(), live.emulator) == []
    assert gateway.count(is_lookup) == 0  # one paged read of the target, not one lookup per record
    assert any("adopted, not created again" in note for r in report.flows for note in r.notes)
    assert_key_map_rebuilt(live)
    return gateway


def test_a_deleted_state_file_adopts_what_campaign_holds(live: Live) -> None:
    first = live.run()
    created = counts(first, "contacts")["created"]
    assert created > 50 and duplicates(live.emulator) == {}
    for leftover in (live.config.parent / ".mapsync").glob("e2e.sqlite*"):
        leftover.unlink()
    plan = live.run(dry_run=True)  # a plan on the empty store already shows what the run will do
    assert counts(plan, "contacts")["created"] == 0 and counts(plan, "contacts")["updated"] == created
    gateway = rerun_on_an_empty_key_map(live)
    pages = gateway.count(is_profile_read)
    assert 1 <= pages <= 2 + created // 1000  # the opt-out's read of the profiles, and the adoption's
    again = live.run()
    assert all(r.counts.written == 0 for r in again.flows)


@pytest.mark.parametrize("mode", ["upsert", "create", "mirror"])
def test_a_new_host_with_a_new_state_path_creates_nothing_in_any_mode(live: Live, mode: str) -> None:
    mapping = live.config.parent / "mappings" / "contacts.map"
    mapping.write_text(mapping.read_text().replace("  mode upsert\n", f"  mode {mode}\n"))
    live.run()
    live.config.write_text(live.config.read_text().replace(".mapsync/e2e.sqlite", "other-host/state.sqlite"))
    rerun_on_an_empty_key_map(live)


@pytest.mark.postgres
def test_moving_the_state_from_sqlite_to_postgresql_creates_nothing(
        live: Live, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    live.run()
    url = postgres_state_url(postgres_server, monkeypatch)
    live.config.write_text(live.config.read_text().replace("sqlite:///.mapsync/e2e.sqlite", url))
    assert live.job().env.state_url.startswith("postgresql://")
    rerun_on_an_empty_key_map(live)


def test_a_full_read_looks_up_the_records_the_key_map_lost(live: Live) -> None:
    live.run()
    job = live.job()
    with open_store(job.env.state_url) as store:
        lost = sorted(e.source_key for e in store.iter_keys("contacts"))[:5]
        store.delete_keys("contacts", lost)  # an old backup restored, say: the rest of the key map is right
    gateway = Gateway(live.emulator.app)
    report = live.run(full=True, transport=gateway.transport())
    c = counts(report, "contacts")
    assert c["created"] == 0 and c["updated"] == len(lost)
    assert gateway.count(is_lookup) == len(lost)  # only the records without an entry are looked up
    assert duplicates(live.emulator) == {} and verify(job, live.emulator) == []
    assert Counter(len(p) for p in held(live.emulator, "profile").values()) == Counter({1: c["read"] - c["filtered"]})


def test_a_full_read_after_the_delta_token_expired_looks_up_the_records_the_key_map_lost(live: Live) -> None:
    live.run()
    job = live.job()
    with open_store(job.env.state_url) as store:
        lost = sorted(e.source_key for e in store.iter_keys("contacts"))[-3:]
        store.delete_keys("contacts", lost)
    live.control("POST", "clock", {"advance_seconds": 8 * 86400})  # past the 7-day change-tracking retention
    gateway = Gateway(live.emulator.app)
    report = live.run(only=["contacts"], transport=gateway.transport())
    c = counts(report, "contacts")
    assert c["read"] > len(lost) and c["created"] == 0 and c["updated"] == len(lost)  # a full read, adoptions
    assert gateway.count(is_lookup) == len(lost)
    assert duplicates(live.emulator) == {}
