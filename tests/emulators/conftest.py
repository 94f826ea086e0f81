"""Shared fixtures for the emulator tests: a seeded Dataverse store, a token issuer with one registered
client, and an in-process httpx client bound to the standalone Dataverse app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mapsync.dsl.schema import load_catalog
from mapsync.emulators.dataverse.app import build_dataverse_app
from mapsync.emulators.dataverse.store import DataverseStore
from mapsync.emulators.limits import ServiceProtection
from mapsync.emulators.tokens import TokenIssuer

TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "app-client"
SECRET = "s3cret-value"  # test-only credential of the emulator
API = "/api/data/v9.2"


@pytest.fixture
def issuer() -> TokenIssuer:
    issuer = TokenIssuer()
    issuer.register_client(TENANT, CLIENT_ID, SECRET)
    return issuer


@pytest.fixture
def store() -> DataverseStore:
    return DataverseStore(load_catalog())


@pytest.fixture
def protection() -> ServiceProtection:
    return ServiceProtection()


@pytest.fixture
def token(issuer: TokenIssuer) -> str:
    return issuer.issue(CLIENT_ID, "https://org.crm.dynamics.com/.default")[0]


@pytest.fixture
async def dv(store: DataverseStore, issuer: TokenIssuer, protection: ServiceProtection, token: str) -> AsyncIterator[httpx.AsyncClient]:
    app = build_dataverse_app(store, issuer, protection)
    headers = {"Authorization": f"Bearer {token}", "OData-MaxVersion": "4.0", "OData-Version": "4.0",
               "Accept": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://org.test" + API + "/",
                                 headers=headers) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
