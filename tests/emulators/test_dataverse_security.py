"""The application user and its privileges (``systemusers``, ``RetrieveUserPrivileges``), and the setup switches
of ``/_emulator/setup`` that break them, the Campaign resources, the journal and the clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from mapsync.emulators.server import Emulator

pytestmark = pytest.mark.anyio
API = "/api/data/v9.2/"
ODATA = {"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    emu = Emulator(contacts=5)
    c = emu.credentials
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.app), base_url="https://org.test") as http:
        token = (await http.post(f"/{c.tenant_id}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": c.d365_client_id, "client_secret": c.d365_client_secret,
            "scope": "https://org.test/.default"})).json()["access_token"]
        http.headers.update({**ODATA, "Authorization": f"Bearer {token}"})
        yield http


async def test_whoami_user_is_an_enabled_non_interactive_application_user(client: httpx.AsyncClient) -> None:
    who = (await client.get(API + "WhoAmI")).json()
    row = (await client.get(API + f"systemusers({who['UserId']})",
                            params={"$select": "isdisabled,accessmode,applicationid"})).json()
    assert row["@odata.context"].endswith("$metadata#systemusers/$entity")
    assert row["systemuserid"] == who["UserId"]
    assert (row["isdisabled"], row["accessmode"], row["applicationid"]) == (False, 4, "11111111-1111-4111-8111-111111111111")
    assert "fullname" not in row  # $select is honoured
    other = await client.get(API + "systemusers(00000000-0000-0000-0000-000000000001)")
    assert other.status_code == 404
    filters = (await client.get(API + "sdkmessagefilters", params={
        "$select": "sdkmessagefilterid", "$filter": "primaryobjecttypecode eq 'systemuser'",
        "$expand": "sdkmessageid($select=name)"})).json()["value"]
    assert {f["sdkmessageid"]["name"] for f in filters} == {"Retrieve", "RetrieveUserPrivileges"}


async def test_retrieve_user_privileges_lists_role_privileges_and_follows_the_switch(client: httpx.AsyncClient) -> None:
    user = (await client.get(API + "WhoAmI")).json()["UserId"]
    url = API + f"systemusers({user})/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()"
    body = (await client.get(url)).json()
    assert body["@odata.context"].endswith("$metadata#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse")
    first = body["RolePrivileges"][0]
    assert set(first) == {"BusinessUnitId", "Depth", "PrivilegeId", "PrivilegeName"}
    names = {p["PrivilegeName"] for p in body["RolePrivileges"]}
    assert {"prvReadContact", "prvWriteContact", "prvAppendToContact", "prvCreateacs_emailsend"} <= names
    assert {p["Depth"] for p in body["RolePrivileges"]} == {"Global"}

    assert (await client.put("/_emulator/setup", json={"privileges": {"remove": ["prvReadContact"]}})).status_code == 200
    names = {p["PrivilegeName"] for p in (await client.get(url)).json()["RolePrivileges"]}
    assert "prvReadContact" not in names and "prvWriteContact" in names
    refused = await client.get(API + "contacts", params={"$select": "fullname"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "0x80040220"
    assert "is missing prvReadContact privilege" in refused.json()["error"]["message"]
    assert (await client.get(API + "accounts", params={"$select": "name"})).status_code == 200

    await client.put("/_emulator/setup", json={"privileges": {"restore": ["prvReadContact"]}})
    assert (await client.get(API + "contacts", params={"$select": "fullname"})).status_code == 200


@pytest.mark.parametrize(("state", "code", "words"), [("missing", "0x80072560", "not a member of the organization"),
                                                      ("disabled", "0x8004ac7b", "is disabled")])
async def test_a_missing_or_disabled_application_user_is_refused_everywhere(
        client: httpx.AsyncClient, state: str, code: str, words: str) -> None:
    await client.put("/_emulator/setup", json={"application_user": state})
    for path in ("WhoAmI", "contacts", "EntityDefinitions(LogicalName='contact')"):
        r = await client.get(API + path)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == code and words in r.json()["error"]["message"]
    await client.delete("/_emulator/setup")
    assert (await client.get(API + "WhoAmI")).status_code == 200


async def test_change_tracking_and_key_status_switches_show_in_metadata_and_reads(client: httpx.AsyncClient) -> None:
    await client.put("/_emulator/setup", json={"change_tracking": {"contact": False},
                                               "key_status": {"acs_emailsend:acs_eventid_key": "Failed"}})
    entity = (await client.get(API + "EntityDefinitions(LogicalName='contact')",
                               params={"$select": "ChangeTrackingEnabled,SchemaName"})).json()
    assert entity["ChangeTrackingEnabled"] is False and entity["SchemaName"] == "Contact"
    tracked = await client.get(API + "contacts", params={"$select": "fullname"},
                               headers={"Prefer": "odata.track-changes"})
    assert tracked.status_code == 400
    keys = (await client.get(API + "EntityDefinitions(LogicalName='acs_emailsend')/Keys")).json()["value"]
    assert [k["EntityKeyIndexStatus"] for k in keys] == ["Failed"]
    expanded = (await client.get(API + "EntityDefinitions(LogicalName='acs_emailsend')",
                                 params={"$expand": "Keys"})).json()
    assert [k["EntityKeyIndexStatus"] for k in expanded["Keys"]] == ["Failed"]

    await client.put("/_emulator/setup", json={"change_tracking": {"contact": None},
                                               "key_status": {"acs_emailsend:acs_eventid_key": "Active"}})
    entity = (await client.get(API + "EntityDefinitions(LogicalName='contact')")).json()
    assert entity["ChangeTrackingEnabled"] is True
    keys = (await client.get(API + "EntityDefinitions(LogicalName='acs_emailsend')/Keys")).json()["value"]
    assert [k["EntityKeyIndexStatus"] for k in keys] == ["Active"]


async def test_every_service_reply_carries_a_date_moved_by_the_clock_skew(client: httpx.AsyncClient) -> None:
    import time

    before = (await client.get(API + "WhoAmI")).headers["date"]
    assert abs(parsedate_to_datetime(before).timestamp() - time.time()) < 5
    await client.put("/_emulator/setup", json={"clock_skew_seconds": 600})
    after = (await client.get(API + "WhoAmI")).headers.get_list("date")
    assert len(after) == 1
    assert 595 < parsedate_to_datetime(after[0]).timestamp() - time.time() < 605
    assert "date" not in (await client.get("/_emulator/setup")).headers  # the control endpoints are no service


@pytest.mark.parametrize("body", [{"application_user": "gone"}, {"privileges": ["prvReadContact"]},
                                  {"key_status": {"acs_eventid_key": "Failed"}}, {"key_status": {"a:b": "Broken"}},
                                  {"journal": "off"}, {"clock_skew_seconds": "10"}, {"nonsense": 1}])
async def test_a_switch_that_is_not_understood_is_refused_and_changes_nothing(
        client: httpx.AsyncClient, body: dict[str, object]) -> None:
    r = await client.put("/_emulator/setup", json={"application_user": "disabled", **body})
    assert r.status_code == 400 and r.json()["error"]
    assert (await client.get("/_emulator/setup")).json()["application_user"] == "enabled"
