"""The circuit breaker of the HTTP layer (issue 15) and the 401 policy (issue 12), on virtual time."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.engine.config import ServiceLimits
from mapsync.engine.errors import AuthRejected, ServiceDown, TransientError
from mapsync.engine.http import failure_kind
from tests.engine.test_http import CountingTokens, FakeClock, make_client, run


def refused(request: httpx.Request) -> httpx.Response:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as exc:
        raise httpx.ConnectError("All connection attempts failed", request=request) from exc


def _chained(outer: httpx.ConnectError, cause: BaseException) -> httpx.ConnectError:
    outer.__cause__ = cause
    return outer


def test_failure_kinds_name_what_an_operator_checks_first() -> None:
    request = httpx.Request("GET", "https://org.example/")
    assert failure_kind(_chained(httpx.ConnectError("x", request=request), socket.gaierror(-2, "Name or service not known"))) == "DNS"
    assert failure_kind(_chained(httpx.ConnectError("x", request=request), ConnectionRefusedError(111, "refused"))) == "refused"
    assert failure_kind(_chained(httpx.ConnectError("x", request=request),
                                 ssl.SSLCertVerificationError(1, "certificate verify failed"))) == "TLS not trusted"
    assert failure_kind(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
                                           request=request)) == "TLS not trusted"
    assert failure_kind(httpx.ConnectTimeout("slow", request=request)) == "timeout"
    assert failure_kind(httpx.ReadTimeout("slow", request=request)) == "timeout"
    assert failure_kind(httpx.RemoteProtocolError("peer closed", request=request)) == "connection dropped"


def test_an_unreachable_service_trips_after_the_bound_and_every_later_request_fails_at_once() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return refused(request)

    clock = FakeClock()

    async def scenario() -> None:
        limits = ServiceLimits(concurrency=4, max_retries=1000, outage_seconds=30.0)
        async with make_client(handler, clock=clock, limits=limits) as client:
            started = clock.t
            with pytest.raises(ServiceDown) as info:
                await client.request("GET", "contacts")
            assert 30.0 <= clock.t - started <= 30.0 + 1e-9  # no nap past the bound
            down = info.value
            assert (down.service, down.host, down.kind) == ("d365", "org.example", "refused")
            assert "org.example" in str(down) and "refused" in str(down) and "UTC" in str(down)
            before = len(calls)
            with pytest.raises(ServiceDown):
                await client.request("POST", "contacts", json={})
            assert len(calls) == before  # the breaker is open: nothing sent

    run(scenario())


def test_an_answer_ends_the_streak() -> None:
    state = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        state["n"] += 1
        if state["n"] % 3 == 0:
            return httpx.Response(200, json={})
        return refused(request)

    clock = FakeClock()

    async def scenario() -> None:
        limits = ServiceLimits(concurrency=4, max_retries=5, outage_seconds=1.0)
        async with make_client(handler, clock=clock, limits=limits) as client:
            for _ in range(20):  # each request meets two refusals, but the service answers in between
                clock.t += 5.0  # long quiet gaps between requests do not count as being down
                assert (await client.request("GET", "contacts")).status_code == 200
            assert client.outage.tripped is None

    run(scenario())


def test_503_with_retry_after_is_no_outage_but_without_it_is() -> None:
    clock = FakeClock()

    async def scenario(headers: dict[str, str]) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(503, headers=headers, json={"error": {"code": "x", "message": "busy"}})

        limits = ServiceLimits(concurrency=2, max_retries=3, outage_seconds=0.5)
        async with make_client(handler, clock=clock, limits=limits) as client:
            await client.request("GET", "contacts")

    with pytest.raises(TransientError):
        run(scenario({"Retry-After": "1"}))
    with pytest.raises(ServiceDown):
        run(scenario({}))


def test_tls_not_trusted_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", request=request)

    async def scenario() -> None:
        async with make_client(handler) as client:
            with pytest.raises(ServiceDown, match=r"TLS not trusted.*ca_file"):
                await client.request("GET", "contacts")

    run(scenario())
    assert len(calls) == 1


def test_a_401_after_renewal_with_no_token_ever_accepted_is_a_configuration_error_naming_the_setting() -> None:
    seen: list[str] = []

    class Named(CountingTokens):
        credential_setting = "environments.stage.campaign.client_secret"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401, json={"error_code": "401013", "message": "Oauth token is not valid"})

    async def scenario() -> None:
        async with make_client(handler, auth=Named()) as client:
            with pytest.raises(AuthRejected) as info:
                await client.request("POST", "profiles", json={})
            assert info.value.setting == "environments.stage.campaign.client_secret"
            assert str(info.value).startswith("environments.stage.campaign.client_secret: ")
            assert "tok1" not in str(info.value) and "tok2" not in str(info.value)  # never a token in a message
            assert client.stats.refreshed_tokens == 1

    run(scenario())
    assert seen == ["Bearer tok1", "Bearer tok2"]  # renewed once, resent once


@settings(max_examples=60, deadline=None)
@given(revocations=st.lists(st.booleans(), min_size=1, max_size=6))
def test_a_request_whose_tokens_are_revoked_ends_ok_or_as_a_configuration_error_never_as_a_record_error(
        revocations: list[bool]) -> None:
    """Whatever the pattern of revocations, a 401 never leaves as a ConnectorError (a record's dead letter)."""
    script = list(revocations)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("warmup"):
            return httpx.Response(200, json={})
        if script and script.pop(0):
            return httpx.Response(401, json={"error_code": "401013"})
        return httpx.Response(200, json={})

    async def scenario() -> str:
        async with make_client(handler) as client:
            await client.request("GET", "warmup")
            try:
                await client.request("GET", "contacts")
            except AuthRejected:
                return "stopped"
            return "ok"

    outcome = run(scenario())
    leading = next((i for i, revoked in enumerate(revocations) if not revoked), len(revocations))
    assert outcome == ("ok" if leading <= 2 else "stopped")
