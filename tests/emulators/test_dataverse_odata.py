"""The $filter parser: never crashes on random text, and printing a generated AST parses back to it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.emulators.dataverse.odata import (
    And,
    Call,
    Compare,
    FilterSyntaxError,
    Literal,
    Not,
    Or,
    Prop,
    compile_filter,
    parse_filter,
    to_text,
)

names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in {"and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "true", "false", "null",
                        "contains", "startswith", "endswith"})
literals = st.one_of(
    st.text(max_size=8).map(lambda s: Literal("string", s)),
    st.integers(-10**6, 10**6).map(lambda i: Literal("int", i)),
    st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False).map(lambda d: Literal("decimal", d)),
    st.booleans().map(lambda b: Literal("bool", b)),
    st.just(Literal("null", None)),
    st.uuids().map(lambda u: Literal("guid", str(u))),
    st.dates().map(lambda d: Literal("date", d.isoformat())),
)
comparisons = st.builds(Compare, st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), names.map(Prop), literals)
calls = st.builds(lambda f, n, s: Call(f, (Prop(n), Literal("string", s))),
                  st.sampled_from(["contains", "startswith", "endswith"]), names, st.text(max_size=6))
filters = st.recursive(comparisons | calls, lambda inner: st.one_of(
    st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)), max_leaves=12)


@settings(max_examples=300)
@given(filters)
def test_print_then_parse_round_trips(node) -> None:
    assert parse_filter(to_text(node)) == node


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("abn eqot()',-:0123456789TZ")) | st.characters(), max_size=40))
def test_parser_never_crashes(text: str) -> None:
    try:
        parse_filter(text)
    except FilterSyntaxError as err:
        assert err.message and 0 <= err.position <= len(text)


def test_examples_and_precedence() -> None:
    node = parse_filter("not contains(a,'x') and b eq 2024-01-31T10:00:00+01:00 or c ne null")
    assert node == Or(And(Not(Call("contains", (Prop("a"), Literal("string", "x")))),
                          Compare("eq", Prop("b"), Literal("datetime", "2024-01-31T09:00:00Z"))),
                      Compare("ne", Prop("c"), Literal("null", None)))
    assert parse_filter("x eq 1.50") == Compare("eq", Prop("x"), Literal("decimal", Decimal("1.50")))
    assert parse_filter("_parentcustomerid_value eq 8D0A0B4C-0000-0000-0000-000000000001").right.value == \
        "8d0a0b4c-0000-0000-0000-000000000001"
    with pytest.raises(FilterSyntaxError):
        parse_filter("a eq")


def test_evaluation_is_case_insensitive_with_null_semantics() -> None:
    cols = {"name": (0, "string", "Edm.String"), "n": (1, "integer", "Edm.Int32")}
    pred = compile_filter(parse_filter("name eq 'ANN' and n gt 1"), cols, "contact")
    assert pred(("ann", 2)) and not pred(("ann", 1)) and not pred((None, 5))
    assert compile_filter(parse_filter("name eq null"), cols, "contact")((None, 1))
