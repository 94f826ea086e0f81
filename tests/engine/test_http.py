"""The HTTP layer against scripted wire exchanges (httpx.MockTransport): retries, waits, limits, errors."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging

import httpx
import pytest

from mapsync.engine.config import ServiceLimits
from mapsync.engine.errors import AuthRejected, TerminalError, TransientError
from mapsync.engine.http import (
    AdaptiveLimiter,
    AttemptRecord,
    HttpClient,
    RetryBudget,
    backoff_delay,
    error_details,
    parse_retry_after,
)


class FakeClock:
    """Virtual time: sleeping advances it instantly, so tests of long waits stay fast."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class CountingTokens:
    """A TokenProvider: hands out tok1, tok2, ... and renews only when told the current one is stale."""

    def __init__(self) -> None:
        self.n = 1
        self.renewals = 0

    async def token(self, *, stale: str | None = None) -> str:
        if stale is not None and stale == f"tok{self.n}":
            self.n += 1
            self.renewals += 1
        return f"tok{self.n}"


def make_client(handler, *, clock: FakeClock | None = None, limits: ServiceLimits | None = None,
                records: list[AttemptRecord] | None = None, budget: RetryBudget | None = None,
                auth=None) -> HttpClient:
    clock = clock or FakeClock()
    return HttpClient(
        "d365", limits or ServiceLimits(concurrency=4, max_retries=3), auth or CountingTokens(),
        transport=httpx.MockTransport(handler), base_url="https://org.example/api/data/v9.2/",
        clock=clock.now, sleep=clock.sleep, rng=lambda: 0.5, budget=budget,
        observer=None if records is None else records.append,
    )


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------- helpers


def test_retry_after_seconds_date_and_garbage() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_700_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_700_000_000) == pytest.approx(30.0)
    assert parse_retry_after(date, now=1_700_000_100) == 0.0


def test_backoff_is_full_jitter_and_capped() -> None:
    assert backoff_delay(1, lambda: 1.0) == 0.5
    assert backoff_delay(3, lambda: 1.0) == 2.0
    assert backoff_delay(30, lambda: 1.0) == 30.0
    assert backoff_delay(4, lambda: 0.0) == 0.0


def test_error_details_of_each_service() -> None:
    dv = json.dumps({"error": {"code": "0x80040217", "message": "contact With Id = x Does Not Exist"}})
    assert error_details(dv, {"x-ms-service-request-id": "r1"}) == ("0x80040217", "contact With Id = x Does Not Exist", "r1")
    acs = json.dumps({"error_code": "ACS-123", "message": "too long"})
    assert error_details(acs, {"REQ_ID": "r2"}) == ("ACS-123", "too long", "r2")
    ims = json.dumps({"error": "invalid_client", "error_description": "bad"})
    assert error_details(ims, {"x-request-id": "r3"}) == ("invalid_client", "bad", "r3")
    assert error_details(b"<html>gateway</html>", {}) == (None, "<html>gateway</html>", None)


def test_limiter_halves_once_per_overload_and_climbs_back() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(8, increase_after=2)
        gens = [await lim.acquire() for _ in range(6)]
        assert lim.in_flight == 6 and lim.max_in_flight == 6
        for g in gens[:3]:  # three 429s from the same burst: one cut
            await lim.release(g, throttled=True)
        assert lim.limit == 4 and lim.decreases == 1
        for g in gens[3:]:
            await lim.release(g, success=True)
        assert lim.limit == 5  # +1 after 2 successes (the third starts a new count)
        g = await lim.acquire()
        await lim.release(g, throttled=True)  # a new generation may cut again
        assert lim.limit == 2 and lim.in_flight == 0

    run(scenario())


def test_limiter_blocks_beyond_limit() -> None:
    async def scenario() -> None:
        lim = AdaptiveLimiter(2)
        a = await lim.acquire()
        await lim.acquire()
        third = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0.01)
        assert not third.done()
        await lim.release(a, success=True)
        await asyncio.wait_for(third, 1)
        assert lim.max_in_flight == 2

    run(scenario())


# ---------------------------------------------------------------------------------------------- client


def test_429_waits_retry_after_and_pauses_the_client(caplog: pytest.LogCaptureFixture) -> None:
    replies = iter([httpx.Response(429, headers={"Retry-After": "12"},
                                   json={"error": {"code": "0x80072322", "message": "Number of requests exceeded"}}),
                    httpx.Response(200, json={"value": []})])
    clock = FakeClock()
    records: list[AttemptRecord] = []

    async def scenario() -> None:
        async with make_client(lambda r: next(replies), clock=clock, records=records) as client:
            caplog.set_level(logging.WARNING, logger="mapsync.http")
            resp = await client.request("GET", "contacts?$select=fullname&secret=abc")
            assert resp.status_code == 200
            assert client.stats.throttled == 1 and client.limiter.decreases == 1

    run(scenario())
    assert [r.status for r in records] == [429, 200]
    assert records[1].sent_at - records[0].sent_at >= 12
    event = next(r for r in caplog.records if getattr(r, "event", None) == "http.retry")
    assert (event.service, event.method, event.path, event.status, event.attempt, event.wait, event.code) == (
        "d365", "GET", "/api/data/v9.2/contacts", 429, 1, 12.0, "0x80072322")
    assert "secret" not in caplog.text and "tok1" not in caplog.text


