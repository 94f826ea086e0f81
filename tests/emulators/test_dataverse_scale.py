"""Correctness of the compact Dataverse store (rows keep only their filled columns) and of keyset paging
for ``$orderby``: values round-trip exactly, null differs from empty/false/zero, writes, deletes, rollbacks
and change tracking stay right, and paging returns every row exactly once, even with writes between pages.

Timing is measured by ``bench/emulator_dataverse.py``, not here.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync.dsl.schema import load_catalog
from mapsync.emulators.dataverse.app import DataverseApi
from mapsync.emulators.dataverse.errors import DataverseError
from mapsync.emulators.dataverse.metadata import ColumnDef
from mapsync.emulators.dataverse.store import DataverseStore
from mapsync.emulators.tokens import TokenIssuer

ROOT = "https://org.test"
HEADERS = {"odata-version": "4.0", "accept": "application/json"}
_CATALOG = load_catalog()


def fresh_store() -> DataverseStore:
    return DataverseStore(_CATALOG)


def api_for(store: DataverseStore) -> DataverseApi:
    return DataverseApi(store, TokenIssuer(), None)


def get(api: DataverseApi, path: str, params: dict[str, str], prefer: str = "") -> dict[str, Any]:
    headers = {**HEADERS, **({"prefer": prefer} if prefer else {})}
    inner = api.handle("GET", path, urlencode(params, quote_via=quote), headers, b"", ROOT)
    assert inner.status == 200, inner.body
    return json.loads(inner.body)


def follow(api: DataverseApi, entity_set: str, params: dict[str, str], page_size: int,
           between: Any = None) -> list[dict[str, Any]]:
    """Every row of a query, page by page through ``@odata.nextLink``; ``between(n)`` runs after page n."""
    prefer = f"odata.maxpagesize={page_size}"
    body = get(api, entity_set, params, prefer)
    rows, pages = list(body["value"]), 1
    while "@odata.nextLink" in body:
        assert len(body["value"]) == page_size  # only the last page may be short
        if between is not None:
            between(pages)
        link = urlsplit(body["@odata.nextLink"])
        assert link.path.endswith("/" + entity_set)
        inner = api.handle("GET", entity_set, link.query, {**HEADERS, "prefer": prefer}, b"", ROOT)
        assert inner.status == 200, inner.body
        body = json.loads(inner.body)
        rows += body["value"]
        pages += 1
        assert pages < 10_000
    return rows


def sample_value(col: ColumnDef, i: int) -> Any:
    """A valid, non-null value of the column's type (distinct per ``i`` where the type allows)."""
    kind = col.type
    if kind in ("string", "memo", "enum"):
        text = f"Zoë-{i}-ü"
        return text[: col.max_length] if col.max_length else text
    if kind == "choice":
        return col.options[i % len(col.options)][0]
    if kind == "multichoice":
        return ",".join(str(v) for v, _l in col.options[:2])
    if kind in ("integer", "bigint"):
        return i + 1
    if kind in ("money", "decimal"):
        return 12.5 + i
    if kind == "double":
        return 1.25 + i % 10
    if kind == "boolean":
        return i % 2 == 0
    if kind == "guid":
        return str(uuid.UUID(int=i + 1))
    if kind == "datetime":
        return f"2024-01-{1 + i % 28:02d}T03:04:05Z"
    if kind == "date":
        return f"2023-02-{1 + i % 28:02d}"
    raise AssertionError(f"no sample for {kind}")


def writable(store: DataverseStore, table: str) -> list[ColumnDef]:
    d = store.table(table)
    return [c for c in d.columns if not c.read_only and c.type != "lookup" and c.name != d.primary_key]


# -- every column, nulls vs missing ----------------------------------------------------------------

