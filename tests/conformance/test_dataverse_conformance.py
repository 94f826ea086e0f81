"""Microsoft's documented Dataverse examples: our connector parses each reply, and the emulator answers the
same request with a reply of the same shape."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from mapsync.dsl.schema import load_catalog
from mapsync.emulators.server import Emulator, Limits
from mapsync.engine.config import D365Settings, Secret, ServiceLimits
from mapsync.engine.connectors.d365 import ODATA_HEADERS, D365Connector
from mapsync.engine.connectors.odata import parse_batch
from mapsync.engine.errors import TransientError
from mapsync.engine.http import HttpClient, error_from_status
from tests.conformance.conftest import (
    API,
    DV_BASE,
    Replay,
    StaticTokens,
    assert_same_shape,
    documented_response,
    load,
    media_type,
    no_sleep,
)

pytestmark = pytest.mark.anyio


def connector(replay: Replay, *, retries: int = 3) -> D365Connector:
    settings = D365Settings(url=DV_BASE, tenant_id="tenant", client_id="client", client_secret=Secret("unused"),
                            limits=ServiceLimits(concurrency=1, max_retries=retries))
    http = HttpClient("d365", settings.limits, StaticTokens(), transport=replay.transport(), base_url=settings.api_base,
                      headers={k: v for k, v in ODATA_HEADERS.items() if k != "Content-Type"}, sleep=no_sleep)
    return D365Connector(settings, http, load_catalog(), sleep=no_sleep)


def emulator_client(emulator: Emulator) -> httpx.AsyncClient:
    token, _ = emulator.dataverse.issuer.issue(emulator.credentials.d365_client_id, f"{DV_BASE}/.default")
    headers = {"Authorization": f"Bearer {token}", "OData-MaxVersion": "4.0", "OData-Version": "4.0",
               "Accept": "application/json"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app), base_url=DV_BASE + API + "/",
                             headers=headers)


def relative(url: str) -> str:
    """A documented absolute URL made relative to the v9.2 service root (the examples mix v9.0 and v9.2)."""
    return url.split("/api/data/", 1)[1].split("/", 1)[1]


def _deleted(item: dict[str, Any]) -> bool:
    return str(item.get("@odata.context", "")).endswith("/$deletedEntity")


# -- change tracking ----------------------------------------------------------------------------------


async def test_change_tracking_example_parses() -> None:
    doc = load("dataverse_change_tracking.json")
    first, delta = doc["exchanges"]
    # The connector asks with its own $select and page size: answer its first request with the initial reply,
    # and the documented delta link with the delta reply.
    replay = Replay(lambda req: documented_response(
        delta["response"] if "$deltatoken" in unquote(str(req.url)) else first["response"]))
    d365 = connector(replay)
    pages = [p async for p in d365.read_changes("account", ["name", "accountnumber", "telephone1", "fax"])]
    assert [r["name"] for p in pages for r in p.rows] == ["Monte Orton"]
    link = pages[-1].delta_link
    assert link == first["response"]["body"]["@odata.deltaLink"]
    changes = [p async for p in d365.read_changes("account", ["name"], link)]
    assert [r["accountid"] for p in changes for r in p.rows] == ["60c4e274-0d87-e711-80e5-00155db19e6d"]
    assert [d for p in changes for d in p.deleted] == ["2e451703-c686-e711-80e5-00155db19e6d"]
    assert changes[-1].delta_link == delta["response"]["body"]["@odata.deltaLink"]
    assert "odata.track-changes" in replay.requests[0].headers["prefer"]


async def test_change_tracking_emulator_reply_has_the_documented_shape(emulator: Emulator) -> None:
    doc = load("dataverse_change_tracking.json")
    first, delta = doc["exchanges"]
    store = emulator.dataverse.store
    store.expire_change_tracking("account")  # only the rows below count as changes
    kept = store.insert("account", {"name": "Monte Orton", "telephone1": "555000", "fax": "10101"})
    gone = store.insert("account", {"name": "Gone"})
    async with emulator_client(emulator) as dv:
        r1 = await dv.get(relative(first["request"]["url"]), headers={"Prefer": "odata.track-changes"})
        assert r1.headers["preference-applied"] == first["response"]["headers"]["Preference-Applied"]
        body = r1.json()
        assert_same_shape(first["response"]["body"], body)
        assert body["@odata.context"] == f"{DV_BASE}{API}/$metadata#accounts(name,accountnumber,telephone1,fax)"
        store.delete("account", gone["accountid"])  # deleted first ...
        store.update("account", kept["accountid"], {"telephone1": "555001"})  # ... updated after
        r2 = await dv.get(body["@odata.deltaLink"])
    assert "preference-applied" not in r2.headers  # as in the documented delta reply
    documented, ours = delta["response"]["body"], r2.json()
    assert ours["@odata.context"].endswith("/$delta")
    assert_same_shape({k: v for k, v in documented.items() if k != "value"}, ours)
    assert [_deleted(v) for v in ours["value"]] == [_deleted(v) for v in documented["value"]]  # rows, then deletions
    row_doc, deleted_doc = documented["value"]
    assert_same_shape(row_doc, ours["value"][0], ignore={"accountnumber"})  # not in the documented delta $select
    assert set(ours["value"][1]) == set(deleted_doc) and ours["value"][1]["id"] == gone["accountid"]
    assert ours["value"][1]["@odata.context"] == f"{DV_BASE}{API}/$metadata#accounts/$deletedEntity"


# -- $batch ---------------------------------------------------------------------------------------------


def _batch(parts: list[str], boundary: str = "batch_conformance") -> tuple[bytes, str]:
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/mixed; boundary={boundary}"


def _part(method: str, url: str, payload: dict[str, Any] | None = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    head += f"Content-ID: {content_id}\r\n" if content_id else ""
    body = json.dumps(payload) if payload is not None else ""
    return f"{head}\r\n{method} {url} HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{body}"


def _changeset(parts: list[str], boundary: str = "changeset_conformance") -> str:
    inner = "".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--"
    return f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n{inner}"


async def test_batch_change_set_example_parses_and_the_emulator_answers_alike(emulator: Emulator) -> None:
    doc = load("dataverse_batch_changeset.json")["response"]
    documented = parse_batch(doc["headers"]["Content-Type"], doc["body_text"].encode())
    assert [r.status for r in documented] == [204, 204, 204, 200]
    assert json.loads(documented[-1].body)["value"][0]["subject"] == "Task 1 in batch"
    creates = [_part("POST", f"{API}/contacts", {"lastname": f"Task {i} in batch"}, str(i)) for i in (1, 2, 3)]
    body, content_type = _batch([_changeset(creates), _part("GET", f"{API}/contacts?$select=lastname&$top=3")])
    async with emulator_client(emulator) as dv:
        r = await dv.post("$batch", content=body, headers={"Content-Type": content_type})
    assert r.status_code == doc["status"]
    assert r.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    ours = parse_batch(r.headers["content-type"], r.content)
    assert [o.status for o in ours] == [d.status for d in documented]
    for o, d in zip(ours, documented, strict=True):
        assert set(d.headers) <= set(o.headers), (d.headers, o.headers)
        if "content-type" in d.headers:
            assert media_type(o.headers["content-type"]) == media_type(d.headers["content-type"])
    assert_same_shape(json.loads(documented[-1].body), json.loads(ours[-1].body), ignore={"subject", "activityid"})
    assert [f"Content-ID: {i}" in r.text for i in (1, 2, 3)] == [True] * 3


async def test_batch_continue_on_error_example_parses_and_the_emulator_answers_alike(emulator: Emulator) -> None:
    doc = load("dataverse_batch_continue_on_error.json")
    parts = [_part("POST", f"{API}/contacts", {"lastname": "x" * 60}),
             _part("POST", f"{API}/contacts", {"lastname": "Task 2 in batch"}),
             _part("POST", f"{API}/contacts", {"lastname": "Task 3 in batch"})]
    body, content_type = _batch(parts)
    async with emulator_client(emulator) as dv:
        for exchange in doc["exchanges"]:
            reply = exchange["response"]
            documented = parse_batch(reply["headers"]["Content-Type"], reply["body_text"].encode())
            failed = documented[0]
            err = error_from_status("d365", "POST", "$batch", failed.status, failed.body, failed.headers)
            assert err.code == "0x80044331" and err.request_id == failed.headers["req_id"]
            r = await dv.post("$batch", content=body, headers={"Content-Type": content_type,
                                                               **exchange["request"]["headers"]})
            assert r.status_code == reply["status"]
            ours = parse_batch(r.headers["content-type"], r.content)
            assert [o.status for o in ours] == [d.status for d in documented]
            assert set(documented[0].headers) <= set(ours[0].headers)
            assert media_type(ours[0].headers["content-type"]) == media_type(failed.headers["content-type"])
            head = r.text.split("HTTP/1.1 400 Bad Request\r\n", 1)[1].split("\r\n", 1)[0]
            assert head.startswith("REQ_ID: ")  # first header of a failed part, as documented
            assert json.loads(ours[0].body)["error"]["code"] == json.loads(failed.body)["error"]["code"]
            for o, d in zip(ours[1:], documented[1:], strict=True):
                assert set(d.headers) <= set(o.headers)


# -- service protection ---------------------------------------------------------------------------------


async def test_service_protection_429_example_is_waited_out_and_matched(emulator: Emulator) -> None:
    doc = load("dataverse_service_protection_429.json")["response"]
    answers = iter([documented_response(doc), httpx.Response(200, json={"value": []})])
    replay = Replay(lambda _req: next(answers))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    d365 = connector(replay)
    d365.http._sleep = sleep  # the waits are what this test reads; nothing sleeps for real
    pages = [p async for p in d365.read("contact", ["lastname"])]
    assert pages == [[]] and len(replay.requests) == 2 and max(waits) >= float(doc["headers"]["Retry-After"])
    err = error_from_status("d365", "GET", "contacts", 429, json.dumps(doc["body"]), doc["headers"])
    assert isinstance(err, TransientError) and err.code == "0x80072322"
    emulator.set_limits(Limits(dataverse_requests=1))
    async with emulator_client(emulator) as dv:
        await dv.get("WhoAmI")
        r = await dv.get("WhoAmI")
    assert r.status_code == 429 and r.headers["retry-after"].isdigit()
    assert media_type(r.headers["content-type"]) == media_type(doc["headers"]["Content-Type"])
    assert_same_shape(doc["body"], r.json())
    assert r.json()["error"]["code"] == doc["body"]["error"]["code"]
    assert r.json()["error"]["message"] == doc["body"]["error"]["message"].replace("6000", "1")  # the limit set here


# -- metadata, formatted values, paging ------------------------------------------------------------


async def test_sdkmessagefilter_examples_have_the_same_shape_in_the_emulator(emulator: Emulator) -> None:
    doc = load("dataverse_sdkmessagefilters.json")
    async with emulator_client(emulator) as dv:
        for exchange in doc["exchanges"]:
            url = relative(exchange["request"]["url"]).replace("'account'", "'contact'")
            r = await dv.get(url)
            documented = exchange["response"]["body"]
            assert r.status_code == 200
            assert media_type(r.headers["content-type"]) == media_type(exchange["response"]["headers"]["Content-Type"])
            assert r.json()["@odata.context"].split("#", 1)[1] == documented["@odata.context"].split("#", 1)[1]
            assert_same_shape(documented, r.json())
            assert [list(v) for v in r.json()["value"][:1]] == [list(v) for v in documented["value"][:1]]  # key order
            if "sdkmessageid" in documented["value"][0]:
                assert list(r.json()["value"][0]["sdkmessageid"]) == list(documented["value"][0]["sdkmessageid"])


async def test_formatted_values_example_parses_and_the_emulator_annotates_alike(emulator: Emulator) -> None:
    doc = load("dataverse_formatted_values.json")
    documented = doc["response"]["body"]
    replay = Replay(lambda _req: documented_response(doc["response"]))
    rows = [r async for page in connector(replay).read("account", ["name", "revenue"]) for r in page]
    assert rows[0]["revenue"] == 20000.0 and rows[0]["_primarycontactid_value"] == "70bf4d48-34cb-ed11-b596-0022481d68cd"
    store = emulator.dataverse.store
    contact = store.insert("contact", {"firstname": "Susanna", "lastname": "Stubberod (sample)"})
    store.insert("account", {"name": "Litware, Inc. (sample)", "revenue": 20000, "customertypecode": 1,
                             "primarycontactid@odata.bind": f"contacts({contact['contactid']})"})
    prefer = doc["request"]["headers"]["Prefer"]
    url = relative(doc["request"]["url"]).replace("&$top=1", "&$filter=name eq 'Litware, Inc. (sample)'")
    async with emulator_client(emulator) as dv:
        r = await dv.get(url, headers={"Prefer": prefer})
    assert r.headers["preference-applied"] == doc["response"]["headers"]["Preference-Applied"]
    ours = r.json()["value"][0]
    no_currency = {k for k in documented["value"][0] if k.startswith("_transactioncurrencyid_value")}  # not modelled
    assert_same_shape(documented["value"][0], ours, ignore=no_currency)
    keys = list(ours)
    for key in documented["value"][0]:
        if "@" in key[1:] and key not in no_currency:  # the annotation comes right before its property
            assert keys.index(key) == keys.index(key.split("@", 1)[0]) - 1
    assert ours["revenue@OData.Community.Display.V1.FormattedValue"] == "$20,000.00"


async def test_page_results_example_parses_and_the_emulator_pages_alike(emulator: Emulator) -> None:
    doc = load("dataverse_page_results.json")
    first, second = (e["response"] for e in doc["exchanges"])
    last = {"status": 200, "headers": {}, "body": {"value": []}}  # the example stops at page 2; end it here
    replies = {doc["exchanges"][1]["request"]["url"]: second, second["body"]["@odata.nextLink"]: last}
    replay = Replay(lambda req: documented_response(replies.get(str(req.url), first)))
    pages = [p async for p in connector(replay).read("contact", ["fullname"], page_size=2)]
    assert [len(p) for p in pages] == [2, 2, 0]
    assert str(replay.requests[1].url) == first["body"]["@odata.nextLink"]  # followed verbatim
    assert all(r.headers["prefer"] == "odata.maxpagesize=2" for r in replay.requests)
    async with emulator_client(emulator) as dv:
        r1 = await dv.get(relative(doc["exchanges"][0]["request"]["url"]), headers={"Prefer": "odata.maxpagesize=2"})
        r2 = await dv.get(r1.json()["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=2"})
    for ours, documented in ((r1, first), (r2, second)):
        assert ours.headers["preference-applied"] == documented["headers"]["Preference-Applied"]
        assert_same_shape(documented["body"], ours.json())
        assert [list(v) for v in ours.json()["value"]] == [list(v) for v in documented["body"]["value"]]
    prefix = f"{DV_BASE}{API}/contacts?$select=fullname&$skiptoken=%3Ccookie%20pagenumber=%222%22%20pagingcookie=%22"
    assert first["body"]["@odata.nextLink"].startswith(prefix) and r1.json()["@odata.nextLink"].startswith(prefix)
