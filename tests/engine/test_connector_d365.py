"""The Dataverse connector against the combined emulator in-process (httpx.ASGITransport), hostile faults on."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import httpx
import pytest

from mapsync.dsl.schema import DEFAULT_ROOT, load_catalog, render_table
from mapsync.emulators.server import Emulator
from mapsync.engine.config import D365Settings, Secret, ServiceLimits
from mapsync.engine.connectors.base import ChangeTrackingExpired, WriteOp
from mapsync.engine.connectors.d365 import ODATA_HEADERS, D365Connector
from mapsync.engine.http import AttemptRecord, HttpClient

BASE = "https://dataverse.test"


class EmulatorTokens:
    """TokenProvider taking tokens from the emulator's own Entra ID issuer (MSAL is tested in test_auth)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.current: str | None = None
        self.renewals = 0

    async def token(self, *, stale: str | None = None) -> str:
        if self.current is None or stale == self.current:
            self.renewals += stale is not None
            self.current, _ = self.emulator.dataverse.issuer.issue(self.emulator.credentials.d365_client_id,
                                                                    f"{BASE}/.default")
        return self.current


class VirtualTime:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def make(emulator: Emulator, *, concurrency: int = 8, batch_size: int = 100) -> tuple[D365Connector, list[AttemptRecord]]:
    settings = D365Settings(url=BASE, tenant_id=emulator.credentials.tenant_id,
                            client_id=emulator.credentials.d365_client_id, client_secret=Secret("unused"),
                            limits=ServiceLimits(concurrency=concurrency, max_retries=12, batch_size=batch_size))
    time = VirtualTime()
    records: list[AttemptRecord] = []
    http = HttpClient("d365", settings.limits, EmulatorTokens(emulator),
                      transport=httpx.ASGITransport(app=emulator.app), base_url=settings.api_base,
                      headers={k: v for k, v in ODATA_HEADERS.items() if k != "Content-Type"},
                      clock=time.now, sleep=time.sleep, observer=records.append)
    return D365Connector(settings, http, load_catalog(), sleep=time.sleep), records


def check_waits(records: list[AttemptRecord]) -> int:
    by_request: dict[int, list[AttemptRecord]] = {}
    for r in records:
        by_request.setdefault(r.request_no, []).append(r)
    n = 0
    for attempts in by_request.values():
        for before, after in itertools.pairwise(sorted(attempts, key=lambda r: r.attempt)):
            if before.status == 429:
                n += 1
                assert after.sent_at - before.sent_at >= (before.retry_after or 0) - 1e-9
    return n


@pytest.fixture(scope="module")
def big() -> Emulator:
    return Emulator(contacts=50_000, faults="none")


def test_read_50k_contacts_each_exactly_once_under_hostile_faults(big: Emulator) -> None:
    big.set_faults("hostile")
    conn, records = make(big)

    async def scenario() -> list[str]:
        ids: list[str] = []
        async for page in conn.read("contact", ["contactid", "fullname"], page_size=5000):
            ids.extend(r["contactid"] for r in page)
        await conn.http.aclose()
        return ids

    try:
        ids = asyncio.run(scenario())
    finally:
        big.set_faults("none")
    assert len(ids) == len(set(ids)) == big.dataverse.store.count("contact") == 50_000
    check_waits(records)


def test_10k_upserts_leave_exactly_the_expected_rows() -> None:
    emulator = Emulator(contacts=10, faults="hostile")
    conn, records = make(emulator, concurrency=6, batch_size=100)
    ids = [str(uuid.UUID(int=10**6 + i)) for i in range(10_000)]
    ops = [WriteOp("upsert", "contact", {"lastname": f"Up{i}", "emailaddress1": f"u{i}@example.com"},
                   target_id=ids[i], ref=i) for i in range(10_000)]

    async def scenario() -> None:
        outcomes = await conn.write(ops)
        failed = [o for o in outcomes if not o.ok]
        assert not failed, failed[:3]
        assert conn.http.limiter.max_in_flight <= 6
        await conn.http.aclose()

    asyncio.run(scenario())
    rows = {r["contactid"]: r for r in emulator.dataverse.store.rows("contact")}
    for i in range(0, 10_000, 97):
        assert rows[ids[i]]["lastname"] == f"Up{i}"
    assert set(ids) <= set(rows) and len(rows) == 10_010
    assert emulator.dataverse.protection.throttled["concurrency"] == 0
    assert sum(emulator.dataverse_faults.counts.values()) > 0
    check_waits(records)


