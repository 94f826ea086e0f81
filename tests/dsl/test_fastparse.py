"""The fast path agrees with lark: the same tree, the same spans, the same comments — or it steps aside.

``parse`` tries dsl/_fastparse.py first and falls back to lark. Whatever the fast path accepts must be
exactly what lark builds (spans included, which ``==`` ignores), and whatever lark refuses, the fast
path must refuse too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl._fastparse import Bail, parse_fast
from mapsync.dsl.parser import parse
from tests.dsl.test_parser import _TOKEN, EVERYTHING, PRECEDENCE, SHIPPED

ROOT = Path(__file__).resolve().parent.parent.parent


def deep(node: Any) -> Any:
    """Everything a node holds, spans included (dataclass equality leaves spans out)."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (type(node).__name__, *((f.name, deep(getattr(node, f.name))) for f in dataclasses.fields(node)))
    if isinstance(node, tuple | list):
        return tuple(deep(x) for x in node)
    return node


def agree(text: str) -> bool:
    """Assert the two paths agree on ``text``; True when the fast path took it."""
    slow = parse(text, "t.map", fast=False)
    span = slow.module.span
    try:
        fast = parse_fast(text, "t.map", span)
    except Bail:
        return False
    assert slow.diagnostics == (), f"fast path accepted what lark refuses: {slow.diagnostics[0].headline()}"
    assert deep(fast) == deep(slow.module)
    return True


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_mappings(path: Path) -> None:
    assert agree(path.read_text(encoding="utf-8"))


def test_every_construct_and_the_bench_mapping() -> None:
    assert agree(EVERYTHING.replace("-2 =>", "2 =>"))  # `"male" -2`: see test_negative_numbers
    from bench.parse import generate

    assert agree(generate(300))


@pytest.mark.parametrize("text", [t for t, _ in PRECEDENCE])
def test_precedence(text: str) -> None:
    assert agree(f"flow f {{ where {text} }}")


@pytest.mark.parametrize("text", [
    "flow f { map { a = b \n to = c } }",  # lark reads `to` as a keyword here
    "flow f { where a == b == c }",
    "flow f { mode a \n mode b }",
    'flow f { where a == "\\q" }',
    "flow f { where a == @2024-02-30 }",
    "replace r { 1 => a \n -2 => b }",
    "flow f { where a -2 }",
    "flow f { where f(a -2) }",
    "replace r { 1 => (3) -2 => 4 }",
    "flow f { batch 1.5 }",
    "flow f { where " + "f(" * 60 + "x" + ")" * 60 + " }",
    "flow f { where " + " & ".join(["x"] * 300) + " }",
    "optout o { a.b.c <-> d.e.f direction a-1.5 }",
    "flow f { where a <- 1 }",
    "flow f { where - not x }",
    "flow f {\x0b}",
])
def test_fast_path_steps_aside(text: str) -> None:
    agree(text)  # whichever path takes it, the result is lark's


KEYWORDS = sorted({"flow", "replace", "optout", "import", "from", "to", "key", "mode", "where", "on", "delete",
                   "filtered", "set", "batch", "max", "deletes", "map", "required", "keep", "once", "else",
                   "direction", "conflict", "via", "and", "or", "not", "in", "is", "null", "true", "false"})
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
    for k in KEYWORDS:
        agree(position.format(k=k))


SHIPPED_TEXT = [p.read_text(encoding="utf-8") for p in SHIPPED]


@settings(max_examples=300)
@given(st.sampled_from(SHIPPED_TEXT), st.integers(min_value=0), st.sampled_from(["delete", "duplicate", "swap"]))
def test_mutations_agree(text: str, index: int, how: str) -> None:
    tokens = list(_TOKEN.finditer(text))
    tok = tokens[index % len(tokens)]
    if how == "delete":
        mutated = text[: tok.start()] + text[tok.end():]
    elif how == "duplicate":
        mutated = text[: tok.start()] + tok.group() + " " + tok.group() + text[tok.end():]
    else:
        other = tokens[(index * 7 + 3) % len(tokens)]
        mutated = text[: tok.start()] + other.group() + text[tok.end():]
    agree(mutated)


@settings(max_examples=300)
@given(st.text(alphabet='abnotid=()-.&?<>!"@#\n 12', max_size=80))
def test_random_expressions_agree(expr: str) -> None:
    agree(f"flow f {{\n  where {expr}\n  map {{\n    x = {expr}\n  }}\n}}\n")


def test_comments_and_spans_across_lines() -> None:
    text = "# top\nflow f { # after brace\n  map {\n    a = b   # trailing   \n  }\n}\n#end"
    assert agree(text)


@settings(max_examples=60)  # generated modules are large: each example is a whole file
@given(st.data())
def test_generated_modules_agree(data: st.DataObject) -> None:
    # The formatter's generated trees, written out: every construct, nesting and literal the grammar has.
    formatter = pytest.importorskip("mapsync.dsl.formatter")
    from tests.dsl.strategies import modules

    module = data.draw(modules())
    agree(formatter.format_module(module))