def test_5xx_backs_off_then_gives_up_with_details() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"x-ms-service-request-id": "req-9"},
                              json={"error": {"code": "0x80040216", "message": "busy"}})

    clock = FakeClock()

    async def scenario() -> None:
        async with make_client(handler, clock=clock) as client:
            with pytest.raises(TransientError) as info:
                await client.request("GET", "contacts")
            err = info.value
            assert (err.status, err.code, err.request_id, err.service) == (503, "0x80040216", "req-9", "d365")
            assert "HTTP 503" in str(err) and "req-9" in str(err)

    run(scenario())
    assert len(calls) == 4  # 1 + max_retries
    assert clock.slept == [0.25, 0.5, 1.0]  # full jitter with rng=0.5: half of 0.5, 1, 2


def test_terminal_error_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": {"code": "0x80044331", "message": "bad value"}})

    async def scenario() -> None:
        async with make_client(handler) as client:
            with pytest.raises(TerminalError) as info:
                await client.request("PATCH", "contacts(1)", json={}, idempotent=True)
            assert info.value.code == "0x80044331"

    run(scenario())
    assert len(calls) == 1


def test_accepted_status_is_returned() -> None:
    async def scenario() -> None:
        async with make_client(lambda r: httpx.Response(404, json={"error": {"code": "x"}})) as client:
            resp = await client.request("DELETE", "contacts(1)", accept=(404,))
            assert resp.status_code == 404

    run(scenario())


def test_unsafe_post_is_only_repeated_when_it_never_arrived() -> None:
    processed: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        kind = request.url.params["fault"]
        n = sum(1 for p in processed if p.startswith(kind))
        if kind == "connect" and n == 0:
            processed.append(kind + "-refused")  # refused before anything was sent
            raise httpx.ConnectError("refused", request=request)
        processed.append(kind)
        if kind == "read" and n == 0:
            raise httpx.ReadError("reset after send", request=request)
        if kind == "503" and n == 0:
            return httpx.Response(503)
        if kind == "429" and n == 0:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(204)

    async def scenario() -> None:
        async with make_client(handler) as client:
            assert (await client.request("POST", "contacts?fault=connect", json={})).status_code == 204
            assert (await client.request("POST", "contacts?fault=429", json={})).status_code == 204
            with pytest.raises(TransientError):
                await client.request("POST", "contacts?fault=read", json={})
            with pytest.raises(TransientError) as info:
                await client.request("POST", "contacts?fault=503", json={})
            assert info.value.status == 503
            # The same failures on a request the caller marks idempotent are retried.
            processed.clear()
            assert (await client.request("POST", "contacts?fault=read", json={}, idempotent=True)).status_code == 204
            assert (await client.request("POST", "contacts?fault=503", json={}, idempotent=True)).status_code == 204

    run(scenario())


def test_401_renews_the_token_then_fails() -> None:
    seen: list[str] = []
    tokens = CountingTokens()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        if request.url.path.endswith("always") or len(seen) == 1:
            return httpx.Response(401, json={"error": {"code": "0x80048306", "message": "expired"}})
        return httpx.Response(200, json={})

    async def scenario() -> None:
        async with make_client(handler, auth=tokens) as client:
            assert (await client.request("GET", "once")).status_code == 200
            # A 401 after renewal is the credentials' fault, not the record's (issue 12): a configuration error.
            with pytest.raises(AuthRejected) as info:
                await client.request("GET", "always")
            assert info.value.status == 401

    run(scenario())
    # "once": tok1 refused, renewed, tok2 accepted. "always": tok2, tok3, tok4 refused: two renewals, then fail.
    assert seen == ["Bearer tok1", "Bearer tok2", "Bearer tok2", "Bearer tok3", "Bearer tok4"]
    assert tokens.renewals == 3


def test_connection_errors_become_transient_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async def scenario() -> None:
        async with make_client(handler, limits=ServiceLimits(max_retries=1)) as client:
            with pytest.raises(TransientError) as info:
                await client.request("GET", "contacts")
            assert info.value.status is None and "timed out" in str(info.value)

    run(scenario())


def test_global_budget_stops_retry_storms() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500)

    async def scenario() -> None:
        async with make_client(handler, budget=RetryBudget(ratio=0.0, reserve=3)) as client:
            for _ in range(3):
                with pytest.raises(TransientError):
                    await client.request("GET", "contacts")

    run(scenario())
    assert len(calls) == 3 + 3  # three requests, three retries in all, then the budget is spent


def test_concurrency_never_exceeds_ceiling_and_adapts() -> None:
    state = {"in": 0, "max": 0, "n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["in"] += 1
        state["max"] = max(state["max"], state["in"])
        state["n"] += 1
        await asyncio.sleep(0.001)
        state["in"] -= 1
        if state["n"] % 10 == 0:
            return httpx.Response(429, headers={"Retry-After": "0"})
        return httpx.Response(200, json={})

    async def scenario() -> HttpClient:
        client = make_client(handler, limits=ServiceLimits(concurrency=6, max_retries=8))
        await asyncio.gather(*(client.request("GET", f"x{i}") for i in range(200)))
        await client.aclose()
        return client

    client = run(scenario())
    assert state["max"] <= 6 and client.limiter.max_in_flight <= 6
    assert client.limiter.decreases >= 1 and 1 <= client.limiter.limit <= 6
    assert client.limiter.in_flight == 0


def test_request_window_spaces_requests() -> None:
    clock = FakeClock()
    records: list[AttemptRecord] = []

    async def scenario() -> None:
        async with make_client(lambda r: httpx.Response(200), clock=clock, records=records,
                               limits=ServiceLimits(requests_per_window=3, window_seconds=10)) as client:
            for _ in range(7):
                await client.request("GET", "x")

    run(scenario())
    starts = [r.sent_at for r in records]
    for i in range(3, len(starts)):
        assert starts[i] - starts[i - 3] >= 10
