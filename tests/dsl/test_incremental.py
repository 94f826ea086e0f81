"""The declaration-by-declaration parse the language server uses (dsl/incremental.py).

Property: for any text and any sequence of edits, ``DeclarationCache.parse`` after each edit gives exactly
what ``parse`` gives for the whole new text: the same tree with the same spans (which plain equality of
the AST ignores), the same comments and the same diagnostics (code, message, hint, range). And it does
re-parse only the declarations whose text changed.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import incremental
from mapsync.dsl.formatter import format_module
from mapsync.dsl.incremental import DeclarationCache, pieces
from mapsync.dsl.operators import MAX_DEPTH
from mapsync.dsl.parser import ParseResult, parse
from tests.dsl.strategies import modules
from tests.paths import FIXTURE_MAPPINGS

SOURCES = [p.read_text(encoding="utf-8") for p in sorted(FIXTURE_MAPPINGS.glob("*.map"))]

# What a user types: tokens, line breaks, comments, whole declaration heads at a line start.
TYPED = ["", " ", "\n", "x", "=", "{", "}", "(", ")", ",", ".", '"', "# note\n", "-2", "1", "emailaddress1",
         "lower(", "and", "&", "\nflow ", "\nflow", "flow = x\n", "\nreplace r { 1 => 2 }\n", '\nimport "a.map"\n',
         "\noptout", "map { a = b }", "\x00", "'", "\t", "\r\n"]


def everything(value: Any) -> Any:
    """A value with every field, spans included, for a comparison that spans do not escape."""
    if isinstance(value, tuple):
        return tuple(everything(item) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *((f.name, everything(getattr(value, f.name))) for f in fields(value)))
    return value


def assert_same(got: ParseResult, text: str, file: str) -> None:
    assert everything(got) == everything(parse(text, file)), text


@st.composite
def edited(draw: st.DrawFn, text: str) -> list[str]:
    """The texts after each of a few edits: a span replaced by typed pieces, or a line's text duplicated
    or removed (whole declarations move, so unchanged ones are found at new places)."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            end = min(len(text), start + draw(st.integers(0, 8)))
            new = "".join(draw(st.lists(st.sampled_from(TYPED), max_size=3)))
        else:
            start = text.rfind("\n", 0, start) + 1
            end = text.find("\n", start) + 1 or len(text)
            new = draw(st.sampled_from(["", text[start:end] * 2, "\n"]))
        text = text[:start] + new + text[end:]
        out.append(text)
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), source=st.sampled_from(SOURCES))
def test_any_edit_of_a_mapping_parses_as_the_whole_text(data: st.DataObject, source: str) -> None:
    cache = DeclarationCache()
    assert_same(cache.parse(source, "m.map"), source, "m.map")
    for text in data.draw(edited(source)):
        assert_same(cache.parse(text, "m.map"), text, "m.map")


@settings(max_examples=100, deadline=None)
@given(data=st.data(), module=modules(max_decls=5))
def test_any_edit_of_a_generated_module_parses_as_the_whole_text(data: st.DataObject, module: Any) -> None:
    source = format_module(module)
    cache = DeclarationCache()
    assert_same(cache.parse(source, "g.map"), source, "g.map")
    for text in data.draw(edited(source)):
        assert_same(cache.parse(text, "g.map"), text, "g.map")


FLOW = "flow f{n} {{\n  from d365.contact\n  to campaign.profile\n  map {{\n    email = \"a{n}\"\n  }}\n}}\n"


