"""Adobe IMS token endpoint and the I/O gateway check (PROTOCOLS.md §3, §4 headers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.testclient import TestClient

from mapsync.emulators.journal import Clock
from mapsync.emulators.server import AdobeServices, Credentials

C = Credentials()


@pytest.fixture()
def adobe() -> AdobeServices:
    return AdobeServices(clock=Clock(datetime(2024, 5, 1, tzinfo=UTC)))


@pytest.fixture()
def client(adobe: AdobeServices) -> TestClient:
    from starlette.applications import Starlette

    return TestClient(Starlette(routes=adobe.routes()), base_url="https://mc.test")


def _token_form(**over: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_id": C.campaign_client_id,
            "client_secret": C.campaign_client_secret, "scope": "openid,AdobeID,campaign_sdk"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def test_token_reply_has_the_documented_shape(client: TestClient) -> None:
    reply = client.post("/ims/token/v3", data=_token_form())
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 86399
    assert C.campaign_client_secret not in reply.text


def test_client_id_may_come_in_the_query_string(client: TestClient) -> None:
    form = _token_form()
    del form["client_id"]
    reply = client.post(f"/ims/token/v3?client_id={C.campaign_client_id}", data=form)
    assert reply.status_code == 200


@pytest.mark.parametrize(("over", "status", "error"), [
    ({"client_secret": "wrong"}, 401, "invalid_client"),
    ({"client_id": "nobody"}, 401, "invalid_client"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ({"grant_type": ""}, 400, "invalid_request"),
])
def test_token_errors_are_oauth_shaped(client: TestClient, over: dict[str, str], status: int, error: str) -> None:
    reply = client.post("/ims/token/v3", data=_token_form(**over))
    assert reply.status_code == status
    body = reply.json()
    assert body["error"] == error and body["error_description"]
    assert "wrong" not in body["error_description"]


def _campaign(client: TestClient, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    reply = client.get(f"/{C.organization}/campaign/profileAndServices/profile", headers=headers)
    return reply.status_code, reply.json()


def test_gateway_errors_for_missing_or_bad_headers(client: TestClient, adobe: AdobeServices) -> None:
    token = client.post("/ims/token/v3", data=_token_form()).json()["access_token"]
    good = {"Authorization": f"Bearer {token}", "X-Api-Key": C.campaign_client_id}
    assert _campaign(client, {"X-Api-Key": C.campaign_client_id}) == (
        403, {"error_code": "403010", "message": "Oauth token is missing."})
    assert _campaign(client, {**good, "Authorization": "Bearer nope"}) == (
        401, {"error_code": "401013", "message": "Oauth token is not valid"})
    assert _campaign(client, {"Authorization": good["Authorization"]}) == (
        403, {"error_code": "403000", "message": "Api Key is required"})
    assert _campaign(client, {**good, "X-Api-Key": "someone-else"}) == (
        403, {"error_code": "403003", "message": "Api Key is invalid"})
    assert _campaign(client, good)[0] == 200


def test_token_expires_after_its_lifetime(client: TestClient, adobe: AdobeServices) -> None:
    token = client.post("/ims/token/v3", data=_token_form()).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "X-Api-Key": C.campaign_client_id}
    adobe.clock.advance(86398)
    assert _campaign(client, headers)[0] == 200
    adobe.clock.advance(2)
    assert _campaign(client, headers)[0] == 401