def test_batch_outcomes_per_record_create_idempotency_and_delete() -> None:
    emulator = Emulator(contacts=5, faults="none")
    conn, _ = make(emulator)
    existing = next(iter(emulator.dataverse.store.rows("contact")))["contactid"]

    async def scenario() -> None:
        outcomes = await conn.write([
            WriteOp("update", "contact", {"lastname": "Renamed"}, target_id=existing, ref="upd"),
            WriteOp("update", "contact", {"lastname": "x"}, target_id=str(uuid.uuid4()), ref="missing"),
            WriteOp("upsert", "contact", {"lastname": "y" * 500}, target_id=str(uuid.uuid4()), ref="toolong"),
            WriteOp("create", "acs_emailopen", {"subject": "Opened"}, alternate_key=("acs_eventid", "ev-1"), ref="ev"),
            WriteOp("delete", "contact", target_id=str(uuid.uuid4()), ref="gone"),
        ])
        by_ref = {o.ref: o for o in outcomes}
        assert by_ref["upd"].ok and by_ref["upd"].target_id == existing
        assert not by_ref["missing"].ok and by_ref["missing"].status == 404 and not by_ref["missing"].transient
        assert not by_ref["toolong"].ok and by_ref["toolong"].status == 400 and by_ref["toolong"].code
        assert by_ref["ev"].ok and by_ref["ev"].target_id
        assert by_ref["gone"].ok  # 404 on delete = already deleted
        again = await conn.write([WriteOp("create", "acs_emailopen", {"subject": "Opened"},
                                          alternate_key=("acs_eventid", "ev-1"), ref="ev2")])
        assert again[0].ok and again[0].target_id == by_ref["ev"].target_id  # duplicate key -> the existing row
        await conn.http.aclose()

    asyncio.run(scenario())
    assert sum(1 for r in emulator.dataverse.store.rows("acs_emailopen") if r.get("acs_eventid") == "ev-1") == 1


def test_change_tracking_delta_and_expiry() -> None:
    emulator = Emulator(contacts=30, faults="none")
    conn, _ = make(emulator)

    async def scenario() -> None:
        link = None
        rows: list[dict[str, Any]] = []
        async for page in conn.read_changes("contact", ["contactid", "lastname"], page_size=7):
            rows.extend(page.rows)
            link = page.delta_link or link
        assert len(rows) == 30 and link
        victim = rows[0]["contactid"]
        changed = rows[1]["contactid"]
        await conn.write([WriteOp("delete", "contact", target_id=victim, ref=1),
                          WriteOp("update", "contact", {"lastname": "Changed"}, target_id=changed, ref=2)])
        pages = [p async for p in conn.read_changes("contact", ["contactid", "lastname"], link)]
        assert [r["contactid"] for p in pages for r in p.rows] == [changed]
        assert [d for p in pages for d in p.deleted] == [victim]
        emulator.dataverse.store.expire_change_tracking("contact")
        with pytest.raises(ChangeTrackingExpired):
            async for _ in conn.read_changes("contact", ["contactid"], pages[-1].delta_link):
                pass
        await conn.http.aclose()

    asyncio.run(scenario())


def test_total_count_for_the_progress_display_and_fetching_records_by_key() -> None:
    emulator = Emulator(contacts=120, faults="none")
    conn, _ = make(emulator)
    from mapsync.engine.sources import D365TableSource

    async def scenario() -> None:
        assert await conn.total_count("contact") == 120
        assert await conn.total_count("no_such_table") is None  # a 404 the progress display can live without
        source = D365TableSource(conn, "contact", ["contactid", "lastname"], "contactid", None)
        assert await source.expected_total() == 120
        ids = [r["contactid"] for r in emulator.dataverse.store.rows("contact")]
        gone = str(uuid.uuid4())
        found = await source.fetch_many([*ids[:75], gone])  # two requests of at most 50 keys
        assert sorted(found) == sorted(ids[:75]) and gone not in found
        assert found[ids[3]]["lastname"] == emulator.dataverse.store.get("contact", ids[3])["lastname"]
        await conn.http.aclose()

    asyncio.run(scenario())


def test_fetch_schema_reproduces_the_shipped_snapshots() -> None:
    emulator = Emulator(contacts=1, faults="none")
    conn, _ = make(emulator)
    names = sorted(p.stem for p in (DEFAULT_ROOT / "d365").glob("*.json"))

    async def scenario() -> list[Any]:
        tables = await conn.fetch_schema(names)
        await conn.http.aclose()
        return tables

    for table in asyncio.run(scenario()):
        shipped = (DEFAULT_ROOT / "d365" / f"{table.name}.json").read_text(encoding="utf-8")
        assert render_table(table) == shipped, table.name


def test_a_write_without_an_address_fails_alone_and_the_rest_is_written() -> None:
    emulator = Emulator(contacts=2, faults="none")
    conn, _ = make(emulator)
    existing = next(iter(emulator.dataverse.store.rows("contact")))["contactid"]

    async def scenario() -> None:
        outcomes = await conn.write([
            WriteOp("update", "contact", {"lastname": "Nowhere"}, ref="no-address"),
            WriteOp("delete", "contact", ref="no-address-delete"),
            WriteOp("update", "contact", {"lastname": "Renamed"}, target_id=existing, ref="upd"),
        ])
        by_ref = {o.ref: o for o in outcomes}
        assert not by_ref["no-address"].ok and "needs target_id or alternate_key" in (by_ref["no-address"].message or "")
        assert not by_ref["no-address-delete"].ok
        assert by_ref["upd"].ok
        await conn.http.aclose()

    asyncio.run(scenario())
    assert any(r.get("lastname") == "Renamed" for r in emulator.dataverse.store.rows("contact"))


def test_a_batch_reply_without_a_boundary_is_a_transient_connector_error() -> None:
    from mapsync.engine.connectors.odata import key_segment, parse_batch
    from mapsync.engine.errors import RequestError, TransientError

    with pytest.raises(TransientError, match="without a multipart boundary") as info:
        parse_batch("application/json", b'{"value": []}')
    assert info.value.service == "d365"
    with pytest.raises(RequestError, match="needs an id or an alternate key"):
        key_segment()
