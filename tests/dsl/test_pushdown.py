"""Filter push-down: what goes into $filter plus what stays local must equal the whole filter.

The pushed part is evaluated by the Dataverse emulator's own OData evaluator (parse + compile over stored
rows, case-insensitive like the real service), so the property is a real cross-check between two
independent implementations, not the compiler agreeing with itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl.compiler import compile_flow
from mapsync.dsl.pushdown import split_filter
from mapsync.dsl.schema import load_catalog
from mapsync.emulators.dataverse import odata

CATALOG = load_catalog()
CONTACT = CATALOG.table("d365", "contact")
PROFILE = CATALOG.table("campaign", "profile")
assert CONTACT is not None and PROFILE is not None
S = ast.Span.unknown("t.map")

# field -> (snapshot type, pool of wire values). Small pools so that comparisons hit often; text values
# differ only by case or quotes on purpose (the server compares text case-insensitively).
GUIDS = ["0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"]
FIELDS: dict[str, list[Any]] = {
    "statecode": [0, 1],
    "gendercode": [1, 2],
    "annualincome": [0, 1.5, 1000, -3],
    "firstname": ["ann", "Ann", "ANN", "o'neil", "O'Neil", "", "a (b) or c"],
    "emailaddress1": ["ann@example.com", "ANN@example.com", "bob@contoso.com"],
    "donotemail": [True, False],
    "birthdate": ["1980-05-17", "2000-01-01", "1999-12-31"],
    "createdon": ["2024-01-31T10:00:00Z", "2023-06-01T00:00:00Z", "2024-01-31T10:00:01Z"],
    "parentcustomerid": GUIDS,
}


def _wire(name: str) -> str:
    f = CONTACT.fields[name]
    return f"_{name}_value" if f.type == "lookup" else name


def _literal_for(name: str, wire_value: Any) -> ast.Literal:
    f = CONTACT.fields[name]
    if f.type == "date":
        return ast.Literal(span=S, kind="date", value=dt.date.fromisoformat(wire_value))
    if f.type == "datetime":
        return ast.Literal(span=S, kind="datetime", value=dt.datetime.fromisoformat(wire_value.replace("Z", "+00:00")))
    if isinstance(wire_value, bool):
        return ast.Literal(span=S, kind="bool", value=wire_value)
    if isinstance(wire_value, int):
        return ast.Literal(span=S, kind="int", value=wire_value)
    if isinstance(wire_value, float):
        return ast.Literal(span=S, kind="number", value=wire_value)
    return ast.Literal(span=S, kind="text", value=wire_value)


def path(name: str) -> ast.Path:
    return ast.Path(span=S, parts=(name,))


NULL = ast.Literal(span=S, kind="null", value=None)


@st.composite
def atoms(draw: st.DrawFn) -> ast.Expr:
    # Text fields twice as likely: case and quoting are where a server and a mapping disagree.
    name = draw(st.sampled_from([*sorted(FIELDS), "firstname", "emailaddress1", "firstname"]))
    pool = FIELDS[name]
    f = CONTACT.fields[name]
    lit = draw(st.one_of(st.sampled_from(pool).map(lambda v: _literal_for(name, v)), st.just(NULL)))
    kind = draw(st.sampled_from(["cmp", "cmp", "cmp", "isnull", "in", "func", "lower", "bare", "swap"]))
    if kind == "isnull":
        return ast.IsNull(span=S, operand=path(name), negated=draw(st.booleans()))
    if kind == "in":
        items = tuple(_literal_for(name, v) for v in draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3)))
        if draw(st.booleans()):
            items += (NULL,)
        return ast.InList(span=S, operand=path(name), items=items, negated=draw(st.booleans()))
    if kind == "func" and f.type == "string":
        needle = draw(st.sampled_from(["a", "A", "n@", "'", "(", ""]))
        fn = draw(st.sampled_from(["contains", "startswith", "endswith"]))
        return ast.Call(span=S, name_span=S, name=fn, args=(path(name), ast.Literal(span=S, kind="text", value=needle)))
    if kind == "lower" and f.type == "string":  # never pushable: a function of the column
        call = ast.Call(span=S, name_span=S, name="lower", args=(path(name),))
        return ast.Binary(span=S, op="==", left=call, right=ast.Literal(span=S, kind="text", value="ann"))
    if kind == "bare" and f.type == "boolean":
        return path(name)
    op = draw(st.sampled_from(["==", "==", "!=", "!=", "<", "<=", ">", ">="]))
    if f.type in ("boolean", "lookup") and op not in ("==", "!="):
        op = "=="
    if kind == "swap":
        return ast.Binary(span=S, op=op, left=lit, right=path(name))
    return ast.Binary(span=S, op=op, left=path(name), right=lit)


def filters() -> st.SearchStrategy[ast.Expr]:
    return st.recursive(
        atoms(),
        lambda inner: st.one_of(
            st.builds(lambda a, b: ast.Binary(span=S, op="and", left=a, right=b), inner, inner),
            st.builds(lambda a, b: ast.Binary(span=S, op="or", left=a, right=b), inner, inner),
            inner.map(lambda a: ast.Unary(span=S, op="not", operand=a)),
        ),
        max_leaves=6,
    )


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {"contactid": GUIDS[0]}
    for name, pool in FIELDS.items():
        row[_wire(name)] = draw(st.one_of(st.none(), st.sampled_from(pool)))
    return row


def _flow(where: ast.Expr) -> ast.Flow:
    key = ast.KeyClause(span=S, source=path("contactid"), target=path("externalId"))
    return ast.Flow(span=S, name="f", source=ast.TableRef(span=S, system="d365", name="contact"),
                    target=ast.TableRef(span=S, system="campaign", name="profile"), key=key, where=where,
                    name_span=S)


_COLUMNS = {_wire(n): (i, CONTACT.fields[n].type, "Edm.Unknown") for i, n in enumerate(sorted(FIELDS))}
_ORDER = sorted(_COLUMNS, key=lambda c: _COLUMNS[c][0])


def _server(pushdown: str, record: dict[str, Any]) -> bool:
    predicate = odata.compile_filter(odata.parse_filter(pushdown), _COLUMNS, "contact")
    return bool(predicate([record[c] for c in _ORDER]))


@settings(max_examples=300, deadline=None)
@given(where=filters(), rows=st.lists(records(), min_size=1, max_size=8))
def test_pushed_and_residual_equal_the_whole_filter(where: ast.Expr, rows: list[dict[str, Any]]) -> None:
    flow = compile_flow(_flow(where), replaces={}, source=CONTACT, target=PROFILE, file="t.map")
    # Each row also with its text in other cases: where a case-insensitive server and an exact mapping
    # part ways, and too rare to be left to chance.
    variants = [{k: (v.swapcase() if isinstance(v, str) and k in ("firstname", "emailaddress1") else v)
                 for k, v in row.items()} for row in rows]
    for row in rows + variants:
        whole = flow.matches(row)
        server = _server(flow.pushdown, row) if flow.pushdown is not None else True
        assert (server and flow.residual(row)) == whole, (flow.pushdown, flow.residual_text, row)


@settings(max_examples=300, deadline=None)
@given(value=st.text(alphabet=st.sampled_from(list("ab'\"()%27 orandeqnt,\\\n")), max_size=30) | st.text(max_size=20),
       fn=st.sampled_from(["==", "contains", "startswith", "in"]))
def test_no_value_changes_the_structure_of_the_filter(value: str, fn: str) -> None:
    lit = ast.Literal(span=S, kind="text", value=value)
    state = ast.Binary(span=S, op="==", left=path("statecode"), right=ast.Literal(span=S, kind="int", value=0))
    if fn == "==":
        atom: ast.Expr = ast.Binary(span=S, op="==", left=path("firstname"), right=lit)
        expected: odata.Node = odata.Compare("eq", odata.Prop("firstname"), odata.Literal("string", value))
    elif fn == "in":
        atom = ast.InList(span=S, operand=path("firstname"), items=(lit, lit))
        one = odata.Compare("eq", odata.Prop("firstname"), odata.Literal("string", value))
        expected = odata.Or(one, one)
    else:
        atom = ast.Call(span=S, name_span=S, name=fn, args=(path("firstname"), lit))
        expected = odata.Call(fn, (odata.Prop("firstname"), odata.Literal("string", value)))
    split = split_filter(ast.Binary(span=S, op="and", left=atom, right=state), CONTACT)
    assert split.odata is not None
    parsed = odata.parse_filter(split.odata)
    assert parsed == odata.And(expected, odata.Compare("eq", odata.Prop("statecode"), odata.Literal("int", 0)))


def test_contacts_where_is_pushed_whole() -> None:
    where = ast.Binary(span=S, op="and",
                       left=ast.Binary(span=S, op="==", left=path("statecode"), right=ast.Literal(span=S, kind="int", value=0)),
                       right=ast.IsNull(span=S, operand=path("emailaddress1"), negated=True))
    split = split_filter(where, CONTACT)
    assert split.odata == "statecode eq 0 and emailaddress1 ne null"
    assert split.residual is None


@pytest.mark.parametrize(("expr", "odata_text", "residual"), [
    # text equality is pushed (a superset on the server) and re-checked locally
    (ast.Binary(span=S, op="==", left=path("firstname"), right=ast.Literal(span=S, kind="text", value="O'Neil")),
     "firstname eq 'O''Neil'", True),
    # a negation whose local truth includes null says so
    (ast.Binary(span=S, op="!=", left=path("statecode"), right=ast.Literal(span=S, kind="int", value=1)),
     "(statecode ne 1 or statecode eq null)", False),
    (ast.Unary(span=S, op="not", operand=path("donotemail")), "(donotemail eq false or donotemail eq null)", False),
    # lookups by their wire name, GUIDs unquoted
    (ast.Binary(span=S, op="==", left=path("parentcustomerid"), right=ast.Literal(span=S, kind="text", value=GUIDS[0])),
     f"_parentcustomerid_value eq {GUIDS[0]}", False),
    (ast.Binary(span=S, op=">=", left=path("createdon"),
                right=ast.Literal(span=S, kind="datetime", value=dt.datetime(2024, 1, 31, 11, tzinfo=dt.timezone(dt.timedelta(hours=1))))),
     "createdon ge 2024-01-31T10:00:00Z", False),
    # text inequality would drop rows on a case-insensitive server: local only
    (ast.Binary(span=S, op="!=", left=path("firstname"), right=ast.Literal(span=S, kind="text", value="x")), None, True),
    (ast.Binary(span=S, op="==", left=ast.Call(span=S, name_span=S, name="lower", args=(path("firstname"),)),
                right=ast.Literal(span=S, kind="text", value="x")), None, True),
])
def test_split_examples(expr: ast.Expr, odata_text: str | None, residual: bool) -> None:
    split = split_filter(expr, CONTACT)
    assert split.odata == odata_text
    assert (split.residual is not None) == residual
