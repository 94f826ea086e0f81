"""Round trip and robustness properties of the formatter.

- generated trees: ``parse(format(tree)).module == tree`` (spans do not take part in equality) and the
  output is a fixed point of ``format_text``;
- the shipped mappings: formatting keeps their meaning and comments, and is idempotent;
- comments inserted anywhere in a shipped mapping survive, in order;
- any text at all, and the shipped mappings with a token deleted or duplicated: ``format_text``
  returns None or a text with the same meaning, never raises.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl.formatter import format_expr, format_module, format_text
from mapsync.dsl.parser import parse
from tests.dsl.strategies import expressions, modules

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "mappings").glob("*.map"))
SOURCES = {p.name: p.read_text(encoding="utf-8") for p in SHIPPED}


def _assert_round_trip(module: ast.Module) -> str:
    text = format_module(module)
    again = parse(text, module.file)
    assert again.ok, (text, again.diagnostics)
    assert again.module == module, text
    assert format_module(again.module, source=text) == text  # idempotent
    return text


@settings(max_examples=300)
@given(modules())
def test_generated_modules_round_trip(module: ast.Module) -> None:
    _assert_round_trip(module)


@settings(max_examples=300)
@given(modules(any_words=True, max_decls=2))
def test_generated_modules_with_any_clause_words_round_trip(module: ast.Module) -> None:
    _assert_round_trip(module)


@settings(max_examples=300)
@given(expressions(max_leaves=25))
def test_generated_expressions_round_trip(expr: ast.Expr) -> None:
    span = ast.Span.unknown()
    flow = ast.Flow(span=span, name="f", name_span=span, where=expr,
                    assignments=(ast.Assignment(span=span, target=ast.Path(span=span, parts=("x",)), expr=expr),))
    text = _assert_round_trip(ast.Module(span=span, file="<expr>", decls=(flow,)))
    assert f"where {format_expr(expr)}\n" in text


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mappings_keep_meaning_and_comments(path: Path) -> None:
    text = SOURCES[path.name]
    before = parse(text, path.name)
    assert before.ok
    formatted = format_text(text, path.name)
    assert formatted is not None
    after = parse(formatted, path.name)
    assert after.module == before.module
    assert [c.text for c in after.module.comments] == [c.text for c in before.module.comments]
    assert format_text(formatted, path.name) == formatted


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_mappings_are_canonical(path: Path) -> None:
    # `mapsync fmt --check mappings/` passes: every shipped file is already in the canonical layout.
    assert format_text(SOURCES[path.name], path.name) == SOURCES[path.name]


# ------------------------------------------------------------------------------------- comments survive

_shipped = st.sampled_from(sorted(SOURCES))


@st.composite
def _with_comments(draw: st.DrawFn) -> str:
    """A shipped mapping with comments put on lines of their own and at the ends of lines."""
    lines = SOURCES[draw(_shipped)].split("\n")
    for n in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(lines) - 1))
        indent = " " * draw(st.integers(0, 6))
        text = f"# note {n}" + draw(st.sampled_from(["", " with words", " # nested", " \"quoted\""]))
        if draw(st.booleans()):
            lines.insert(at, indent + text)
        elif "#" not in lines[at]:  # a second `#` on a line would only extend the comment already there
            lines[at] = lines[at] + indent + " " + text
    return "\n".join(lines)


@settings(max_examples=300)
@given(_with_comments())
def test_comments_survive_in_order(text: str) -> None:
    before = parse(text, "c.map")
    assert before.ok
    formatted = format_text(text, "c.map")
    assert formatted is not None
    after = parse(formatted, "c.map")
    assert after.module == before.module
    assert [c.text for c in after.module.comments] == [c.text for c in before.module.comments]
    assert format_text(formatted, "c.map") == formatted


# ------------------------------------------------------------------------------------------- bad input


def _check_formats_or_refuses(text: str) -> None:
    formatted = format_text(text, "x.map")
    if formatted is None:
        assert not parse(text, "x.map").ok
        return
    assert parse(formatted, "x.map").module == parse(text, "x.map").module
    assert format_text(formatted, "x.map") == formatted


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_any_text_formats_or_is_refused(text: str) -> None:
    _check_formats_or_refuses(text)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|@[0-9T:+.Z-]+|[A-Za-z_][A-Za-z0-9_]*|[0-9.]+|->|<->|=>|[=!<>]=|\?\?|\S')


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    """A shipped mapping with one token deleted or duplicated (the issue's bad-input family)."""
    text = SOURCES[draw(_shipped)]
    tokens = list(_TOKEN.finditer(text))
    tok = tokens[draw(st.integers(0, len(tokens) - 1))]
    if draw(st.booleans()):
        return text[: tok.start()] + text[tok.end():]
    return text[: tok.end()] + " " + tok.group() + text[tok.end():]


@settings(max_examples=300)
@given(_mutated())
def test_mutated_mappings_format_or_are_refused(text: str) -> None:
    _check_formats_or_refuses(text)
