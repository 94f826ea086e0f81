"""The Campaign and events connectors against the Adobe emulators in-process, with hostile faults."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mapsync.dsl.schema import load_catalog
from mapsync.emulators.faults import FaultInjector, FaultMiddleware, FaultProfile
from mapsync.emulators.journal import build_event
from mapsync.emulators.server import AdobeServices, Credentials, Limits, campaign_error_body
from mapsync.engine.config import CampaignSettings, EventsSettings, Secret, ServiceLimits
from mapsync.engine.connectors.base import WriteOp
from mapsync.engine.connectors.campaign import CampaignConnector, campaign_headers
from mapsync.engine.connectors.events import EventsConnector
from mapsync.engine.http import AttemptRecord, HttpClient

BASE = "https://adobe.test"
# The hostile profile, with its slow replies shortened so the suite stays fast (the fault mix is unchanged).
HOSTILE = dataclasses.replace(FaultProfile.named("hostile"), slow_seconds=0.01)


class VirtualTime:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class InFlight:
    """ASGI wrapper counting concurrent requests as the server sees them."""

    def __init__(self, app: Any) -> None:
        self.app, self.now, self.max = app, 0, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.now += 1
        self.max = max(self.max, self.now)
        try:
            await self.app(scope, receive, send)
        finally:
            self.now -= 1


class Rig:
    def __init__(self, *, faults: FaultProfile, concurrency: int = 6, emulator_concurrency: int | None = None) -> None:
        from starlette.applications import Starlette

        self.creds = Credentials()
        self.adobe = AdobeServices(credentials=self.creds, big_table_threshold=10**9,
                                   limits=Limits(campaign_concurrency=emulator_concurrency))
        self.injector = FaultInjector(faults)
        app = FaultMiddleware(Starlette(routes=self.adobe.routes()), self.injector, campaign_error_body,
                              on_token_expiry=self.adobe.issuer.expire_older_than,
                              applies=lambda scope: not scope["path"].startswith("/ims"))
        self.inflight = InFlight(app)
        self.transport = httpx.ASGITransport(app=self.inflight)
        self.settings = CampaignSettings(
            organization=self.creds.organization, client_id=self.creds.campaign_client_id,
            client_secret=Secret(self.creds.campaign_client_secret), ims_url=BASE, base_url=BASE,
            limits=ServiceLimits(concurrency=concurrency, max_retries=10),
        )
        self.time = VirtualTime()
        self.records: list[AttemptRecord] = []

    def connector(self) -> CampaignConnector:
        from mapsync.engine.auth import ImsTokenProvider

        self.ims = ImsTokenProvider(self.settings, transport=self.transport)
        http = HttpClient("campaign", self.settings.limits, self.ims, transport=self.transport,
                          base_url=self.settings.api_base, headers=campaign_headers(self.settings),
                          clock=self.time.now, sleep=self.time.sleep, observer=self.records.append)
        return CampaignConnector(self.settings, http, load_catalog())

    def events(self) -> EventsConnector:
        from mapsync.engine.auth import ImsTokenProvider

        self.ims = ImsTokenProvider(self.settings, transport=self.transport)
        settings = EventsSettings(journal_url=BASE + self.creds.journal_path, page_size=50)
        http = HttpClient("events", settings.limits, self.ims, transport=self.transport,
                          headers={"x-api-key": self.creds.campaign_client_id},
                          clock=self.time.now, sleep=self.time.sleep, observer=self.records.append)
        return EventsConnector(settings, http)

    def check_waits(self) -> int:
        """Every 429 was followed, for the same request, by an attempt at least Retry-After later."""
        by_request: dict[int, list[AttemptRecord]] = {}
        for r in self.records:
            by_request.setdefault(r.request_no, []).append(r)
        throttled = 0
        for attempts in by_request.values():
            attempts.sort(key=lambda r: r.attempt)
            for before, after in itertools.pairwise(attempts):
                if before.status == 429:
                    throttled += 1
                    assert before.retry_after is not None
                    assert after.sent_at - before.sent_at >= before.retry_after - 1e-9
        return throttled


def profiles(adobe: AdobeServices) -> list[dict[str, Any]]:
    return [data for _rid, data in adobe.store.rows_where("profile")]


def test_read_every_profile_exactly_once_under_hostile_faults() -> None:
    rig = Rig(faults=HOSTILE)
    n = rig.adobe.store.insert_many("profile", [{"email": f"p{i}@example.com", "externalId": f"x{i}"}
                                                for i in range(3000)])
    assert n == 3000

    async def scenario() -> list[dict[str, Any]]:
        conn = rig.connector()
        rows: list[dict[str, Any]] = []
        async for page in conn.read("profile", page_size=200):
            rows.extend(page)
        await conn.http.aclose()
        return rows

    rows = asyncio.run(scenario())
    ids = [r["externalId"] for r in rows]
    assert len(ids) == 3000 and set(ids) == {f"x{i}" for i in range(3000)}
    assert sum(rig.injector.counts.values()) > 0  # faults really happened
    rig.check_waits()


def test_writes_leave_exactly_the_expected_records() -> None:
    rig = Rig(faults=HOSTILE, concurrency=6, emulator_concurrency=6)
    n = 600

    async def scenario() -> None:
        conn = rig.connector()
        creates = [WriteOp("create", "profile", {"email": f"w{i}@example.com", "lastName": f"L{i}"},
                           alternate_key=("externalId", f"ext-{i}"), ref=i) for i in range(n)]
        pkeys: dict[int, str | None] = {}
        pending = creates
        for _round in range(8):  # what the executor does across runs: resend what failed transiently
            outcomes = await conn.write(pending)
            failed = [o for o in outcomes if not o.ok]
            # A create whose reply was lost is found again by its key; only transient give-ups may remain.
            assert all(o.transient for o in failed), failed[:3]
            pkeys.update({o.ref: o.target_id for o in outcomes if o.ok})
            pending = [creates[o.ref] for o in failed]
            if not pending:
                break
        assert not pending and len(pkeys) == n
        updates = [WriteOp("update", "profile", {"firstName": "Upd"}, target_id=pkeys[i], ref=i) for i in range(0, n, 2)]
        deletes = [WriteOp("delete", "profile", target_id=pkeys[i], ref=i) for i in range(1, n, 10)]
        results = await conn.write(updates + deletes)
        # Updates and deletes are idempotent: the HTTP layer already retried them.
        assert all(o.ok for o in results), [o for o in results if not o.ok][:3]
        # Deleting again is a success (404 = already gone).
        assert all(o.ok for o in await conn.write(deletes[:5]))
        stats = conn.http.limiter
        assert stats.max_in_flight <= 6
        await conn.http.aclose()

    asyncio.run(scenario())
    rows = {r["externalId"]: r for r in profiles(rig.adobe) if str(r.get("externalId", "")).startswith("ext-")}
    deleted = {f"ext-{i}" for i in range(1, n, 10)}
    assert set(rows) == {f"ext-{i}" for i in range(n)} - deleted  # each exactly once: keys are unique per row
    assert len([r for r in profiles(rig.adobe) if str(r.get("externalId", "")).startswith("ext-")]) == len(rows)
    assert all((rows[k].get("firstName") == "Upd") == (int(k[4:]) % 2 == 0) for k in rows)
    assert rig.inflight.max <= 6
    assert rig.adobe.protection is not None and rig.adobe.protection.throttled["concurrency"] == 0
    assert rig.check_waits() > 0


def test_find_by_filter_and_per_record_errors() -> None:
    rig = Rig(faults=FaultProfile())
    rig.adobe.store.insert_many("profile", [{"email": "a@example.com", "externalId": "A-1"}])

    async def scenario() -> None:
        conn = rig.connector()
        assert [r["email"] for r in await conn.find("profile", "externalId", "A-1")] == ["a@example.com"]
        assert [r["externalId"] for r in await conn.find("profile", "email", "a@example.com")] == ["A-1"]
        outcomes = await conn.write([
            WriteOp("create", "profile", {"email": "x" * 200 + "@example.com"}, ref="long"),
            WriteOp("create", "profile", {"email": "ok@example.com"}, ref="fine"),
        ])
        bad, good = outcomes
        assert (bad.ok, bad.status, bad.transient) == (False, 400, False) and bad.code
        assert good.ok and good.target_id
        await conn.http.aclose()

    asyncio.run(scenario())


def _event(i: int, at: datetime) -> dict[str, Any]:
    return build_event("open", event_id=f"ev-{i}", at=at,
                       profile={"PKey": f"@p{i}", "externalId": str(uuid.UUID(int=i)), "email": f"e{i}@example.com"},
                       delivery={"id": "D1", "label": "Spring", "campaign": "C1"})


def test_events_read_all_pages_then_stop_on_204() -> None:
    rig = Rig(faults=HOSTILE)
    now = rig.adobe.clock.now()
    rig.adobe.journal.extend([_event(i, now) for i in range(260)])

    async def scenario() -> tuple[list[str], str | None]:
        conn = rig.events()
        seen, position = [], None
        async for page in conn.read():
            seen.extend(e["event"]["id"] for e in page.events)
            position = page.position
        more = [p async for p in conn.read(since=position)]
        assert more == []  # 204: nothing newer
        await conn.http.aclose()
        return seen, position

    seen, _ = asyncio.run(scenario())
    assert seen == [f"ev-{i}" for i in range(260)]


def test_events_410_reports_the_gap_and_resumes_from_the_oldest() -> None:
    rig = Rig(faults=FaultProfile())
    start = rig.adobe.clock.now()
    rig.adobe.journal.extend([_event(i, start) for i in range(10)])

    async def scenario() -> None:
        conn = rig.events()
        first = [p async for p in conn.read(limit=5, max_pages=1)]
        position = first[-1].position
        rig.adobe.clock.advance(timedelta(days=9).total_seconds())
        later = rig.adobe.clock.now()
        rig.adobe.journal.extend([_event(100 + i, later) for i in range(3)])
        pages = [p async for p in conn.read(since=position, last_event_time=start)]
        ids = [e["event"]["id"] for p in pages for e in p.events]
        assert ids == ["ev-100", "ev-101", "ev-102"]
        gap = conn.last_gap
        assert gap is not None and gap.gap_days == pytest.approx(9.0, abs=0.1)
        assert str(gap) == f"events older than retention were lost: {gap.gap_days} days gap"
        await conn.http.aclose()

    asyncio.run(scenario())
    assert datetime.now(UTC)  # keep UTC import used for readers of the test


def test_keys_lists_every_keyed_record_page_by_page_under_hostile_faults() -> None:
    """The adoption read: (key, PKey) of each record carrying the key, through the faults, across pages."""
    rig = Rig(faults=HOSTILE)
    rows = [{"email": f"k{i}@example.com", **({"externalId": f"K-{i}"} if i % 3 else {})} for i in range(2500)]
    rig.adobe.store.insert_many("profile", rows)

    async def scenario() -> list[list[tuple[str, str]]]:
        conn = rig.connector()
        pages = [page async for page in conn.keys("profile", "externalId")]
        await conn.http.aclose()
        return pages

    pages = asyncio.run(scenario())
    assert len(pages) > 2  # pages of at most 1000 records, as read
    found = [pair for page in pages for pair in page]
    store = rig.adobe.store
    pkeys = {r["externalId"]: store.pkey("profile", rid) for rid, r in store.rows_where("profile") if r.get("externalId")}
    assert sorted(found) == sorted(pkeys.items()) and len(found) == len(rows) - len(range(0, 2500, 3))
