"""The precedence table (dsl/operators.py) and grammar.lark agree, and every printer uses the table.

For every pair of binary operators, ``a op1 b op2 c`` is parsed (by lark, the only parser), and the
grouping must be the one the table predicts. The formatter and the compiler's
messages print through the same table, so a printed expression parses back to the same tree.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl.compiler import expr_text
from mapsync.dsl.formatter import format_expr
from mapsync.dsl.literals import odata_quote, quote, unescape
from mapsync.dsl.operators import BINARY, COMPARISONS, MIRRORED, NEGATED, Level
from mapsync.dsl.parser import parse
from tests.dsl import strategies as dst

PAIRS = list(itertools.product(BINARY, repeat=2))


def _where(text: str) -> ast.Expr | None:
    result = parse(f"flow f {{ where {text} }}", "t.map")
    if result.diagnostics:
        return None
    (flow,) = result.module.decls
    assert isinstance(flow, ast.Flow)
    return flow.where


def _expected(op1: str, op2: str) -> str | None:
    """How the table groups ``a op1 b op2 c``: "left", "right", or None (a syntax error)."""
    l1, l2 = BINARY[op1], BINARY[op2]
    if l1 < l2:
        return "right"
    if l1 > l2:
        return "left"
    if l1 is Level.CMP:
        return None  # comparisons do not chain
    return "right" if l1 is Level.COALESCE else "left"


@pytest.mark.parametrize(("op1", "op2"), PAIRS, ids=[f"{a} {b}" for a, b in PAIRS])
def test_grammar_groups_as_the_table_says(op1: str, op2: str) -> None:
    text = f"a {op1} b {op2} c"
    expected = _expected(op1, op2)
    tree = _where(text)
    if expected is None:
        assert tree is None, f"{text} parsed, but comparisons do not chain"
        return
    assert isinstance(tree, ast.Binary)
    grouped = "left" if isinstance(tree.left, ast.Binary) else "right"
    assert grouped == expected, f"{text}: lark groups {grouped}, the table says {expected}"
    assert format_expr(tree) == text  # the table needs no parentheses here, so the printer adds none


@pytest.mark.parametrize(("op1", "op2"), PAIRS, ids=[f"{a} {b}" for a, b in PAIRS])
def test_the_printer_adds_the_parentheses_the_table_needs(op1: str, op2: str) -> None:
    for text in (f"(a {op1} b) {op2} c", f"a {op1} (b {op2} c)"):
        tree = _where(text)
        assert tree is not None
        assert _where(format_expr(tree)) == tree


def test_comparison_tables_are_complete() -> None:
    assert set(NEGATED) == set(MIRRORED) == set(COMPARISONS)
    assert all(NEGATED[NEGATED[op]] == op and MIRRORED[MIRRORED[op]] == op for op in COMPARISONS)


@settings(max_examples=150, deadline=None)
@given(dst.expressions())
def test_compiler_messages_print_with_the_formatter(expr: ast.Expr) -> None:
    assert expr_text(expr) == format_expr(expr)


@pytest.mark.parametrize("value", ["", 'say "hi"', "back\\slash", "tab\tnew\nline\r", "\x00\x1f\u2028", "ünï €"])
def test_quote_and_unescape_round_trip(value: str) -> None:
    problems: list = []  # type: ignore[type-arg]
    assert unescape(quote(value), ast.Span.unknown("t"), problems) == value
    assert problems == []


@given(st.text())
def test_any_text_quotes_and_reads_back(value: str) -> None:
    problems: list = []  # type: ignore[type-arg]
    assert unescape(quote(value), ast.Span.unknown("t"), problems) == value and problems == []


def test_odata_quote_doubles_quotes() -> None:
    assert odata_quote("O'Brien") == "'O''Brien'"
