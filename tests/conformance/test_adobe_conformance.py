"""Adobe's documented examples (Campaign Standard, the I/O gateway, IMS): our connectors parse each reply,
and the emulator answers the same request with a reply of the same shape."""

from __future__ import annotations

import httpx
import pytest

from mapsync.dsl.schema import load_catalog
from mapsync.emulators.server import Emulator
from mapsync.engine.auth import ImsTokenProvider
from mapsync.engine.config import CampaignSettings, Secret, ServiceLimits
from mapsync.engine.connectors.campaign import CampaignConnector, campaign_headers
from mapsync.engine.http import HttpClient, error_details
from tests.conformance.conftest import (
    ADOBE_BASE,
    Replay,
    StaticTokens,
    assert_same_shape,
    documented_response,
    load,
    no_sleep,
)

pytestmark = pytest.mark.anyio


def settings(emulator: Emulator) -> CampaignSettings:
    creds = emulator.credentials
    return CampaignSettings(organization=creds.organization, client_id=creds.campaign_client_id,
                            client_secret=Secret(creds.campaign_client_secret), ims_url=ADOBE_BASE,
                            base_url=ADOBE_BASE, limits=ServiceLimits(concurrency=1, max_retries=2))


def adobe_client(emulator: Emulator) -> httpx.AsyncClient:
    creds = emulator.credentials
    token, _ = emulator.adobe.issuer.issue(creds.campaign_client_id, "campaign_sdk")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app),
                             base_url=f"{ADOBE_BASE}/{creds.organization}/campaign/",
                             headers={"Authorization": f"Bearer {token}", "X-Api-Key": creds.campaign_client_id})


async def test_profile_list_example_parses_and_the_emulator_pages_alike(emulator: Emulator) -> None:
    doc = load("campaign_profile_list.json")
    documented = doc["response"]["body"]
    last = {"status": 200, "headers": {}, "body": {"content": []}}  # the example shows one page; end after it
    replay = Replay(lambda req: documented_response(last if "_lineStart" in str(req.url) else doc["response"]))
    http = HttpClient("campaign", settings(emulator).limits, StaticTokens(), transport=replay.transport(),
                      base_url=settings(emulator).api_base, headers=campaign_headers(settings(emulator)), sleep=no_sleep)
    pages = [p async for p in CampaignConnector(settings(emulator), http, load_catalog()).read("profile")]
    assert [len(p) for p in pages] == [1, 0] and pages[0][0]["PKey"] == "<PKEY>"
    assert str(replay.requests[1].url) == documented["next"]["href"]  # followed verbatim, token raw
    for n in range(3):
        emulator.adobe.store.insert("profile", {"email": f"p{n}@example.com", "birthDate": "1933-10-24"})
    async with adobe_client(emulator) as c:
        r = await c.get("profileAndServices/profile", params={"_lineCount": "1"})
    ours = r.json()
    # The snapshot's profile has no "age" nor "blackListAllLastModified" (real profiles do): left out of the shape.
    assert_same_shape(documented, ours, ignore={"age", "blackListAllLastModified"})
    assert "_lineStart=@" in ours["next"]["href"] and "%40" not in ours["next"]["href"]
    assert ours["serverSidePagination"] is True


async def test_workflow_execution_example_has_the_same_shape_in_the_emulator(emulator: Emulator) -> None:
    doc = load("campaign_workflow_execution.json")
    get, trigger = doc["exchanges"]
    async with adobe_client(emulator) as c:
        r = await c.get("workflow/execution/WKF12")
        assert r.status_code == 200
        ours = r.json()
        assert_same_shape(get["response"]["body"], ours)
        href = ours["activities"]["activity"]["signal1"]["trigger"]["href"]
        assert href.startswith(f"{ADOBE_BASE}/{emulator.credentials.organization}/campaign/workflow/execution/")
        assert href.endswith("/trigger/")
        path = href.split("/campaign/", 1)[1].rstrip("/")  # Adobe's sample posts without the trailing slash
        refused = await c.post(path, json=trigger["request"]["body"])
        first_lines = "\n".join(trigger["response"]["error_text"].split("\n")[:2])
        assert refused.status_code == 400 and first_lines in refused.json()["message"]
        accepted = {k: v for k, v in trigger["request"]["body"]["parameters"].items() if k != "contentURL"}
        ok = await c.post(path, json={"source": "API", "parameters": accepted})
        assert ok.status_code == 200
        again = await c.post(path, json={"source": "API"})
        assert again.status_code == 400  # a signal fires at most once every 10 minutes
    assert emulator.adobe.workflows.find("WKF12").signals["signal1"].received == [
        {"source": "API", "parameters": accepted}]


async def test_gateway_error_bodies_parse_and_the_emulator_sends_them(emulator: Emulator) -> None:
    doc = load("campaign_error_bodies.json")
    for exchange in doc["exchanges"]:
        body = exchange["response"]["body"]
        code, message, _ = error_details(httpx.Response(200, json=body).content, {})
        assert (code, message) == (body["error_code"], body["message"])
    expired = doc["exchanges"][0]["response"]
    async with adobe_client(emulator) as c:
        emulator.adobe.issuer.expire_all()
        r = await c.get("profileAndServices/profile")
    assert r.status_code == expired["status"] and r.json() == expired["body"]


async def test_ims_token_example_parses_and_the_emulator_answers_alike(emulator: Emulator) -> None:
    doc = load("ims_token.json")
    replay = Replay(lambda _req: documented_response(doc["response"]))
    provider = ImsTokenProvider(settings(emulator), transport=replay.transport())
    try:
        assert await provider.token() == "{ACCESS_TOKEN}"
    finally:
        await provider.aclose()
    sent = replay.requests[0]
    assert str(sent.url) == f"{ADOBE_BASE}/ims/token/v3" and sent.headers["content-type"] == doc["request"]["headers"]["Content-Type"]
    creds = emulator.credentials
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app), base_url=ADOBE_BASE) as c:
        r = await c.post("/ims/token/v3", data={"client_id": creds.campaign_client_id, "grant_type": "client_credentials",
                                                "client_secret": creds.campaign_client_secret,
                                                "scope": "openid,AdobeID,campaign_sdk"})
    assert r.status_code == 200 and set(r.json()) == set(doc["response"]["body"])
    assert_same_shape(doc["response"]["body"], r.json())
    assert (r.json()["token_type"], r.json()["expires_in"]) == ("bearer", 86399)
