"""The spans the parser gives every node (dsl/builder.py builds them from tokens while lark parses).

A span must say exactly where its node was written: its line and column agree with its offsets, it lies
inside its parent's span, and the text it covers reads back as the same node. Parentheses belong to the
parent: ``(a) + b`` spans from `(` to `b`, while ``a`` keeps its own span. Checked on every shipped
mapping, on generated modules, on random expressions and with every keyword in every position.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl.parser import _lark, parse
from tests.dsl.strategies import KEYWORDS
from tests.dsl.test_parser import EVERYTHING, PRECEDENCE, SHIPPED_TEXT

_EXPRS = (ast.Literal, ast.Path, ast.Unary, ast.Binary, ast.InList, ast.IsNull, ast.Call)


def deep(node: Any) -> Any:
    """Everything a node holds, spans included (dataclass equality leaves spans out)."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, *((f.name, deep(getattr(node, f.name))) for f in dataclasses.fields(node)))
    if isinstance(node, tuple | list):
        return tuple(deep(x) for x in node)
    return node


def _nodes(node: Any, parent: Any = None) -> list[tuple[Any, Any]]:
    """(node, parent) for every AST node under ``node``, without recursion."""
    out, stack = [], [(node, parent)]
    while stack:
        current, up = stack.pop()
        out.append((current, up))
        for f in dataclasses.fields(current):
            value = getattr(current, f.name)
            for child in value if isinstance(value, tuple) else (value,):
                if dataclasses.is_dataclass(child) and not isinstance(child, ast.Span):
                    stack.append((child, current))
    return out


def _where(text: str) -> ast.Expr | None:
    result = parse(f"flow f {{ where {text} }}", "t.map")
    return result.module.decls[0].where if result.ok else None  # type: ignore[union-attr]


def _names_a_field(node: Any, parent: Any) -> bool:
    """A path that is a key or a target field, not an expression (`key` or `true` may name one there)."""
    return isinstance(parent, ast.KeyClause) or (isinstance(parent, ast.Assignment) and node is parent.target)


def _position(text: str, offset: int) -> tuple[int, int]:
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def assert_spans(text: str) -> ast.Module:
    """Every span of the parse of ``text`` says where its node is; returns the module."""
    module = parse(text, "t.map").module
    for node, parent in _nodes(module):
        for f in dataclasses.fields(node):
            if not f.name.endswith("span"):
                continue
            span = getattr(node, f.name)
            assert span.file == "t.map"
            assert 0 <= span.start <= span.end <= len(text)
            assert (span.line, span.col) == _position(text, span.start), (node, f.name)
            assert (span.end_line, span.end_col) == _position(text, span.end), (node, f.name)
        if parent is not None and not isinstance(parent, ast.Module):
            assert parent.span.start <= node.span.start <= node.span.end <= parent.span.end, (parent, node)
        written = text[node.span.start:node.span.end]
        if isinstance(parent, ast.ReplaceCase) and node is parent.match:  # `-2` here is one negative literal
            assert parse(f"replace r {{ {written} => 1 }}").module.decls[0].cases[0].match == node  # type: ignore[union-attr]
        elif isinstance(node, _EXPRS) and not _names_a_field(node, parent):
            assert _where(written) == node, written  # the span covers the expression, no more, no less
        elif isinstance(node, ast.Flow | ast.Replace | ast.OptOut):
            assert written.startswith(type(node).__name__.lower()) and written.endswith("}")
            assert text[node.name_span.start:node.name_span.end] == node.name
        if isinstance(node, ast.Call):
            assert text[node.name_span.start:node.name_span.end] == node.name
    for comment in module.comments:
        assert text[comment.span.start:comment.span.end].rstrip() == comment.text
    return module


@pytest.mark.parametrize("name", sorted(SHIPPED_TEXT))
def test_shipped_mappings(name: str) -> None:
    assert assert_spans(SHIPPED_TEXT[name]).decls


def test_every_construct_and_the_bench_mapping() -> None:
    assert_spans(EVERYTHING)
    from bench.parse import generate

    assert_spans(generate(300))


@pytest.mark.parametrize("text", [t for t, _ in PRECEDENCE])
def test_precedence(text: str) -> None:
    assert_spans(f"flow f {{ where {text} }}")


def test_parentheses_belong_to_the_parent() -> None:
    text = "flow f {\n  where ((a)) + f((b),) * -(c)\n}"
    where = parse(text, "t.map").module.decls[0].where  # type: ignore[union-attr]
    assert isinstance(where, ast.Binary) and isinstance(where.right, ast.Binary)
    assert text[where.span.start:where.span.end] == "((a)) + f((b),) * -(c)"
    assert text[where.left.span.start:where.left.span.end] == "a"
    call, neg = where.right.left, where.right.right
    assert isinstance(call, ast.Call) and isinstance(neg, ast.Unary)
    assert text[call.args[0].span.start:call.args[0].span.end] == "b"
    assert text[neg.span.start:neg.span.end] == "-(c)"
    assert (where.span.line, where.span.col, where.span.end_col) == (2, 9, 31)


def test_comments_and_spans_across_lines() -> None:
    module = assert_spans("# top\nflow f { # after brace\n  map {\n    a = b   # trailing   \n  }\n}\n#end")
    assert [(c.text, c.span.line, c.span.col) for c in module.comments] == [
        ("# top", 1, 1), ("# after brace", 2, 10), ("# trailing", 4, 13), ("#end", 7, 1)]


POSITIONS = [
    "flow f {{ mode {k} }}", "flow f {{ on delete: {k} }}", "flow f {{ on filtered: {k} }}",
    "optout o {{ a.b.c <-> d.e.f via {k} direction {k} conflict {k} }}", "flow {k} {{ }}",
    "flow f {{ from {k}.{k}.{k} }}", "optout o {{ {k}.{k}.{k} <-> d.e.f }}", "flow f {{ key {k}.{k} -> {k} }}",
    "flow f {{ where a.{k} }}", "flow f {{ map {{ {k}.{k} = 1 }} }}", "flow f {{ on delete: set({k} = 1, {k} = 2) }}",
    "flow f {{ where {k} }}", "flow f {{ where {k}(1) }}", "replace {k} {{ }}", "flow f {{ map {{ a = b \n {k} = 1 }} }}",
    "flow f {{ map {{ a = b {k} }} }}", "flow f {{ where x {k} y }}", "replace r {{ 1 => a {k} }}",
]


@pytest.mark.parametrize("position", POSITIONS)
def test_keywords_in_every_position(position: str) -> None:
    for k in sorted(KEYWORDS):
        assert_spans(position.format(k=k))


@settings(max_examples=300)
@given(st.text(alphabet='abnotid=()-.&?<>!"@#\n 12,', max_size=80))
def test_random_expressions(expr: str) -> None:
    assert_spans(f"flow f {{\n  where {expr}\n  map {{\n    x = {expr}\n  }}\n}}\n")


@settings(max_examples=60)  # generated modules are large: each example is a whole file
@given(st.data())
def test_generated_modules(data: st.DataObject) -> None:
    # The formatter's generated trees, written out: every construct, nesting and literal the grammar has.
    from mapsync.dsl.formatter import format_module
    from tests.dsl.strategies import modules

    assert_spans(format_module(data.draw(modules())))


def test_the_strategies_keywords_are_the_grammars_quoted_words() -> None:
    words = {t.pattern.value for t in _lark().terminals if t.pattern.type == "str" and t.pattern.value.isidentifier()}
    assert words == KEYWORDS