def test_every_writable_column_comes_back_exactly() -> None:
    store = fresh_store()
    api = api_for(store)
    account = store.insert("account", {"name": "Fabrikam"})["accountid"]
    cols = writable(store, "contact")
    payload = {c.name: sample_value(c, 3) for c in cols}
    payload["parentcustomerid_account@odata.bind"] = f"/accounts({account})"
    inner = api.handle("POST", "contacts", "", {**HEADERS, "prefer": "return=representation"},
                       json.dumps(payload).encode(), ROOT)
    assert inner.status == 201, inner.body
    rid = json.loads(inner.body)["contactid"]
    stored = store.get("contact", rid)
    assert stored is not None
    for c in cols:
        assert stored[c.name] == payload[c.name], c.name
    assert stored["_parentcustomerid_value"] == account
    assert stored["fullname"] == f"{payload['firstname']} {payload['lastname']}"
    # The same over the wire, with every column listed and the lookup's target annotated.
    body = get(api, f"contacts({rid})", {})
    assert {c.name: body[c.name] for c in cols} == {c.name: payload[c.name] for c in cols}
    listed = get(api, "contacts", {"$filter": f"contactid eq {rid}"},
                 'odata.include-annotations="*"')["value"][0]
    assert listed["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert set(listed) >= {c.wire_name for c in store.table("contact").columns}


def test_null_is_not_empty_false_or_zero() -> None:
    store = fresh_store()
    api = api_for(store)
    row = store.insert("contact", {"lastname": "", "donotemail": False, "numberofchildren": 0, "jobtitle": None})
    rid = row["contactid"]
    got = store.get("contact", rid)
    assert got is not None
    assert got["lastname"] == "" and got["donotemail"] is False and got["numberofchildren"] == 0
    assert got["jobtitle"] is None and got["telephone1"] is None  # explicitly null, and never set
    wire = get(api, f"contacts({rid})", {"$select": "lastname,donotemail,numberofchildren,jobtitle,telephone1"})
    assert (wire["lastname"], wire["donotemail"], wire["numberofchildren"]) == ("", False, 0)
    assert wire["jobtitle"] is None and wire["telephone1"] is None
    # Filters tell them apart too.
    ids = lambda f: [r["contactid"] for r in get(api, "contacts", {"$filter": f})["value"]]  # noqa: E731
    assert ids("numberofchildren eq 0") == [rid] and ids("numberofchildren eq null") == []
    assert ids("jobtitle eq null") == [rid] and ids("donotemail eq false") == [rid]
    # Setting a value to null clears it; setting it again brings it back.
    store.update("contact", rid, {"numberofchildren": None, "jobtitle": "Buyer"})
    got = store.get("contact", rid)
    assert got is not None and got["numberofchildren"] is None and got["jobtitle"] == "Buyer"
    assert got["donotemail"] is False and got["lastname"] == ""


# -- writes, deletes, rollbacks, change tracking against a model ----------------------------------

_FIELDS = {"firstname": st.one_of(st.none(), st.text("abcÉé ", max_size=4)),
           "numberofchildren": st.one_of(st.none(), st.integers(0, 3)),
           "donotemail": st.one_of(st.none(), st.booleans()),
           "birthdate": st.one_of(st.none(), st.sampled_from(["2001-01-01", "2001-01-02"]))}
_ops = st.lists(st.one_of(
    st.tuples(st.just("create"), st.fixed_dictionaries({}, optional=_FIELDS)),
    st.tuples(st.just("update"), st.integers(0, 50), st.fixed_dictionaries({}, optional=_FIELDS)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("failed_changeset"), st.integers(0, 50), st.fixed_dictionaries({}, optional=_FIELDS)),
), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_ops)
def test_writes_deletes_and_rollbacks_match_a_model(ops: list[tuple[Any, ...]]) -> None:
    store = fresh_store()
    tracked = [c.wire_name for c in store.table("contact").columns if c.name in _FIELDS]
    model: dict[str, dict[str, Any]] = {}
    token_version = store.version
    touched: set[str] = set()
    deleted: set[str] = set()
    for op in ops:
        live = sorted(model)
        if op[0] == "create":
            rid = store.insert("contact", op[1])["contactid"]
            model[rid] = {c: op[1].get(c) for c in tracked}
            touched.add(rid)
        elif op[0] == "update" and live:
            rid = live[op[1] % len(live)]
            store.update("contact", rid, op[2])
            model[rid].update(op[2])
            touched.add(rid)
        elif op[0] == "delete" and live:
            rid = live[op[1] % len(live)]
            store.delete("contact", rid)
            del model[rid]
            deleted.add(rid)
        elif op[0] == "failed_changeset" and live:
            rid = live[op[1] % len(live)]
            with pytest.raises(DataverseError), store.transaction():
                store.update("contact", rid, op[2])
                store.insert("contact", {"lastname": "temp"})
                store.delete("contact", rid)
                raise DataverseError("unexpected")
    # Every row, every tracked column, as the model says; nothing else survives.
    assert store.count("contact") == len(model)
    for rid, want in model.items():
        got = store.get("contact", rid)
        assert got is not None and {c: got[c] for c in tracked} == want
    assert sorted(r["contactid"] for r in store.rows("contact")) == sorted(model)
    # Change tracking since the start: the live rows touched, and a tombstone for each deleted one.
    changes, resume = store.changes("contact", token_version, store.version, 10_000)
    assert resume is None
    rows_seen = [item[0] for kind, item in changes if kind == "row"]
    gone = {item for kind, item in changes if kind == "deleted"}
    assert len(rows_seen) == len(set(rows_seen))
    assert set(rows_seen) == {r for r in touched if r in model}
    assert gone == {r for r in deleted if r not in model}


def test_change_tracking_pages_over_the_wire_after_an_update_and_a_delete() -> None:
    store = fresh_store()
    api = api_for(store)
    ids = [store.insert("contact", {"lastname": f"n{i}"})["contactid"] for i in range(7)]
    first = follow(api, "contacts", {"$select": "lastname"}, 3)
    assert sorted(r["contactid"] for r in first) == sorted(ids)
    start = get(api, "contacts", {"$select": "lastname"}, "odata.track-changes")
    token = dict(parse_qsl(urlsplit(start["@odata.deltaLink"]).query))["$deltatoken"]
    store.update("contact", ids[2], {"lastname": "changed"})
    store.delete("contact", ids[4])
    delta = get(api, "contacts", {"$select": "lastname", "$deltatoken": token})
    rows = [r for r in delta["value"] if "reason" not in r]
    assert [(r["contactid"], r["lastname"]) for r in rows] == [(ids[2], "changed")]
    assert [r["id"] for r in delta["value"] if r.get("reason") == "deleted"] == [ids[4]]


# -- ordering and paging ------------------------------------------------------------------------------

_ORDER_COLS = {"lastname": "string", "numberofchildren": "integer", "birthdate": "date", "donotemail": "boolean"}
_row = st.fixed_dictionaries({
    "lastname": st.one_of(st.none(), st.sampled_from(["a", "A", "b", "é", "É", "", "zz"])),
    "numberofchildren": st.one_of(st.none(), st.integers(0, 3)),
    "birthdate": st.one_of(st.none(), st.sampled_from(["2000-01-01", "2000-01-02", "1999-12-31"])),
    "donotemail": st.one_of(st.none(), st.booleans()),
})
_order = st.lists(st.tuples(st.sampled_from(sorted(_ORDER_COLS)), st.booleans()), min_size=1, max_size=3,
                  unique_by=lambda t: t[0])


def reference_order(rows: list[dict[str, Any]], order: list[tuple[str, bool]]) -> list[str]:
    """Dataverse's order, computed independently: nulls first ascending (last descending), strings
    case-insensitive, ties by the primary key."""
    out = sorted(rows, key=lambda r: r["contactid"])
    for name, desc in reversed(order):
        def key(r: dict[str, Any], name: str = name) -> tuple[bool, Any]:
            v = r[name]
            return (v is not None, v.casefold() if isinstance(v, str) else v)
        out.sort(key=key, reverse=desc)
    return [r["contactid"] for r in out]


def orderby_text(order: list[tuple[str, bool]]) -> str:
    return ",".join(f"{name} {'desc' if desc else 'asc'}" for name, desc in order)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, max_size=40), order=_order, page=st.integers(1, 7),
       only_with_children=st.booleans())
