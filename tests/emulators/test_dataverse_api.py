"""Contract tests of the Dataverse Web API emulator, one per point of PROTOCOLS.md §2, in-process."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mapsync.emulators.dataverse.store import DataverseStore

pytestmark = pytest.mark.anyio


def _contact(store: DataverseStore, **values: object) -> dict:
    return store.insert("contact", {"lastname": "Doe", **values})


async def test_missing_or_expired_token_is_401_with_challenge(dv: httpx.AsyncClient, issuer) -> None:
    r = await dv.get("contacts", headers={"Authorization": ""})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer authorization_uri=")
    issuer.expire_all()
    assert (await dv.get("contacts")).status_code == 401


async def test_metadata_is_csdl_from_snapshots(dv: httpx.AsyncClient) -> None:
    r = await dv.get("$metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/xml")
    assert '<EntityType Name="contact" BaseType="mscrm.crmbaseentity">' in r.text
    assert '<Key><PropertyRef Name="contactid"/></Key>' in r.text
    assert '<Property Name="firstname" Type="Edm.String" MaxLength="50"/>' in r.text
    assert '<Property Name="_parentcustomerid_value" Type="Edm.Guid"/>' in r.text
    assert '<NavigationProperty Name="parentcustomerid_account" Type="mscrm.account"/>' in r.text
    assert '<EntitySet Name="new_vehicles" EntityType="Microsoft.Dynamics.CRM.new_vehicle"/>' in r.text


async def test_picklist_labels(dv: httpx.AsyncClient) -> None:
    r = await dv.get("EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                     params={"$select": "LogicalName", "$expand": "OptionSet"})
    assert r.status_code == 200
    attrs = {a["LogicalName"]: a for a in r.json()["value"]}
    assert "gendercode" in attrs
    options = attrs["gendercode"]["OptionSet"]["Options"]
    assert all(o["Label"]["UserLocalizedLabel"]["Label"] for o in options)
    assert {o["Value"] for o in options} >= {1, 2}


async def test_select_filter_and_unknown_property(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    _contact(store, firstname="Ann", emailaddress1="ann@x.test")
    _contact(store, firstname="O'Brien", emailaddress1="ob@x.test")
    _contact(store, firstname="Bob")
    r = await dv.get("contacts", params={"$select": "firstname,emailaddress1",
                                         "$filter": "firstname eq 'o''brien' or startswith(emailaddress1,'ANN')"})
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"].endswith("/$metadata#contacts(firstname,emailaddress1)")
    assert sorted(v["firstname"] for v in body["value"]) == ["Ann", "O'Brien"]
    assert set(body["value"][0]) == {"@odata.etag", "firstname", "emailaddress1", "contactid"}
    bad = await dv.get("contacts", params={"$select": "Name"})
    assert bad.status_code == 400
    assert bad.json() == {"error": {"code": "0x0", "message":
                                    "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.contact'."}}


async def test_filter_syntax_error_is_real_400_body(dv: httpx.AsyncClient) -> None:
    r = await dv.get("contacts", params={"$filter": "firstname eq 'x"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "0x80060888" and "unterminated string literal" in err["message"]


async def test_unknown_entity_set(dv: httpx.AsyncClient) -> None:
    r = await dv.get("Contact")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "0x8006088a", "message": "Resource not found for the segment 'Contact'."}}


async def test_paging_with_maxpagesize_and_opaque_skiptoken(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    for i in range(25):
        _contact(store, firstname=f"n{i:02d}")
    seen: list[str] = []
    url: str | None = "contacts?$select=firstname"
    pages = 0
    while url:
        r = await dv.get(url, headers={"Prefer": "odata.maxpagesize=10"})
        assert r.status_code == 200
        assert r.headers["preference-applied"] == "odata.maxpagesize=10"
        body = r.json()
        seen += [v["firstname"] for v in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert url.startswith("https://org.test/api/data/v9.2/contacts?") and "$skiptoken=" in url
            assert "$skip=" not in url
        pages += 1
    assert pages == 3 and seen == [f"n{i:02d}" for i in range(25)]


async def test_orderby_and_top(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    for name in ["b", "C", "a", None]:
        _contact(store, firstname=name)
    r = await dv.get("contacts", params={"$select": "firstname", "$orderby": "firstname desc", "$top": "3"})
    assert [v["firstname"] for v in r.json()["value"]] == ["C", "b", "a"]
    assert "@odata.nextLink" not in r.json()


async def test_change_tracking_delta_and_deleted_entity(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    a = _contact(store, firstname="A")
    b = _contact(store, firstname="B")
    r = await dv.get("contacts?$select=firstname", headers={"Prefer": "odata.track-changes"})
    assert r.status_code == 200
    assert "odata.track-changes" in r.headers["preference-applied"]
    body = r.json()
    assert len(body["value"]) == 2 and "$deltatoken=" in body["@odata.deltaLink"]
    store.update("contact", a["contactid"], {"firstname": "A2"})
    store.delete("contact", b["contactid"])
    c = _contact(store, firstname="C")
    r2 = await dv.get(body["@odata.deltaLink"], headers={"Prefer": "odata.track-changes"})
    assert r2.status_code == 200
    values = r2.json()["value"]
    assert [v.get("firstname") for v in values if "firstname" in v] == ["A2", "C"]
    deleted = [v for v in values if v.get("reason") == "deleted"]
    assert deleted == [{"@odata.context": "https://org.test/api/data/v9.2/$metadata#contacts/$deletedEntity",
                        "id": b["contactid"], "reason": "deleted"}]
    assert c["contactid"] in {v.get("contactid") for v in values}
    r3 = await dv.get(r2.json()["@odata.deltaLink"])
    assert r3.json()["value"] == []


async def test_track_changes_rejects_filter_and_untracked_tables(dv: httpx.AsyncClient) -> None:
    r = await dv.get("contacts", params={"$filter": "firstname eq 'x'"}, headers={"Prefer": "odata.track-changes"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80060888"
    r = await dv.get("acs_emailsends", headers={"Prefer": "odata.track-changes"})
    assert r.status_code == 400 and "not enabled for change tracking" in r.json()["error"]["message"]


async def test_expired_delta_token_asks_for_full_sync(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    r = await dv.get("contacts", headers={"Prefer": "odata.track-changes"})
    link = r.json()["@odata.deltaLink"]
    store.expire_change_tracking("contact")
    r2 = await dv.get(link)
    assert r2.status_code == 400
    assert r2.json() == {"error": {"code": "0x80044352", "message":
                                   "Version stamp associated with the client has expired. Please perform a full sync."}}


async def test_delta_token_older_than_retention(store: DataverseStore, dv: httpx.AsyncClient) -> None:
    r = await dv.get("contacts", headers={"Prefer": "odata.track-changes"})
    link = r.json()["@odata.deltaLink"]
    later = datetime.now(UTC) + timedelta(days=8)
    store._clock = lambda: later
    assert (await dv.get(link)).json()["error"]["code"] == "0x80044352"


async def test_create_204_with_entity_id_or_201_representation(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    r = await dv.post("contacts", json={"firstname": "Zed", "lastname": "Z"})
    assert r.status_code == 204
    m = re.fullmatch(r"https://org\.test/api/data/v9\.2/contacts\(([0-9a-f-]{36})\)", r.headers["odata-entityid"])
    assert m and store.get("contact", m.group(1))["fullname"] == "Zed Z"
    r = await dv.post("contacts", json={"lastname": "Y"}, headers={"Prefer": "return=representation"})
    assert r.status_code == 201 and r.json()["lastname"] == "Y" and r.json()["@odata.etag"].startswith('W/"')


async def test_patch_upsert_and_conditions(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    rid = str(uuid.uuid4())
    r = await dv.patch(f"contacts({rid})", json={"lastname": "New"}, headers={"If-Match": "*"})
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "0x80040217", "message": f"contact With Id = {rid} Does Not Exist"}
    r = await dv.patch(f"contacts({rid})", json={"lastname": "New"})
    assert r.status_code == 204 and store.get("contact", rid)["lastname"] == "New"
    r = await dv.patch(f"contacts({rid})", json={"lastname": "Again"}, headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert r.json() == {"error": {"code": "0x80040237", "message": "A record with matching key values already exists."}}
    r = await dv.patch(f"contacts({rid})", json={"lastname": "Upd"}, headers={"If-Match": "*"})
    assert r.status_code == 204 and store.get("contact", rid)["lastname"] == "Upd"


async def test_delete(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    c = _contact(store)
    assert (await dv.delete(f"contacts({c['contactid']})")).status_code == 204
    r = await dv.delete(f"contacts({c['contactid']})")
    assert r.status_code == 404 and r.json()["error"]["code"] == "0x80040217"


async def test_deleting_a_contact_deletes_its_activities_and_clears_custom_lookups(
        dv: httpx.AsyncClient, store: DataverseStore) -> None:
    gone, kept = _contact(store, firstname="Gone"), _contact(store, firstname="Kept")
    ids = {}
    for name, owner in (("gone", gone), ("kept", kept)):
        r = await dv.post("acs_emailsends", headers={"Prefer": "return=representation"}, json={
            "subject": f"send to {name}",
            "regardingobjectid_contact_acs_emailsend@odata.bind": f"/contacts({owner['contactid']})"})
        ids[f"send {name}"] = r.json()["activityid"]
        r = await dv.post("new_vehicles", headers={"Prefer": "return=representation"}, json={
            "new_vin": name, "new_contactid@odata.bind": f"/contacts({owner['contactid']})"})
        ids[f"vehicle {name}"] = r.json()["new_vehicleid"]
    account = store.insert("account", {"name": "Acme", "_primarycontactid_value": gone["contactid"]})
    r = await dv.get("new_vehicles", headers={"Prefer": "odata.track-changes"})
    vehicles_delta = r.json()["@odata.deltaLink"]

    assert (await dv.delete(f"contacts({gone['contactid']})")).status_code == 204

    # The activity about the deleted contact went with it (a parental relationship); the other stays.
    assert (await dv.get(f"acs_emailsends({ids['send gone']})")).status_code == 404
    assert (await dv.get(f"acs_emailsends({ids['send kept']})")).status_code == 200
    sends = (await dv.get("acs_emailsends", params={"$select": "subject"})).json()["value"]
    assert [v["subject"] for v in sends] == ["send to kept"]
    # The vehicle stays with its lookup cleared (Remove Link), and change tracking reports it as changed.
    vehicle = (await dv.get(f"new_vehicles({ids['vehicle gone']})")).json()
    assert vehicle["_new_contactid_value"] is None
    changed = (await dv.get(vehicles_delta)).json()["value"]
    assert [v["new_vehicleid"] for v in changed] == [ids["vehicle gone"]]
    assert store.get("new_vehicle", ids["vehicle kept"])["_new_contactid_value"] == kept["contactid"]
    assert store.get("account", account["accountid"])["_primarycontactid_value"] is None


async def test_a_failed_change_set_restores_what_a_delete_cascaded(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    owner = _contact(store)
    send = store.insert("acs_emailsend", {"subject": "s", "_regardingobjectid_value": owner["contactid"]})
    vehicle = store.insert("new_vehicle", {"new_vin": "V", "_new_contactid_value": owner["contactid"]})
    with pytest.raises(RuntimeError), store.transaction():
        store.remove("contact", owner["contactid"])
        assert store.get("acs_emailsend", send["activityid"]) is None
        raise RuntimeError("the change set's next request failed")
    assert store.get("acs_emailsend", send["activityid"]) is not None
    assert store.get("new_vehicle", vehicle["new_vehicleid"])["_new_contactid_value"] == owner["contactid"]
    # The restored rows are indexed again: a later delete still reaches them.
    store.delete("contact", owner["contactid"])
    assert store.get("acs_emailsend", send["activityid"]) is None
    assert store.get("new_vehicle", vehicle["new_vehicleid"])["_new_contactid_value"] is None


async def test_retrieve_total_record_count(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    _contact(store)
    _contact(store)
    store.insert("account", {"name": "Acme"})
    r = await dv.get("RetrieveTotalRecordCount(EntityNames=['contact','account'])")
    assert r.status_code == 200
    assert r.json() == {
        "@odata.context": "https://org.test/api/data/v9.2/$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse",
        "EntityRecordCountCollection": {"Count": 2, "IsReadOnly": False, "Keys": ["contact", "account"], "Values": [2, 1]}}
    aliased = await dv.get("RetrieveTotalRecordCount(EntityNames=@p1)", params={"@p1": "['contact']"})
    assert aliased.json()["EntityRecordCountCollection"]["Values"] == [2]
    unknown = await dv.get("RetrieveTotalRecordCount(EntityNames=['contacts'])")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "0x80041102"


async def test_bind_must_point_at_existing_row(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    missing = str(uuid.uuid4())
    r = await dv.post("contacts", json={"lastname": "L", "parentcustomerid_account@odata.bind": f"/accounts({missing})"})
    assert r.status_code == 404
    assert r.json()["error"] == {"code": "0x80040217", "message": f"account With Id = {missing} Does Not Exist"}
    acc = store.insert("account", {"name": "Acme"})
    r = await dv.post("contacts", json={"lastname": "L", "parentcustomerid_account@odata.bind": f"/accounts({acc['accountid']})"},
                      headers={"Prefer": "return=representation"})
    assert r.status_code == 201 and r.json()["_parentcustomerid_value"] == acc["accountid"]
    r = await dv.post("contacts", json={"lastname": "L", "parentcustomerid@odata.bind": f"/accounts({acc['accountid']})"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x80048d19"


async def test_alternate_key_duplicate_and_addressing(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    c = _contact(store)
    event = {"subject": "Sent", "acs_eventid": "ev-1", "regardingobjectid_contact_acs_emailsend@odata.bind": f"/contacts({c['contactid']})"}
    assert (await dv.post("acs_emailsends", json=event)).status_code == 204
    r = await dv.post("acs_emailsends", json=event)
    assert r.status_code == 412 and r.json()["error"]["code"] == "0x80060892"
    assert store.count("acs_emailsend") == 1
    r = await dv.get("acs_emailsends(acs_eventid='ev-1')", params={"$select": "subject,_regardingobjectid_value"})
    assert r.status_code == 200 and r.json()["_regardingobjectid_value"] == c["contactid"]
    r = await dv.patch("acs_emailsends(acs_eventid='ev-2')", json={"subject": "Upserted"})
    assert r.status_code == 204 and store.count("acs_emailsend") == 2
    r = await dv.patch("contacts(emailaddress1='x@y.z')", json={"lastname": "No"})
    assert r.status_code == 400


async def test_string_over_max_length(dv: httpx.AsyncClient) -> None:
    r = await dv.post("contacts", json={"lastname": "x" * 51})
    assert r.status_code == 400
    assert r.json() == {"error": {"code": "0x80044331", "message":
                                  "A validation error occurred.  The length of the 'lastname' attribute of the "
                                  "'contact' entity exceeded the maximum allowed length of '50'."}}
    r = await dv.post("contacts", json={"lastname": 5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "0x0"
    r = await dv.post("contacts", json={"Name": "x"})
    assert r.status_code == 400 and "Invalid property 'Name'" in r.json()["error"]["message"]


async def test_service_protection_429(store, issuer, token) -> None:
    from mapsync.emulators.dataverse.app import build_dataverse_app
    from mapsync.emulators.limits import ServiceProtection

    now = [0.0]
    app = build_dataverse_app(store, issuer, ServiceProtection(requests=3, window_seconds=300, clock=lambda: now[0]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://o.test/api/data/v9.2/",
                                 headers={"Authorization": f"Bearer {token}"}) as c:
        for _ in range(3):
            assert (await c.get("contacts")).status_code == 200
        now[0] = 100.0
        r = await c.get("contacts")
        assert r.status_code == 429 and r.headers["retry-after"] == "200"
        assert r.json() == {"error": {"code": "0x80072322", "message":
                                      "Number of requests exceeded the limit of 3 over time window of 300 seconds."}}
        now[0] = 300.5
        assert (await c.get("contacts")).status_code == 200


async def test_headers_on_every_reply(dv: httpx.AsyncClient) -> None:
    r = await dv.get("contacts")
    assert r.headers["odata-version"] == "4.0"
    assert r.headers["content-type"].startswith("application/json; odata.metadata=minimal")
    assert "req_id" in r.headers
    r = await dv.get("contacts", headers={"OData-Version": "3.0"})
    assert r.status_code == 400


def test_store_roundtrip_and_dump(store: DataverseStore) -> None:
    c = store.insert("contact", {"firstname": "A", "lastname": "B", "birthdate": "1990-02-03"})
    assert store.get("contact", c["contactid"])["birthdate"] == "1990-02-03"
    u = store.update("contact", c["contactid"], {"firstname": "Q"})
    assert u["versionnumber"] > c["versionnumber"] and u["fullname"] == "Q B"
    assert store.count("contact") == 1 and json.dumps(store.dump("contact"))
    store.delete("contact", c["contactid"])
    assert store.get("contact", c["contactid"]) is None and store.count("contact") == 0
    store.reset()
    assert store.dump() == {name: [] for name in sorted(store.tables)}


def test_rows_page_is_a_slice_of_the_rows_in_insertion_order(store: DataverseStore) -> None:
    ids = [_contact(store, firstname=f"N{i}")["contactid"] for i in range(12)]
    store.delete("contact", ids[3])
    store.delete("contact", ids[8])
    everything = list(store.rows("contact"))
    assert [r["contactid"] for r in everything] == [i for i in ids if i not in (ids[3], ids[8])]
    for offset, limit in ((0, 5), (5, 5), (8, 5), (10, 5), (20, 5)):
        assert store.rows_page("contact", offset, limit) == everything[offset:offset + limit]