def test_only_the_changed_declaration_is_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    clean = incremental.parse_once
    monkeypatch.setattr(incremental, "parse_once", lambda text, file: parsed.append(text) or clean(text, file))
    text = "# head\n" + "".join(FLOW.format(n=n) for n in range(5))
    cache = DeclarationCache()
    cache.parse(text, "m.map")
    assert len(parsed) == 6  # the comment before the first flow, and each flow

    parsed.clear()
    changed = text.replace('"a1"', '"a longer literal"').replace("flow f3", "\n\nflow f3")
    assert_same(cache.parse(changed, "m.map"), changed, "m.map")  # f2..f4 moved: same spans as a full parse
    # f1's text changed, f2 now ends with two more line breaks; f3 and f4 were only moved
    assert [p.lstrip(" \n") for p in parsed] == [FLOW.format(n=1).replace('"a1"', '"a longer literal"'),
                                                 FLOW.format(n=2) + "\n\n"]

    parsed.clear()
    whole = incremental.parse
    monkeypatch.setattr(incremental, "parse", lambda text, file: parsed.append("whole") or whole(text, file))
    broken = changed.replace("email = \"a3\"", "email x \"a3\"")
    assert_same(cache.parse(broken, "m.map"), broken, "m.map")
    assert [p.lstrip(" \n") for p in parsed] == [FLOW.format(n=3).replace(" = ", " x ")]  # no whole parse
    parsed.clear()
    mended = broken.replace("email x \"a3\"", "email = \"a33\"")
    assert_same(cache.parse(mended, "m.map"), mended, "m.map")
    assert [p.lstrip(" \n") for p in parsed] == [FLOW.format(n=3).replace('"a3"', '"a33"')]  # not the others


def test_a_map_line_whose_target_is_named_like_a_declaration_is_not_a_cut() -> None:
    text = "flow f {\n  from d365.contact\n  to campaign.profile\n  map {\nflow = x\nimport = y\n  }\n}\n"
    assert len(pieces(text)) == 3  # cut before `flow = x` and `import = y`: neither piece parses alone
    cache = DeclarationCache()
    result = cache.parse(text, "m.map")
    assert result.ok and [a.target.dotted for a in result.module.decls[0].assignments] == ["flow", "import"]
    assert_same(result, text, "m.map")
    again = text.replace("x", "xx")
    assert_same(cache.parse(again, "m.map"), again, "m.map")


def test_errors_nul_bytes_and_deep_nesting_are_reported_as_the_whole_parse_does() -> None:
    deep = "(" * (MAX_DEPTH + 5) + "a" + ")" * (MAX_DEPTH + 5)
    good = FLOW.format(n=0)
    texts = [
        good + FLOW.format(n=1).replace(" = ", " x "),  # syntax error in the second flow
        good + "flow g {\n  from d365.contact\n",  # the file ends inside a flow
        good + "# a NUL \x00 in a comment\n",
        good + FLOW.format(n=1).replace('"a1"', deep),  # E005 in the second flow
        good + FLOW.format(n=1).replace("  to campaign.profile\n", "  to campaign.profile\n  to campaign.profile\n"),
        good + FLOW.format(n=1).replace('"a1"', '"bad \\q escape"'),  # E006 inside a declaration that parses
        FLOW.format(n=1).replace("  }\n}\n", "") + good,  # a flow not closed before the next one
        good + "} x\n" + good.replace("f0", "f1"),  # a stray token after a declaration
        "x y\n" + good,  # before the first declaration
        good + "'",
        good + "".join(FLOW.format(n=n).replace(" = ", " ! ") for n in range(1, 25)),  # more errors than reported
        good + "".join(FLOW.format(n=n).replace(" = ", " ! ") for n in range(1, 19)) + good.replace("f0", "g"),
        good + "replace r {\n  1 => \"a\"\n",  # the last declaration not closed
    ]
    cache = DeclarationCache()
    cache.parse(good, "m.map")
    for text in texts:
        assert_same(cache.parse(text, "m.map"), text, "m.map")
        assert_same(cache.parse(good + text, "m.map"), good + text, "m.map")


@settings(max_examples=100, deadline=None)
@given(data=st.data(), module=modules(max_decls=6))
def test_declarations_broken_anywhere_report_as_the_whole_text(data: st.DataObject, module: Any) -> None:
    """Several declarations broken at once: each is reported, and the others parse, as in a whole parse."""
    lines = format_module(module).split("\n")
    cache = DeclarationCache()
    cache.parse("\n".join(lines), "g.map")
    for at in data.draw(st.lists(st.integers(0, len(lines) - 1), min_size=1, max_size=4)):
        lines[at] = lines[at] + data.draw(st.sampled_from(TYPED))
        text = "\n".join(lines)
        assert_same(cache.parse(text, "g.map"), text, "g.map")
