"""Entra ID endpoints: real error shapes in-process, and unmodified MSAL + httpx over TLS against uvicorn."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time

import httpx
import msal
import pytest
import uvicorn

from mapsync.emulators.dataverse.app import build_dataverse_app
from mapsync.emulators.faults import DroppedConnection, FaultInjector, FaultProfile
from mapsync.emulators.limits import ServiceProtection
from mapsync.emulators.tls import TestCA
from tests.emulators.conftest import CLIENT_ID, SECRET, TENANT

SCOPE = "https://org.crm.dynamics.com/.default"


def _token(app, tenant: str = TENANT, **form: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://login.test") as c:
            data = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": SECRET,
                    "scope": SCOPE, **form}
            return await c.post(f"/{tenant}/oauth2/v2.0/token", data=data)
    return asyncio.run(go())


def test_token_and_error_shapes(store, issuer) -> None:
    app = build_dataverse_app(store, issuer)
    ok = _token(app)
    assert ok.status_code == 200
    body = ok.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3599 and issuer.validate(body["access_token"]) == CLIENT_ID
    bad = _token(app, client_secret="wrong")
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert bad.json()["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert "wrong" not in bad.text and SECRET not in bad.text
    unknown = _token(app, client_id="nobody")
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [700016]
    tenant = _token(app, tenant="no-such-tenant")
    assert tenant.status_code == 400 and tenant.json()["error_description"].startswith("AADSTS90002: Tenant 'no-such-tenant' not found.")
    scope = _token(app, scope="https://org.crm.dynamics.com/user_impersonation")
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"


def test_token_expiry(issuer) -> None:
    now = [1000.0]
    from mapsync.emulators.tokens import TokenIssuer
    iss = TokenIssuer(lifetime_seconds=60, clock=lambda: now[0])
    tok, ttl = iss.issue("c", SCOPE)
    assert ttl == 60 and iss.validate(tok) == "c"
    now[0] = 1061.0
    assert iss.validate(tok) is None


def test_a_token_expiry_fault_spares_a_token_issued_a_moment_ago() -> None:
    # Real tokens expire by age: a fault that refused a just-renewed token would make a client take a working
    # secret for a wrong one (and stop the run).
    from mapsync.emulators.tokens import TokenIssuer

    now = [1000.0]
    iss = TokenIssuer(lifetime_seconds=3600, clock=lambda: now[0])
    old, _ = iss.issue("c", SCOPE)
    now[0] = 1010.0
    fresh, _ = iss.issue("c", SCOPE)
    now[0] = 1012.0
    iss.expire_older_than(FaultProfile().token_min_age_seconds)
    assert iss.validate(old) is None and iss.validate(fresh) == "c"
    iss.expire_older_than(0)  # an application whose access was withdrawn: every token refused
    assert iss.validate(fresh) is None


def test_dropped_connection_in_process(store, issuer, token) -> None:
    faults = FaultInjector(FaultProfile(p_drop=1.0))
    app = build_dataverse_app(store, issuer, None, faults)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://o.test") as c:
            with pytest.raises(httpx.RemoteProtocolError):
                await c.get("/api/data/v9.2/contacts", headers={"Authorization": f"Bearer {token}"})
    asyncio.run(go())
    assert faults.counts["drop"] == 1 and issubclass(DroppedConnection, httpx.TransportError)


def test_fault_injector_is_deterministic() -> None:
    a, b = FaultInjector(FaultProfile.named("hostile")), FaultInjector(FaultProfile.named("hostile"))
    assert [a.draw() for _ in range(500)] == [b.draw() for _ in range(500)]
    assert 50 < sum(a.counts.values()) < 200
    a.set_profile("none")
    assert all(a.draw() is None for _ in range(100))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_server(store, issuer):
    ca = TestCA()
    port = _free_port()
    faults = FaultInjector(FaultProfile())
    app = build_dataverse_app(store, issuer, ServiceProtection(), faults)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", timeout_graceful_shutdown=1,
                            **ca.ssl_kwargs())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"https://127.0.0.1:{port}", ca, faults
    server.should_exit = True
    thread.join(timeout=10)
    ca.cleanup()


@pytest.mark.timeout(60)
def test_msal_gets_token_and_httpx_pages_over_tls(tls_server, store, monkeypatch) -> None:
    url, ca, faults = tls_server
    # requests lets these variables override a Session's ``verify`` (and so MSAL's ``verify=``).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    for i in range(12):
        store.insert("contact", {"lastname": f"L{i}"})
    app = msal.ConfidentialClientApplication(CLIENT_ID, client_credential=SECRET, authority=f"{url}/{TENANT}",
                                             validate_authority=False, instance_discovery=False, verify=str(ca.ca_pem_path))
    result = app.acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in result, result.get("error_description")
    headers = {"Authorization": f"Bearer {result['access_token']}", "Prefer": "odata.maxpagesize=5",
               "OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}
    names: list[str] = []
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca.ca_pem_path)), headers=headers) as client:
        next_url: str | None = f"{url}/api/data/v9.2/contacts?$select=lastname"
        while next_url:
            body = client.get(next_url).raise_for_status().json()
            names += [v["lastname"] for v in body["value"]]
            next_url = body.get("@odata.nextLink")
        assert names == [f"L{i}" for i in range(12)]
        faults.set_profile(FaultProfile(p_drop=1.0))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(f"{url}/api/data/v9.2/contacts")
        faults.set_profile("none")
        assert client.get(f"{url}/api/data/v9.2/contacts").status_code == 200
    app.http_client.close()
