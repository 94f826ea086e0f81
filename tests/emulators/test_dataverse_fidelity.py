"""Dataverse emulator behaviour Microsoft documents and the emulator once got wrong: delta order and shape,
``$top`` under ``odata.maxpagesize``, formatted values, batch part headers, defaults on create."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync.emulators.dataverse.store import DataverseStore
from tests.emulators.test_dataverse_batch import _batch, _changeset, _req
from tests.emulators.test_dataverse_scale import api_for, fresh_store, get

pytestmark = pytest.mark.anyio
FORMATTED = "OData.Community.Display.V1.FormattedValue"


def _contact(store: DataverseStore, **values: object) -> dict:
    return store.insert("contact", {"lastname": "Doe", **values})


async def test_delta_lists_changed_rows_first_then_deleted_ones(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    rows = [_contact(store, firstname=f"R{i}") for i in range(4)]
    first = await dv.get("contacts?$select=firstname", headers={"Prefer": "odata.track-changes"})
    link = first.json()["@odata.deltaLink"]
    store.delete("contact", rows[0]["contactid"])  # the oldest change is a deletion ...
    store.update("contact", rows[1]["contactid"], {"firstname": "R1b"})
    store.delete("contact", rows[2]["contactid"])
    created = _contact(store, firstname="N")
    whole = (await dv.get(link)).json()["value"]
    kinds = ["deleted" if v.get("reason") == "deleted" else "row" for v in whole]
    assert kinds == ["row", "row", "deleted", "deleted"]  # ... yet rows come first, by version
    assert [v["contactid"] for v in whole[:2]] == [rows[1]["contactid"], created["contactid"]]
    assert [v["id"] for v in whole[2:]] == [rows[0]["contactid"], rows[2]["contactid"]]
    # Paged one by one, the order holds across pages.
    seen: list[dict] = []
    url: str | None = link
    while url:
        body = (await dv.get(url, headers={"Prefer": "odata.maxpagesize=1"})).json()
        assert len(body["value"]) <= 1
        seen += body["value"]
        url = body.get("@odata.nextLink")
    assert seen == whole


async def test_delta_reply_shape_matches_microsofts_example(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    _contact(store, firstname="A")
    first = await dv.get("contacts?$select=firstname", headers={"Prefer": "odata.track-changes"})
    assert first.headers["preference-applied"] == "odata.track-changes"
    assert first.json()["@odata.context"].endswith("/$metadata#contacts(firstname)")  # no "/$delta" here
    delta = await dv.get(first.json()["@odata.deltaLink"])
    assert "preference-applied" not in delta.headers  # the delta-link reply echoes no preference
    assert delta.json()["@odata.context"].endswith("/$metadata#contacts(firstname)/$delta")


async def test_change_tracking_refuses_filter_with_the_documented_message(dv: httpx.AsyncClient) -> None:
    for option, value in (("$filter", "firstname eq 'x'"), ("$top", "2"), ("$orderby", "firstname")):
        r = await dv.get("contacts", params={option: value}, headers={"Prefer": "odata.track-changes"})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == (
            f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.')


async def test_top_is_ignored_when_maxpagesize_is_given(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    for i in range(5):
        _contact(store, firstname=f"T{i}")
    r = await dv.get("contacts", params={"$select": "firstname", "$top": "3"}, headers={"Prefer": "odata.maxpagesize=2"})
    assert r.headers["preference-applied"] == "odata.maxpagesize=2"
    names = [v["firstname"] for v in r.json()["value"]]
    url = r.json().get("@odata.nextLink")
    while url:
        body = (await dv.get(url, headers={"Prefer": "odata.maxpagesize=2"})).json()
        names += [v["firstname"] for v in body["value"]]
        url = body.get("@odata.nextLink")
    assert names == [f"T{i}" for i in range(5)]  # every row, not 3
    alone = await dv.get("contacts", params={"$select": "firstname", "$top": "3"})
    assert len(alone.json()["value"]) == 3 and "@odata.nextLink" not in alone.json()


async def test_formatted_values_when_asked(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    account = store.insert("account", {"name": "Litware, Inc."})
    c = _contact(store, firstname="Ann", gendercode=2, donotbulkemail=True, annualincome=20000, birthdate="1990-04-07",
                 statecode=0, statuscode=1, **{"parentcustomerid@odata.bind": f"accounts({account['accountid']})"})
    select = "firstname,gendercode,donotbulkemail,annualincome,birthdate,_parentcustomerid_value,statecode"
    prefer = f'odata.include-annotations="{FORMATTED}"'
    r = await dv.get(f"contacts({c['contactid']})", params={"$select": select}, headers={"Prefer": prefer})
    assert r.headers["preference-applied"] == prefer
    body = r.json()
    assert body[f"gendercode@{FORMATTED}"] == "Female"
    assert body[f"statecode@{FORMATTED}"] == "Active"
    assert body[f"donotbulkemail@{FORMATTED}"] == "Yes"
    assert body[f"annualincome@{FORMATTED}"] == "$20,000.00"
    assert body[f"birthdate@{FORMATTED}"] == "4/7/1990"
    assert body[f"_parentcustomerid_value@{FORMATTED}"] == "Litware, Inc."
    assert f"firstname@{FORMATTED}" not in body  # text has no formatted value
    assert "_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname" not in body  # not asked for
    keys = list(body)
    assert keys.index(f"gendercode@{FORMATTED}") == keys.index("gendercode") - 1  # annotation first
    everything = await dv.get("contacts", params={"$select": select}, headers={"Prefer": 'odata.include-annotations="*"'})
    assert everything.headers["preference-applied"] == 'odata.include-annotations="*"'
    row = everything.json()["value"][0]
    assert row["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert row["_parentcustomerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == "parentcustomerid_account"
    assert row[f"gendercode@{FORMATTED}"] == "Female"
    plain = (await dv.get("contacts", params={"$select": select})).json()["value"][0]
    assert not any("@" in k for k in plain if k != "@odata.etag")


async def test_batch_parts_carry_streaming_and_req_id(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    _contact(store, firstname="A")
    body, headers = _batch([_req("GET", "/api/data/v9.2/contacts?$select=firstname"),
                            _req("POST", "/api/data/v9.2/contacts", {"lastname": "x" * 60}),
                            _changeset([_req("POST", "contacts", {"lastname": "y" * 60}, "1")])])
    r = await dv.post("$batch", content=body, headers={**headers, "Prefer": "odata.continue-on-error"})
    parts = [p for p in r.text.split("HTTP/1.1 ")[1:]]
    get_part, failed, failed_in_changeset = parts
    assert get_part.startswith("200")
    assert "Content-Type: application/json; odata.metadata=minimal; odata.streaming=true" in get_part
    for part in (failed, failed_in_changeset):
        head = part.split("\r\n\r\n", 1)[0].split("\r\n")
        assert head[0].startswith("400") and head[1].startswith("REQ_ID: ")  # as Microsoft's example shows
        assert "Content-Type: application/json; odata.metadata=minimal" in head
        assert not any("streaming" in h for h in head)
    assert json.loads(failed.split("\r\n\r\n", 1)[1].split("\r\n--", 1)[0])["error"]["code"] == "0x80044331"


async def test_web_api_create_gets_documented_defaults(dv: httpx.AsyncClient, store: DataverseStore) -> None:
    r = await dv.post("contacts", json={"lastname": "New"})
    rid = r.headers["odata-entityid"].rsplit("(", 1)[1].rstrip(")")
    row = store.get("contact", rid)
    assert row is not None
    assert (row["statecode"], row["statuscode"]) == (0, 1)
    assert (row["donotbulkemail"], row["donotemail"], row["followemail"], row["creditonhold"]) == (False, False, True, False)
    assert row["gendercode"] is None and row["firstname"] is None  # no documented default: stays null
    given = await dv.post("contacts", json={"lastname": "Old", "statecode": 1, "statuscode": 2, "donotemail": True})
    gid = given.headers["odata-entityid"].rsplit("(", 1)[1].rstrip(")")
    assert store.get("contact", gid) is not None
    assert {k: store.get("contact", gid)[k] for k in ("statecode", "statuscode", "donotemail")} == {  # type: ignore[index]
        "statecode": 1, "statuscode": 2, "donotemail": True}


_delta_ops = st.lists(st.one_of(st.tuples(st.just("create"), st.integers(0, 9)),
                                st.tuples(st.just("update"), st.integers(0, 9)),
                                st.tuples(st.just("delete"), st.integers(0, 9))), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 5), ops=_delta_ops, page_size=st.integers(1, 6))
def test_delta_order_holds_for_any_history_and_page_size(before: int, ops: list[tuple[str, int]], page_size: int) -> None:
    """Whatever happened since the token: each changed row once (live rows by version, then the deleted
    ones), and paging with any size gives the same sequence as one page."""
    store = fresh_store()
    api = api_for(store)
    live = [store.insert("contact", {"lastname": f"b{i}"})["contactid"] for i in range(before)]
    link = get(api, "contacts", {"$select": "lastname"}, "odata.track-changes")["@odata.deltaLink"]
    deleted: list[str] = []
    touched: list[str] = []
    for op, n in ops:
        if op == "create" or not live:
            live.append(store.insert("contact", {"lastname": f"n{n}"})["contactid"])
            touched.append(live[-1])
        elif op == "update":
            rid = live[n % len(live)]
            store.update("contact", rid, {"lastname": f"u{n}"})
            touched.append(rid)
        else:
            rid = live.pop(n % len(live))
            store.delete("contact", rid)
            deleted.append(rid)
    query = dict(parse_qsl(urlsplit(link).query))

    def pages(size: int | None) -> list[dict]:
        out: list[dict] = []
        params: dict[str, str] | None = query
        while params is not None:
            body = get(api, "contacts", params, f"odata.maxpagesize={size}" if size else "")
            out += body["value"]
            nxt = body.get("@odata.nextLink")
            params = dict(parse_qsl(urlsplit(nxt).query)) if nxt else None
        return out

    whole = pages(None)
    kinds = ["deleted" if v.get("reason") == "deleted" else "row" for v in whole]
    assert kinds == sorted(kinds, key=lambda k: k == "deleted")  # every row before every deletion
    rows = [v["contactid"] for v in whole if v.get("reason") != "deleted"]
    assert len(rows) == len(set(rows)) and set(rows) == set(touched) & set(live)
    assert [int(v["@odata.etag"][3:-1]) for v in whole if "contactid" in v] == sorted(
        int(v["@odata.etag"][3:-1]) for v in whole if "contactid" in v)  # by version
    assert {v["id"] for v in whole if v.get("reason") == "deleted"} == set(deleted) - set(live)
    assert pages(page_size) == whole
