"""Bulk operation messages: discovery through sdkmessagefilters, CreateMultiple / UpdateMultiple / UpsertMultiple
as Microsoft documents them, whole-request failure on a standard table, and their service-protection cost."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mapsync.emulators.dataverse.app import build_dataverse_app
from mapsync.emulators.dataverse.bulk import BULK_ROW_EXECUTION_MS
from mapsync.emulators.dataverse.security import DataverseSetup
from mapsync.emulators.dataverse.store import DataverseStore
from mapsync.emulators.limits import ServiceProtection
from mapsync.emulators.setup import Setup
from mapsync.emulators.tokens import TokenIssuer
from tests.emulators.conftest import API

pytestmark = pytest.mark.anyio

TYPE = "Microsoft.Dynamics.CRM.acs_emailsend"
FILTER_QUERY = ("sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name eq @message and "
                "primaryobjecttypecode eq @table&@message='{message}'&@table='{table}'")


@pytest.fixture
def setup() -> Setup:
    return Setup()


@pytest.fixture
async def bulk(store: DataverseStore, issuer: TokenIssuer, protection: ServiceProtection, token: str,
               setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    app = build_dataverse_app(store, issuer, protection, setup=setup.dataverse)
    headers = {"Authorization": f"Bearer {token}", "OData-MaxVersion": "4.0", "OData-Version": "4.0",
               "Accept": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://org.test" + API + "/",
                                 headers=headers) as client:
        yield client


def _sends(n: int, start: int = 0, **extra: object) -> list[dict[str, object]]:
    return [{"@odata.type": TYPE, "subject": f"Sent {i}", "acs_eventid": f"evt-{i}", **extra} for i in range(start, start + n)]


async def test_message_filters_answer_the_documented_query(bulk: httpx.AsyncClient, setup: Setup) -> None:
    for message in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple"):
        r = await bulk.get(FILTER_QUERY.format(message=message, table="acs_emailsend"))
        assert r.status_code == 200
        body = r.json()
        assert body["@odata.context"].endswith("$metadata#sdkmessagefilters(sdkmessagefilterid)")
        assert len(body["value"]) == 1 and set(body["value"][0]) == {"@odata.etag", "sdkmessagefilterid"}
    r = await bulk.get(FILTER_QUERY.format(message="DeleteMultiple", table="acs_emailsend"))
    assert r.json()["value"] == []  # elastic tables only
    setup.update({"messages": {"remove": ["acs_emailsend:CreateMultiple"]}})
    r = await bulk.get(FILTER_QUERY.format(message="CreateMultiple", table="acs_emailsend"))
    assert r.json()["value"] == []
    r = await bulk.get(FILTER_QUERY.format(message="CreateMultiple", table="contact"))
    assert len(r.json()["value"]) == 1  # only the named table lost it
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(1)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040800"


async def test_create_multiple_answers_the_ids_in_order(bulk: httpx.AsyncClient, store: DataverseStore) -> None:
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(3)})
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"].endswith("/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse")
    rows = {row["acs_eventid"]: row for row in store.rows("acs_emailsend")}
    assert body["Ids"] == [rows[f"evt-{i}"]["activityid"] for i in range(3)]
    assert rows["evt-1"]["subject"] == "Sent 1" and rows["evt-1"]["statecode"] == 0  # the defaults of a create


async def test_a_failing_row_fails_the_whole_request(bulk: httpx.AsyncClient, store: DataverseStore) -> None:
    targets = _sends(5)
    targets[3]["subject"] = "x" * 201  # too long: Dataverse refuses this row
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": targets})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "0x80044331" and "'subject'" in error["message"]
    assert store.count("acs_emailsend") == 0  # the three rows before it were rolled back
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(2)})
    assert r.status_code == 200
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(3, start=1)})
    assert r.status_code == 412 or r.json()["error"]["code"] == "0x80060892"  # evt-1 exists: a duplicate key
    assert store.count("acs_emailsend") == 2


async def test_planted_row_fails_a_bulk_request_and_only_its_part_of_a_batch(
        bulk: httpx.AsyncClient, store: DataverseStore, setup: Setup) -> None:
    setup.update({"reject_rows": {"acs_emailsend": ["evt-2"]}})
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(4)})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80040265" and "evt-2" in r.json()["error"]["message"]
    assert store.count("acs_emailsend") == 0
    r = await bulk.post("acs_emailsends", json={"subject": "alone", "acs_eventid": "evt-2"})
    assert r.status_code == 400  # the same row refused by a single create too
    setup.update({"reject_rows": {"acs_emailsend": None}})
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(4)})
    assert r.status_code == 200 and store.count("acs_emailsend") == 4


async def test_upsert_multiple_by_alternate_key(bulk: httpx.AsyncClient, store: DataverseStore) -> None:
    first = [{"@odata.type": TYPE, "subject": "one", "@odata.id": "acs_emailsends(acs_eventid='evt-1')"}]
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": first})
    assert r.status_code == 204 and r.content == b""
    again = [{"@odata.type": TYPE, "subject": "one again", "@odata.id": "acs_emailsends(acs_eventid='evt-1')"},
             {"@odata.type": TYPE, "subject": "two", "acs_eventid": "evt-2"}]  # the key column in the body
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": again})
    assert r.status_code == 204
    rows = {row["acs_eventid"]: row["subject"] for row in store.rows("acs_emailsend")}
    assert rows == {"evt-1": "one again", "evt-2": "two"}  # updated, not duplicated; the other created


async def test_update_multiple_needs_existing_rows(bulk: httpx.AsyncClient, store: DataverseStore) -> None:
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(2)})
    ids = r.json()["Ids"]
    update = [{"@odata.type": TYPE, "activityid": ids[0], "subject": "changed"},
              {"@odata.type": TYPE, "activityid": "00000000-0000-0000-0000-000000000001", "subject": "gone"}]
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": update})
    assert r.status_code == 404 and "Do Not Exist" in r.json()["error"]["message"]
    assert {row["subject"] for row in store.rows("acs_emailsend")} == {"Sent 0", "Sent 1"}
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": update[:1]})
    assert r.status_code == 204 and {row["subject"] for row in store.rows("acs_emailsend")} == {"changed", "Sent 1"}


async def test_targets_must_carry_their_type(bulk: httpx.AsyncClient) -> None:
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple",
                        json={"Targets": [{"subject": "no type", "acs_eventid": "e"}]})
    assert r.status_code == 400 and "@odata.type" in r.json()["error"]["message"]
    r = await bulk.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": []})
    assert r.status_code == 400
    r = await bulk.get("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple")
    assert r.status_code == 404


async def test_a_bulk_request_counts_once_plus_its_execution_time(
        store: DataverseStore, issuer: TokenIssuer, token: str) -> None:
    protection = ServiceProtection(requests=2, execution_ms=10_000_000, window_seconds=300)
    app = build_dataverse_app(store, issuer, protection, setup=DataverseSetup())
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://org.test" + API + "/",
                                 headers=headers) as client:
        r = await client.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(500)})
        assert r.status_code == 200 and store.count("acs_emailsend") == 500
        assert r.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] == "1"  # 500 rows, one request
        spent = 10_000_000 - float(r.headers["x-ms-ratelimit-time-remaining-xrm-requests"])
        assert spent >= 500 * BULK_ROW_EXECUTION_MS
        r = await client.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(1, 500)})
        r = await client.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(1, 501)})
        assert r.status_code == 429 and r.json()["error"]["code"] == "0x80072322"


async def test_execution_time_of_bulk_rows_reaches_the_limit(
        store: DataverseStore, issuer: TokenIssuer, token: str) -> None:
    protection = ServiceProtection(requests=100, execution_ms=int(100 * BULK_ROW_EXECUTION_MS), window_seconds=300)
    app = build_dataverse_app(store, issuer, protection, setup=DataverseSetup())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://org.test" + API + "/",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        r = await client.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(100)})
        assert r.status_code == 200
        r = await client.post("acs_emailsends/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": _sends(1, 100)})
        assert r.status_code == 429 and r.json()["error"]["code"] == "0x80072321"  # execution time, not requests
