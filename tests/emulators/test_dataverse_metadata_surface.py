"""The metadata a third-party client discovers before it syncs: SDK messages and their filters, entity
definitions with relationships, keys and typed attributes — all derived from the schema snapshots."""

from __future__ import annotations

import httpx
import pytest

from mapsync.emulators.dataverse.store import DataverseStore

pytestmark = pytest.mark.anyio


async def test_message_availability_query_as_microsoft_documents_it(dv: httpx.AsyncClient) -> None:
    query = ("sdkmessagefilters?$select=sdkmessagefilterid&$filter=sdkmessageid/name eq @message and "
             "primaryobjecttypecode eq @table&@message='{}'&@table='contact'")
    r = await dv.get(query.format("Create"))
    assert r.status_code == 200
    body = r.json()
    assert body["@odata.context"].endswith("/$metadata#sdkmessagefilters(sdkmessagefilterid)")
    assert len(body["value"]) == 1 and set(body["value"][0]) == {"@odata.etag", "sdkmessagefilterid"}
    for bulk in ("CreateMultiple", "UpsertMultiple", "UpdateMultiple"):  # served: listed (tests/emulators/test_dataverse_bulk.py)
        assert len((await dv.get(query.format(bulk))).json()["value"]) == 1
    assert (await dv.get(query.format("DeleteMultiple"))).json()["value"] == []  # elastic tables only: not listed


async def test_messages_of_a_table_with_expand(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    r = await dv.get("sdkmessagefilters", params={"$select": "sdkmessagefilterid", "$filter": "primaryobjecttypecode eq @t",
                                                  "$expand": "sdkmessageid($select=name)", "@t": "'new_vehicle'"})
    body = r.json()
    assert body["@odata.context"].endswith("#sdkmessagefilters(sdkmessagefilterid,sdkmessageid(name))")
    first = body["value"][0]
    assert list(first) == ["@odata.etag", "sdkmessagefilterid", "sdkmessageid"]
    assert list(first["sdkmessageid"]) == ["name", "sdkmessageid"]
    names = {v["sdkmessageid"]["name"] for v in body["value"]}
    assert names == {"Create", "Delete", "Retrieve", "RetrieveMultiple", "Update", "Upsert", "CreateMultiple",
                     "UpdateMultiple", "UpsertMultiple"}
    by_id = await dv.get("sdkmessagefilters", params={
        "$select": "primaryobjecttypecode", "$filter": f"_sdkmessageid_value eq {first['sdkmessageid']['sdkmessageid']}"})
    assert {v["primaryobjecttypecode"] for v in by_id.json()["value"]} == set(store.tables)
    msgs = await dv.get("sdkmessages", params={"$select": "name", "$filter": "name eq 'WhoAmI'",
                                               "$expand": "sdkmessageid_sdkmessagefilter($select=primaryobjecttypecode)"})
    [who] = msgs.json()["value"]
    assert who["sdkmessageid_sdkmessagefilter"] == [{"primaryobjecttypecode": "none",
                                                     "sdkmessagefilterid": who["sdkmessageid_sdkmessagefilter"][0]["sdkmessagefilterid"]}]
    bad = await dv.get("sdkmessages", params={"$select": "nosuch"})
    assert bad.status_code == 400 and "nosuch" in bad.json()["error"]["message"]


async def test_relationships_follow_the_snapshot_lookups(dv: httpx.AsyncClient) -> None:
    many_to_one = (await dv.get("EntityDefinitions(LogicalName='new_vehicle')/ManyToOneRelationships")).json()
    [to_contact] = [r for r in many_to_one["value"] if r["ReferencingAttribute"] == "new_contactid"]
    assert to_contact["@odata.type"] == "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata"
    assert (to_contact["ReferencedEntity"], to_contact["ReferencedAttribute"]) == ("contact", "contactid")
    assert to_contact["ReferencingEntityNavigationPropertyName"] == "new_contactid"
    assert to_contact["CascadeConfiguration"]["Delete"] == "RemoveLink"  # what the emulator does on delete
    one_to_many = (await dv.get("EntityDefinitions(LogicalName='contact')/OneToManyRelationships",
                                params={"$select": "ReferencingEntity,ReferencingAttribute",
                                        "$filter": "ReferencingEntity eq 'new_vehicle'"})).json()
    assert [(r["ReferencingEntity"], r["ReferencingAttribute"]) for r in one_to_many["value"]] == [
        ("new_vehicle", "new_contactid")]
    cascade = (await dv.get("EntityDefinitions(LogicalName='contact')/OneToManyRelationships",
                            params={"$filter": "CascadeConfiguration/Delete eq 'Cascade'"})).json()["value"]
    assert cascade and all(r["ReferencingAttribute"] == "regardingobjectid" for r in cascade)
    assert (await dv.get("EntityDefinitions(LogicalName='contact')/ManyToManyRelationships")).json()["value"] == []
    expanded = (await dv.get("EntityDefinitions(LogicalName='new_vehicle')",
                             params={"$select": "LogicalName", "$expand": "ManyToOneRelationships($select=SchemaName)"})).json()
    assert {r["SchemaName"] for r in expanded["ManyToOneRelationships"]} == {r["SchemaName"] for r in many_to_one["value"]}


async def test_keys_attributes_and_entity_properties(dv: httpx.AsyncClient) -> None:
    keys = (await dv.get("EntityDefinitions(LogicalName='acs_emailsend')/Keys",
                         params={"$select": "KeyAttributes,EntityKeyIndexStatus"})).json()["value"]
    assert keys == [{"MetadataId": keys[0]["MetadataId"], "KeyAttributes": ["acs_eventid"], "EntityKeyIndexStatus": "Active"}]
    one = (await dv.get("EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='gendercode')"
                        "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                        params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"})).json()
    assert one["@odata.type"] == "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    assert [(o["Value"], o["Label"]["UserLocalizedLabel"]["Label"]) for o in one["OptionSet"]["Options"]] == [
        (1, "Male"), (2, "Female")]
    picklists = (await dv.get("EntityDefinitions(LogicalName='contact')/Attributes",
                              params={"$select": "LogicalName",
                                      "$filter": "AttributeType eq Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'"})).json()
    assert "gendercode" in {a["LogicalName"] for a in picklists["value"]}
    assert {a["@odata.type"] for a in picklists["value"]} == {"#Microsoft.Dynamics.CRM.PicklistAttributeMetadata"}
    entity = (await dv.get("EntityDefinitions(LogicalName='contact')",
                           params={"$select": "LogicalName,PrimaryImageAttribute,PrimaryIdAttribute"})).json()
    assert entity["PrimaryImageAttribute"] is None and entity["PrimaryIdAttribute"] == "contactid"
    tracked = (await dv.get("EntityDefinitions", params={"$select": "LogicalName",
                                                        "$filter": "ChangeTrackingEnabled eq true"})).json()["value"]
    assert "contact" in {t["LogicalName"] for t in tracked} and "acs_emailsend" not in {t["LogicalName"] for t in tracked}
    assert (await dv.get("EntityDefinitions(LogicalName='contact')/Nothing")).status_code == 404
