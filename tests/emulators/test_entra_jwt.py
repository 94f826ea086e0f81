"""Entra ID access tokens are RS256 JWTs a client can validate with the tenant's published keys, carrying
the claims of an app-only token; Dataverse refuses an expired one with the documented 401 challenge."""

from __future__ import annotations

import httpx
import jwt
import pytest

from mapsync.emulators.jwt_signer import JwtSigner
from mapsync.emulators.server import Emulator
from mapsync.emulators.tokens import TokenIssuer

pytestmark = pytest.mark.anyio
BASE = "https://emulator.test"


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(seed=1, contacts=5)


def _client(emulator: Emulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app), base_url=BASE)


async def _token(c: httpx.AsyncClient, emulator: Emulator) -> dict:
    creds = emulator.credentials
    config = (await c.get(f"/{creds.tenant_id}/v2.0/.well-known/openid-configuration")).json()
    r = await c.post(config["token_endpoint"], data={
        "grant_type": "client_credentials", "client_id": creds.d365_client_id,
        "client_secret": creds.d365_client_secret, "scope": f"{BASE}/.default"})
    assert r.status_code == 200
    return r.json()


async def test_token_validates_against_the_tenants_published_keys(emulator: Emulator) -> None:
    creds = emulator.credentials
    async with _client(emulator) as c:
        reply = await _token(c, emulator)
        token = reply["access_token"]
        v2 = (await c.get(f"/{creds.tenant_id}/v2.0/.well-known/openid-configuration")).json()
        assert v2["jwks_uri"] == f"{BASE}/{creds.tenant_id}/discovery/v2.0/keys"
        keys = (await c.get(v2["jwks_uri"])).json()
        v1 = (await c.get(f"/{creds.tenant_id}/.well-known/openid-configuration")).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT" and header["kid"] == header["x5t"]
    [jwk] = [k for k in keys["keys"] if k["kid"] == header["kid"]]
    assert jwk["kty"] == "RSA" and jwk["use"] == "sig" and jwk["x5c"]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=BASE, issuer=v1["issuer"])
    assert claims["tid"] == creds.tenant_id and claims["appid"] == creds.d365_client_id
    assert claims["iss"] == f"https://sts.windows.net/{creds.tenant_id}/"
    assert claims["idtyp"] == "app" and claims["ver"] == "1.0" and claims["oid"] == claims["sub"]
    assert "roles" not in claims  # the emulator's app registration has no app roles
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == reply["expires_in"] + 300
    assert reply["token_type"] == "Bearer"


def test_roles_claim_when_the_app_has_roles() -> None:
    issuer = TokenIssuer(signer=JwtSigner())
    issuer.register_client("tenant-a", "app-a", "s", roles=("Data.Sync",))
    token, _ = issuer.issue("app-a", "https://org.example/.default")
    assert jwt.decode(token, options={"verify_signature": False})["roles"] == ["Data.Sync"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert issuer.validate(forged) is None and issuer.signer is not None and issuer.signer.verify(forged) is None


async def test_expired_token_gets_the_documented_401(emulator: Emulator) -> None:
    tenant = emulator.credentials.tenant_id
    async with _client(emulator) as c:
        token = (await _token(c, emulator))["access_token"]
        ok = await c.get("/api/data/v9.2/WhoAmI", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        emulator.clock.advance(3600)
        expired = await c.get("/api/data/v9.2/WhoAmI", headers={"Authorization": f"Bearer {token}"})
        missing = await c.get("/api/data/v9.2/WhoAmI")
    where = f"authorization_uri={BASE}/{tenant}/oauth2/authorize, resource_id={BASE}/"
    assert expired.status_code == 401 and expired.content == b""
    assert expired.headers["www-authenticate"] == (
        f'Bearer error=invalid_token, error_description="Error during token validation!", {where}')
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == f"Bearer {where}"
