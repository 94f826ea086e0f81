"""Authentication against the emulated identity providers: MSAL over real TLS for Entra ID, IMS in-process."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import mapsync.emulators.campaign  # noqa: F401  (works around an import cycle in the emulators while they land)
from mapsync.emulators.entra import entra_routes
from mapsync.emulators.ims import IMS_ORG, ims_routes
from mapsync.emulators.tls import TestCA
from mapsync.emulators.tokens import TokenIssuer
from mapsync.engine.auth import EntraTokenProvider, ImsTokenProvider, TokenCache
from mapsync.engine.config import CampaignSettings, D365Settings, Secret, ServiceLimits
from mapsync.engine.errors import ConfigError
from mapsync.engine.http import HttpClient

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "app-client-id"
SECRET = "s3cr3t-Value-that-must-never-leak"


class Served:
    def __init__(self, url: str, issuer: TokenIssuer, ca: Path) -> None:
        self.url, self.issuer, self.ca = url, issuer, ca


def _protected(issuer: TokenIssuer):
    async def whoami(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "")
        client = issuer.validate(auth.removeprefix("Bearer "))
        if client is None:
            return JSONResponse({"error": {"code": "0x80048306", "message": "token expired"}}, status_code=401)
        return JSONResponse({"client": client})

    return whoami


@pytest.fixture(scope="module")
def entra() -> Iterator[Served]:
    """Entra ID's endpoints (the emulator's routes) served over TLS with a throw-away CA on 127.0.0.1."""
    issuer = TokenIssuer()
    issuer.register_client(TENANT, CLIENT, SECRET)
    app = Starlette(routes=[*entra_routes(issuer), Route("/api/whoami", _protected(issuer))])
    ca = TestCA()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1,
                                           **ca.ssl_kwargs("127.0.0.1")))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield Served(f"https://127.0.0.1:{port}", issuer, ca.ca_pem_path)
    server.should_exit = True
    thread.join(5)
    ca.cleanup()


def d365(served: Served, **changes: object) -> D365Settings:
    values: dict[str, object] = {
        "url": "https://org.crm.dynamics.com", "tenant_id": TENANT, "client_id": CLIENT,
        "client_secret": Secret(SECRET, "${D365_SECRET}"), "authority_host": served.url,
    }
    values.update(changes)
    return D365Settings(**values)  # type: ignore[arg-type]


def entra_error(settings: D365Settings, ca: Path | bool) -> ConfigError:
    provider = EntraTokenProvider(settings, setting_prefix="environments.stage.d365", verify=ca)
    with pytest.raises(ConfigError) as info:
        asyncio.run(provider.token())
    return info.value


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- Entra ID


def test_msal_gets_caches_and_renews_a_token_over_tls(entra: Served) -> None:
    provider = EntraTokenProvider(d365(entra), setting_prefix="environments.stage.d365", verify=entra.ca)

    async def scenario() -> None:
        first = await provider.token()
        assert entra.issuer.validate(first) == CLIENT
        assert await provider.token() == first and provider.acquisitions == 1
        renewed = await provider.token(stale=first)
        assert renewed != first and provider.acquisitions == 2
        # A second caller reporting the same stale token does not renew again.
        assert await provider.token(stale=first) == renewed and provider.acquisitions == 2

    asyncio.run(scenario())
    assert SECRET not in repr(provider)


def test_renewal_before_expiry_uses_the_margin(entra: Served) -> None:
    now = [1_000_000.0]
    provider = EntraTokenProvider(d365(entra), verify=entra.ca, clock=lambda: now[0])

    async def scenario() -> None:
        await provider.token()
        calls = provider.acquisitions
        now[0] += 3599 - 301  # 301 s left: still used
        await provider.token()
        assert provider.acquisitions == calls
        now[0] += 2  # 299 s left: renewed (MSAL is asked again)
        before = provider._expires_at
        await provider.token()
        assert provider._expires_at > before

    asyncio.run(scenario())


def test_401_from_the_service_renews_the_token_once(entra: Served) -> None:
    provider = EntraTokenProvider(d365(entra), verify=entra.ca)

    async def scenario() -> None:
        async with HttpClient("d365", ServiceLimits(), provider, verify=entra.ca, base_url=entra.url) as client:
            assert (await client.request("GET", "/api/whoami")).json() == {"client": CLIENT}
            entra.issuer.expire_all()  # every issued token is now refused
            assert (await client.request("GET", "/api/whoami")).json() == {"client": CLIENT}
            assert client.stats.refreshed_tokens == 1 and provider.acquisitions == 2

    asyncio.run(scenario())


def test_bad_secret_names_the_setting_and_code_never_the_secret(entra: Served, caplog: pytest.LogCaptureFixture,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    err = entra_error(d365(entra, client_secret=Secret("wrong-" + SECRET)), entra.ca)
    assert str(err) == ("environments.stage.d365.client_secret: Entra ID rejected the client secret "
                        f"(client id {CLIENT}) [AADSTS7000215]")
    assert err.setting == "environments.stage.d365.client_secret"
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, repr(err), str(err.__context__), str(err.__cause__)):
        assert SECRET not in text


def test_unknown_tenant(entra: Served) -> None:
    err = entra_error(d365(entra, tenant_id="no-such-tenant"), entra.ca)
    assert str(err) == "environments.stage.d365.tenant_id: Entra ID knows no such tenant 'no-such-tenant' [AADSTS90002]"
    assert err.setting == "environments.stage.d365.tenant_id"


def test_unknown_client(entra: Served) -> None:
    err = entra_error(d365(entra, client_id="someone-else"), entra.ca)
    assert str(err) == ("environments.stage.d365.client_id: Entra ID knows no application with this client id "
                        f"in the tenant 'someone-else' (tenant {TENANT}) [AADSTS700016]")


def test_unreachable_host(entra: Served) -> None:
    host = f"https://127.0.0.1:{_closed_port()}"
    err = entra_error(d365(entra, authority_host=host), entra.ca)
    assert str(err) == f"environments.stage.d365.authority_host: cannot reach Entra ID at {host} (ConnectionError)"


def test_untrusted_certificate_points_at_ca_file(entra: Served) -> None:
    err = entra_error(d365(entra), True)
    assert err.setting == "environments.stage.ca_file"
    assert str(err).startswith(f"environments.stage.ca_file: the TLS certificate of {entra.url} is not trusted")


# ---------------------------------------------------------------------------------------------- Adobe IMS


def ims(**changes: object) -> tuple[CampaignSettings, httpx.ASGITransport, TokenIssuer]:
    issuer = TokenIssuer(lifetime_seconds=86399)
    issuer.register_client(IMS_ORG, "ims-client", SECRET)
    values: dict[str, object] = {"organization": "acme", "client_id": "ims-client",
                                 "client_secret": Secret(SECRET), "ims_url": "https://ims.test"}
    values.update(changes)
    app = Starlette(routes=ims_routes(issuer))
    return CampaignSettings(**values), httpx.ASGITransport(app=app), issuer  # type: ignore[arg-type]


def test_ims_token_cached_and_renewed_before_expiry() -> None:
    settings, transport, issuer = ims()
    now = [0.0]
    provider = ImsTokenProvider(settings, setting_prefix="environments.stage.campaign", transport=transport,
                                clock=lambda: now[0])

    async def scenario() -> None:
        first = await provider.token()
        assert issuer.validate(first) == "ims-client"
        assert await provider.token() == first
        now[0] += 86399 - 299
        second = await provider.token()
        assert second != first and provider.acquisitions == 2
        assert await provider.token(stale=second) != second
        await provider.aclose()

    asyncio.run(scenario())


def test_providers_sharing_a_token_cache_ask_once_until_it_nears_expiry_or_is_refused(entra: Served) -> None:
    settings, transport, _issuer = ims()
    now = [0.0]
    tokens = TokenCache()

    def providers() -> tuple[ImsTokenProvider, EntraTokenProvider]:
        return (ImsTokenProvider(settings, transport=transport, clock=lambda: now[0], cache=tokens),
                EntraTokenProvider(d365(entra), verify=entra.ca, clock=lambda: now[0], cache=tokens))

    async def scenario() -> None:
        first_ims, first_entra = providers()  # one run of `--watch`
        ims_token, entra_token = await first_ims.token(), await first_entra.token()
        await first_ims.aclose()
        await first_entra.aclose()
        second_ims, second_entra = providers()  # the next round: new connectors, the same cache
        assert (await second_ims.token(), await second_entra.token()) == (ims_token, entra_token)
        assert (second_ims.acquisitions, second_entra.acquisitions) == (0, 0)
        renewed = await second_ims.token(stale=ims_token)  # Campaign said 401: a new one, for later rounds too
        assert renewed != ims_token
        third_ims, _ = providers()
        assert await third_ims.token() == renewed
        now[0] += 86399 - 299  # inside the renewal margin: the cached one is not handed out
        assert await providers()[0].token() != renewed
        for provider in (second_ims, second_entra, third_ims):
            await provider.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"client_secret": Secret("nope")},
         "environments.stage.campaign.client_secret: Adobe IMS rejected the client secret (client id ims-client) "
         "[invalid_client: invalid client_secret parameter]"),
        ({"client_id": "stranger"},
         "environments.stage.campaign.client_id: Adobe IMS knows no client 'stranger' "
         "[invalid_client: invalid client_id parameter]"),
    ],
)
def test_ims_bad_credentials(changes: dict[str, object], message: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings, transport, _ = ims(**changes)
    provider = ImsTokenProvider(settings, setting_prefix="environments.stage.campaign", transport=transport)
    with pytest.raises(ConfigError) as info:
        asyncio.run(provider.token())
    assert str(info.value) == message
    assert SECRET not in caplog.text and SECRET not in repr(provider)


def test_ims_unreachable() -> None:
    url = f"https://127.0.0.1:{_closed_port()}"
    settings, _, _ = ims(ims_url=url)
    provider = ImsTokenProvider(settings, setting_prefix="environments.stage.campaign")
    with pytest.raises(ConfigError) as info:
        asyncio.run(provider.token())
    assert str(info.value) == f"environments.stage.campaign.ims_url: cannot reach Adobe IMS at {url} (ConnectError)"
    assert info.value.setting == "environments.stage.campaign.ims_url"