def test_ordered_paging_returns_each_row_once_in_order(rows: list[dict[str, Any]], order: list[tuple[str, bool]],
                                                       page: int, only_with_children: bool) -> None:
    store = fresh_store()
    api = api_for(store)
    for r in rows:
        store.insert("contact", r)
    params = {"$select": ",".join(_ORDER_COLS), "$orderby": orderby_text(order)}
    if only_with_children:
        params["$filter"] = "numberofchildren ge 1"
    got = follow(api, "contacts", params, page)
    everything = [{**r, "contactid": r["contactid"]} for r in store.rows("contact")]
    if only_with_children:
        everything = [r for r in everything if r["numberofchildren"] is not None and r["numberofchildren"] >= 1]
    assert [r["contactid"] for r in got] == reference_order(everything, order)
    # The same query again (served from the cached order) gives the same pages.
    assert [r["contactid"] for r in follow(api, "contacts", params, page)] == [r["contactid"] for r in got]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_row, min_size=1, max_size=30), order=_order, page=st.integers(1, 5),
       writes=st.lists(st.tuples(st.sampled_from(["insert", "update", "delete"]), st.integers(0, 100), _row),
                       max_size=12))
def test_rows_untouched_between_pages_come_exactly_once(rows: list[dict[str, Any]], order: list[tuple[str, bool]],
                                                         page: int, writes: list[tuple[str, int, dict[str, Any]]]) -> None:
    """Keyset paging: rows written between pages may move, but every row nobody touched appears once."""
    store = fresh_store()
    api = api_for(store)
    for r in rows:
        store.insert("contact", r)
    touched: set[str] = set()
    pending = list(writes)

    def write_some(_page: int) -> None:
        for _ in range(min(3, len(pending))):
            kind, n, values = pending.pop(0)
            live = sorted(r["contactid"] for r in store.rows("contact"))
            if kind == "insert" or not live:
                touched.add(store.insert("contact", values)["contactid"])
                continue
            rid = live[n % len(live)]
            touched.add(rid)
            if kind == "update":
                store.update("contact", rid, values)
            else:
                store.delete("contact", rid)

    original = {r["contactid"] for r in store.rows("contact")}
    got = [r["contactid"] for r in follow(api, "contacts", {"$orderby": orderby_text(order)}, page, write_some)]
    untouched = original - touched
    assert all(got.count(rid) == 1 for rid in untouched)
    assert len(got) == len(set(got)) or touched  # duplicates only ever come from moved rows


