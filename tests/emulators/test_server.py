"""The combined emulator: one app for every service, served over TLS on loopback; control endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msal
import pytest
import yaml
from starlette.testclient import TestClient

from mapsync.emulators.server import Emulator, Served, start_in_thread, write_config


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Emulator, Served]]:
    emulator = Emulator(seed=7, contacts=300)
    running = start_in_thread(emulator)
    try:
        yield emulator, running
    finally:
        running.stop()


def test_unmodified_msal_gets_a_token_over_tls(served: tuple[Emulator, Served], monkeypatch: pytest.MonkeyPatch) -> None:
    # requests (under msal) lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override a session's verify=; unset them.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    emulator, running = served
    c = emulator.credentials
    app = msal.ConfidentialClientApplication(
        c.d365_client_id, client_credential=c.d365_client_secret,
        authority=f"{running.base_url}/{c.tenant_id}", validate_authority=False, instance_discovery=False,
        verify=str(running.ca_file))
    result = app.acquire_token_for_client(scopes=[f"{running.base_url}/.default"])
    assert "access_token" in result, result.get("error_description")
    with httpx.Client(verify=running.client_ssl(), base_url=running.base_url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {result['access_token']}", "Accept": "application/json",
                   "OData-MaxVersion": "4.0", "OData-Version": "4.0", "Prefer": "odata.maxpagesize=100"}
        url: str | None = "/api/data/v9.2/contacts?$select=fullname,emailaddress1"
        seen = 0
        while url:
            page = client.get(url, headers=headers)
            assert page.status_code == 200, page.text
            seen += len(page.json()["value"])
            url = page.json().get("@odata.nextLink")
        assert seen == 300


def test_raw_httpx_gets_an_ims_token_and_pages_profiles(served: tuple[Emulator, Served]) -> None:
    emulator, running = served
    c = emulator.credentials
    with httpx.Client(verify=running.client_ssl(), base_url=running.base_url, timeout=10) as client:
        token = client.post("/ims/token/v3", data={"grant_type": "client_credentials", "client_id": c.campaign_client_id,
                                                   "client_secret": c.campaign_client_secret,
                                                   "scope": "openid,AdobeID,campaign_sdk"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "X-Api-Key": c.campaign_client_id}
        url: str | None = f"{running.base_url}/{c.organization}/campaign/profileAndServices/profile?_lineCount=4"
        emails = []
        while url:
            page = client.get(url, headers=headers).json()
            emails += [p["email"] for p in page["content"]]
            url = page.get("next", {}).get("href")
        assert len(emails) == emulator.data.profiles == 15
        assert not any(p for p in emails if not p)


def test_write_config_points_at_the_emulator(tmp_path: Path, served: tuple[Emulator, Served]) -> None:
    emulator, running = served
    path = write_config(tmp_path / "mapsync.yaml", base_url=running.base_url, ca_file=running.ca_file)
    doc = yaml.safe_load(path.read_text())
    env = doc["environments"]["emulator"]
    assert doc["version"] == 1 and env["d365"]["url"] == running.base_url
    assert env["d365"]["client_secret"] == emulator.credentials.d365_client_secret  # throw-away, loopback only
    assert env["events"]["journal_url"] == running.base_url + emulator.credentials.journal_path
    assert env["ca_file"] == str(running.ca_file) and env["state"].startswith("sqlite:///")


def test_control_endpoints_edit_opt_out_deliver_and_reset() -> None:
    emulator = Emulator(seed=3, contacts=40)
    client = TestClient(emulator.app, base_url="https://emu.test")
    contacts = client.get("/_emulator/state/d365/contact?limit=2").json()
    assert contacts["count"] == 40 and len(contacts["rows"]) == 2
    first = contacts["rows"][0]
    emulator.clock.advance(10)
    edited = client.patch(f"/_emulator/d365/contact/{first['contactid']}", json={"lastname": "Renamed"}).json()
    assert edited["lastname"] == "Renamed" and edited["versionnumber"] > first["versionnumber"]
    assert edited["modifiedon"] > first["modifiedon"]
    created = client.post("/_emulator/d365/contact", json={"lastname": "New", "emailaddress1": "new@example.com"})
    assert created.status_code == 201
    assert client.delete(f"/_emulator/d365/contact/{created.json()['contactid']}").status_code == 204
    assert client.delete(f"/_emulator/d365/contact/{created.json()['contactid']}").status_code == 404
    profiles = client.get("/_emulator/state/campaign/profile").json()["rows"]
    opted = client.post(f"/_emulator/campaign/profiles/{profiles[0]['PKey']}/opt-out", json={"channel": "email"}).json()
    assert opted["blackListEmail"] is True
    sent = client.post("/_emulator/campaign/deliveries", json={"label": "L", "campaign": "C"}).json()
    assert sent["counts"]["send"] >= 1 and client.get("/_emulator/state/journal").json()["count"] > 0
    assert client.put("/_emulator/faults", json={"profile": "hostile"}).json()["p_429"] > 0
    assert client.put("/_emulator/limits", json={"campaign_requests": 5}).json()["campaign_requests"] == 5
    counters = client.get("/_emulator/counters").json()
    assert set(counters) >= {"requests", "statuses", "throttled_429", "faults_injected"}
    assert client.post("/_emulator/reset").status_code == 204
    assert client.get("/_emulator/state").json()["journal"]["events"] == 0
    assert client.get(f"/_emulator/d365/contact/{first['contactid']}").status_code == 405
    again = client.get("/_emulator/state/d365/contact?limit=1").json()["rows"][0]
    assert again["lastname"] == first["lastname"]
    assert client.get("/_emulator/state/d365/nope").status_code == 404
    assert client.post("/_emulator/clock", json={"advance_seconds": -1}).status_code == 400


def test_faults_are_injected_and_counted_on_adobe_paths() -> None:
    emulator = Emulator(seed=3, contacts=10, faults="none")
    client = TestClient(emulator.app, base_url="https://emu.test")
    c = emulator.credentials
    token = client.post("/ims/token/v3", data={"grant_type": "client_credentials", "client_id": c.campaign_client_id,
                                               "client_secret": c.campaign_client_secret}).json()["access_token"]
    client.put("/_emulator/faults", json={"p_503": 1.0})
    reply = client.get(f"/{c.organization}/campaign/profileAndServices/profile",
                       headers={"Authorization": f"Bearer {token}", "X-Api-Key": c.campaign_client_id})
    assert reply.status_code == 503 and reply.json()["error_code"] == "503" and "retry-after" in reply.headers
    counters = client.get("/_emulator/counters").json()
    assert counters["faults_injected"]["adobe"] == {"503": 1}
    assert counters["statuses"]["campaign"] == {"503": 1}
