"""Campaign Standard REST contract (PROTOCOLS.md §4): list/paging, filters, CRUD, metadata, validation, 429."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from mapsync.emulators.journal import Clock
from mapsync.emulators.server import AdobeServices, Credentials, Limits

C = Credentials()
BASE = f"/{C.organization}/campaign"
PROFILE = f"{BASE}/profileAndServices/profile"
EXT = f"{BASE}/profileAndServicesExt/profile"
VEHICLE = f"{BASE}/profileAndServicesExt/cusVehicle"


@pytest.fixture()
def adobe() -> AdobeServices:
    return AdobeServices(clock=Clock(datetime(2024, 5, 1, 8, 30, 15, tzinfo=UTC)))


@pytest.fixture()
def client(adobe: AdobeServices) -> TestClient:
    c = TestClient(Starlette(routes=adobe.routes()), base_url="https://mc.test")
    token = c.post("/ims/token/v3", data={"grant_type": "client_credentials", "client_id": C.campaign_client_id,
                                          "client_secret": C.campaign_client_secret}).json()["access_token"]
    c.headers.update({"Authorization": f"Bearer {token}", "X-Api-Key": C.campaign_client_id})
    return c


def _create(client: TestClient, **fields: object) -> dict:
    reply = client.post(PROFILE, json=fields)
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_create_returns_201_with_pkey_href_and_campaign_dates(client: TestClient) -> None:
    body = _create(client, email="zoe@example.com", firstName="Zoë", lastName="Müller", gender="female")
    assert body["PKey"].startswith("@")
    assert body["href"] == f"https://mc.test{PROFILE}/{body['PKey']}"
    assert body["created"] == body["lastModified"] == "2024-05-01 08:30:15.000Z"
    assert body["firstName"] == "Zoë" and body["middleName"] == "" and body["blackListEmail"] is False
    assert "cusFullName" not in body  # extension fields only on profileAndServicesExt
    assert client.get(body["href"]).json() == body


def test_ext_view_shows_and_accepts_extension_fields(client: TestClient) -> None:
    body = client.post(EXT, json={"email": "a@example.com", "cusFullName": "Ann Example"}).json()
    assert body["cusFullName"] == "Ann Example"
    assert body["href"].startswith(f"https://mc.test{EXT}/")
    reply = client.post(PROFILE, json={"email": "b@example.com", "cusFullName": "x"})
    assert reply.status_code == 400 and reply.json()["error_code"] == "400"


def test_patch_replies_pkey_and_href_and_bumps_last_modified(client: TestClient, adobe: AdobeServices) -> None:
    pkey = _create(client, email="p@example.com", location={"city": "Lyon"})["PKey"]
    adobe.clock.advance(61.5)
    reply = client.patch(f"{PROFILE}/{pkey}", json={"lastName": "Dupont", "location": {"zipCode": "69001"}})
    assert reply.status_code == 200
    assert reply.json() == {"PKey": pkey, "href": f"https://mc.test{PROFILE}/{pkey}"}
    got = client.get(f"{PROFILE}/{pkey}").json()
    assert got["lastName"] == "Dupont" and got["location"]["city"] == "Lyon" and got["location"]["zipCode"] == "69001"
    assert got["lastModified"] == "2024-05-01 08:31:16.500Z" and got["created"] == "2024-05-01 08:30:15.000Z"


def test_delete_then_404(client: TestClient) -> None:
    pkey = _create(client, email="d@example.com")["PKey"]
    assert client.delete(f"{PROFILE}/{pkey}").status_code == 200
    for reply in (client.get(f"{PROFILE}/{pkey}"), client.delete(f"{PROFILE}/{pkey}"),
                  client.patch(f"{PROFILE}/{pkey}", json={"lastName": "x"})):
        assert reply.status_code == 404 and reply.json()["error_code"] == "404"
    assert client.get(f"{PROFILE}/@notAPKey").status_code == 404


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"firstName": "x" * 31}, "maximum is 30"),
    ({"email": "e" * 129}, "maximum is 128"),
    ({"gender": "other"}, "not one of"),
    ({"birthDate": "1980-13-01"}, "YYYY-MM-DD"),
    ({"blackListEmail": "yes"}, "true or false"),
    ({"location": {"planet": "Mars"}}, "planet"),
    ({"nickname": "x"}, "nickname"),
])
def test_validation_errors_are_400_with_error_code(client: TestClient, fields: dict, fragment: str) -> None:
    reply = client.post(PROFILE, json=fields)
    assert reply.status_code == 400
    body = reply.json()
    assert set(body) == {"error_code", "message"} and fragment in body["message"]


def test_paging_follows_next_href_until_absent(client: TestClient, adobe: AdobeServices) -> None:
    adobe.store.insert_many("profile", [{"email": f"u{i}@example.com"} for i in range(60)])
    first = client.get(PROFILE).json()
    assert len(first["content"]) == 25  # default _lineCount
    seen, url, pages = [], f"{PROFILE}?_lineCount=20", 0
    while url:
        page = client.get(url).json()
        seen += [p["email"] for p in page["content"]]
        url = page.get("next", {}).get("href")
        pages += 1
        if url:
            assert "_lineStart=" in url and "_lineCount=20" in url
    assert pages == 3 and seen == [f"u{i}@example.com" for i in range(60)]
    count_href = first["count"]["href"]
    assert client.get(count_href).json() == {"count": 60}


def test_big_tables_need_force_pagination() -> None:
    adobe = AdobeServices(big_table_threshold=10)
    client = TestClient(Starlette(routes=adobe.routes()), base_url="https://mc.test")
    token = client.post("/ims/token/v3", data={"grant_type": "client_credentials", "client_id": C.campaign_client_id,
                                               "client_secret": C.campaign_client_secret}).json()["access_token"]
    client.headers.update({"Authorization": f"Bearer {token}", "X-Api-Key": C.campaign_client_id})
    adobe.store.insert_many("profile", [{"email": f"u{i}@example.com"} for i in range(30)])
    assert "next" not in client.get(PROFILE).json()
    forced = client.get(f"{PROFILE}?_forcePagination=true").json()
    assert "_forcePagination=true" in forced["next"]["href"]


def test_filters_by_email_text_and_custom(client: TestClient) -> None:
    a = _create(client, email="Jean.Dupont@Example.com", firstName="Jean", externalId="ext-1")
    _create(client, email="marie@example.com", firstName="Marie", lastName="Dupontel")
    by_email = client.get(f"{PROFILE}/byEmail?email=jean.dupont@example.com").json()
    assert [p["PKey"] for p in by_email["content"]] == [a["PKey"]]
    by_text = client.get(f"{PROFILE}/byText?text=dupont").json()
    assert len(by_text["content"]) == 2
    by_ext = client.get(f"{EXT}/byExternalId?externalId_parameter=ext-1").json()
    assert [p["PKey"] for p in by_ext["content"]] == [a["PKey"]]
    assert client.get(f"{PROFILE}/byEmail/_count?email=nobody@example.com").json() == {"count": 0}
    assert client.get(f"{PROFILE}/byEmail").status_code == 400


def test_custom_resource_links_must_point_at_an_existing_profile(client: TestClient) -> None:
    pkey = _create(client, email="owner@example.com")["PKey"]
    car = client.post(VEHICLE, json={"cusVin": "WVWZZZ1JZXW000001", "cusYear": 2019, "cusExternalId": "v-1",
                                     "cusProfile": {"PKey": pkey}})
    assert car.status_code == 201, car.text
    assert car.json()["cusProfile"]["PKey"] == pkey
    bad = client.post(VEHICLE, json={"cusVin": "X", "cusProfile": {"PKey": "@AAAAAAAAAAAA"}})
    assert bad.status_code == 400 and "does not exist" in bad.json()["message"]
    assert client.post(VEHICLE, json={"cusYear": "2019"}).status_code == 400
    found = client.get(f"{VEHICLE}/byExternalId?cusExternalId_parameter=v-1").json()["content"]
    assert [v["cusVin"] for v in found] == ["WVWZZZ1JZXW000001"]


def test_resource_type_metadata_comes_from_the_snapshot(client: TestClient) -> None:
    meta = client.get(f"{BASE}/profileAndServices/resourceType/profile").json()
    assert meta["content"]["firstName"]["type"] == "string" and meta["content"]["firstName"]["length"] == 30
    assert meta["content"]["gender"]["values"] == ["male", "female", "unknown", "notApplicable"]
    assert "cusFullName" not in meta["content"]
    ext = client.get(f"{BASE}/profileAndServicesExt/resourceType/profile").json()
    assert ext["content"]["cusFullName"]["length"] == 100


def test_rate_limit_answers_429_with_retry_after(client: TestClient, adobe: AdobeServices) -> None:
    adobe.set_limits(Limits(campaign_requests=3, campaign_window_seconds=60))
    codes = [client.get(PROFILE).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    reply = client.get(PROFILE)
    assert reply.status_code == 429 and int(reply.headers["Retry-After"]) >= 1
    assert reply.json()["error_code"] == "429050"