def test_a_write_between_pages_is_patched_into_the_cached_order() -> None:
    store = fresh_store()
    api = api_for(store)
    ids = [store.insert("contact", {"lastname": name})["contactid"] for name in ["d", "b", "f", "a", "c"]]
    params = {"$select": "lastname", "$orderby": "lastname asc"}
    first = get(api, "contacts", params, "odata.maxpagesize=2")
    assert [r["lastname"] for r in first["value"]] == ["a", "b"]
    store.insert("contact", {"lastname": "e"})  # after the cursor: must show up
    store.update("contact", ids[0], {"lastname": "aa"})  # "d" moves before the cursor: not repeated
    link = urlsplit(first["@odata.nextLink"])
    rest = []
    body = json.loads(api.handle("GET", "contacts", link.query, {**HEADERS, "prefer": "odata.maxpagesize=2"},
                                 b"", ROOT).body)
    rest += body["value"]
    while "@odata.nextLink" in body:
        link = urlsplit(body["@odata.nextLink"])
        body = json.loads(api.handle("GET", "contacts", link.query, {**HEADERS, "prefer": "odata.maxpagesize=2"},
                                     b"", ROOT).body)
        rest += body["value"]
    assert [r["lastname"] for r in rest] == ["c", "e", "f"]


def test_modifiedon_window_orders_by_time_then_id() -> None:
    """The connector's query for tables without change tracking: ``modifiedon ge X`` ordered ascending."""
    from datetime import UTC, datetime, timedelta

    now = [datetime(2024, 5, 1, tzinfo=UTC)]
    store = DataverseStore(_CATALOG, clock=lambda: now[0])
    api = api_for(store)
    stamps = []
    for i in range(30):
        now[0] += timedelta(seconds=i % 3)  # several rows share a second
        store.insert("contact", {"lastname": f"n{i}"})
        stamps.append(now[0])
    since = stamps[10].strftime("%Y-%m-%dT%H:%M:%SZ")
    params = {"$select": "modifiedon", "$filter": f"modifiedon ge {since}", "$orderby": "modifiedon asc"}
    got = follow(api, "contacts", params, 4)
    want = sorted((r["modifiedon"], r["contactid"]) for r in store.rows("contact") if r["modifiedon"] >= since)
    assert [(r["modifiedon"], r["contactid"]) for r in got] == want and len(want) >= 20


def test_a_paging_cookie_without_a_sort_key_is_the_real_error() -> None:
    store = fresh_store()
    api = api_for(store)
    for name in "abc":
        store.insert("contact", {"lastname": name})
    state = base64.urlsafe_b64encode(b'{"p":2,"n":1}').decode()  # an unordered cookie on an ordered query
    cookie = f'<cookie pagenumber="2" pagingcookie="{state}" istracking="False" />'
    inner = api.handle("GET", "contacts", urlencode({"$orderby": "lastname", "$skiptoken": cookie}, quote_via=quote),
                       HEADERS, b"", ROOT)
    assert inner.status == 400
    assert json.loads(inner.body)["error"] == {"code": "0x80060888", "message": "The $skiptoken value is not valid."}


def test_a_value_marshal_cannot_encode_is_kept_exactly() -> None:
    from decimal import Decimal

    store = fresh_store()
    rid = store.insert("contact", {"lastname": "Dec", "annualincome": Decimal("12.50")})["contactid"]
    got = store.get("contact", rid)
    assert got is not None and got["annualincome"] == Decimal("12.50") and isinstance(got["annualincome"], Decimal)
    store.update("contact", rid, {"annualincome": 3.5})  # back to an encodable row
    got = store.get("contact", rid)
    assert got is not None and got["annualincome"] == 3.5 and got["lastname"] == "Dec"
    assert [r["contactid"] for r in store.rows("contact")] == [rid]


def test_a_paging_cookie_with_keys_of_the_wrong_type_is_the_real_error() -> None:
    store = fresh_store()
    api = api_for(store)
    for n in range(3):
        store.insert("contact", {"lastname": "x", "numberofchildren": n})
    state = base64.urlsafe_b64encode(json.dumps({"p": 2, "k": ["two"], "id": "a"}).encode()).decode()
    cookie = f'<cookie pagenumber="2" pagingcookie="{state}" istracking="False" />'
    query = urlencode({"$orderby": "numberofchildren", "$skiptoken": cookie}, quote_via=quote)
    inner = api.handle("GET", "contacts", query, HEADERS, b"", ROOT)
    assert inner.status == 400 and json.loads(inner.body)["error"]["code"] == "0x80060888"
