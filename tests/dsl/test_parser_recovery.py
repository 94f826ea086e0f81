"""Error recovery: each broken declaration is blanked (its lines kept) and the rest parsed again. What is kept
must be exactly what those declarations parse to alone, at their places in the file, and a long blank run
must not make the parser quadratic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lark.exceptions import UnexpectedInput, UnexpectedToken

from mapsync.dsl.parser import _build, _lark, parse
from tests.dsl.test_parser import _TOKEN, SHIPPED_TEXT
from tests.dsl.test_spans import deep

PIECES = ["", "{", "}", "(", ")", "=", "x", '"', "\n", "flow", "map", "->", "=>", "#", ",", "."]


@settings(max_examples=150)
@given(st.sampled_from(sorted(SHIPPED_TEXT)), st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(PIECES)),
                                                       min_size=1, max_size=3))
def test_recovery_keeps_declarations_as_they_parse_alone(name: str, edits: list[tuple[int, str]]) -> None:
    text = SHIPPED_TEXT[name]
    for index, piece in edits:
        tokens = list(_TOKEN.finditer(text))
        tok = tokens[index % len(tokens)]
        text = text[: tok.start()] + piece + text[tok.end() :]
    result = parse(text, "t.map")
    assert [d.span.line for d in result.diagnostics if d.code in SYNTAX] == sorted(
        d.span.line for d in result.diagnostics if d.code in SYNTAX)  # reported top to bottom
    for decl in result.module.decls:
        assert deep(_alone(text, decl)) == deep(decl)
    for comment in result.module.comments:
        assert text[comment.span.start:comment.span.end].rstrip() == comment.text


SYNTAX = {"E001", "E002", "E003"}


def _alone(text: str, decl: object) -> object:
    """``decl`` parsed on its own, at its place in ``text`` (everything else blanked, lines kept)."""
    span = decl.span  # type: ignore[attr-defined]
    blank = "".join(ch if ch == "\n" else " " for ch in text)
    (alone,) = parse(blank[: span.start] + text[span.start : span.end] + blank[span.end :], "t.map").module.decls
    return alone


def test_two_broken_flows_and_a_good_one_between_them() -> None:
    good = SHIPPED_TEXT["contacts.map"]
    text = "flow a {\n  from d365.contact\n  map { x }\n}\n\n" + good + "\nflow b {\n  key = \n}\n"
    result = parse(text, "t.map")
    assert [d.code for d in result.diagnostics] == ["E001", "E001"]
    assert [type(d).__name__ for d in result.module.decls] == ["Import", "Flow"]  # the flow that parses is kept
    assert all(deep(_alone(text, d)) == deep(d) for d in result.module.decls)


@pytest.mark.timeout(30)  # a hang guard: quadratic, this input takes hours; linear, milliseconds
def test_a_long_blank_tail_after_a_broken_flow() -> None:
    text = "flow f {\n  map {\n    email = lower(emailaddress1)\n" + "\n" * 300_000
    result = parse(text, "t.map")
    assert [d.code for d in result.diagnostics] == ["E003"]


def test_a_map_line_without_its_equals_names_only_its_own_target() -> None:
    text = "flow c {\n  map {\n    email = lower(x)\n    first = trim(y)\n    phone lower(z)\n  }\n}\n"
    (diag,) = parse(text, "t.map").diagnostics
    assert diag.message == "expected `=` after target field `phone`"


def test_a_syntax_error_is_reported_from_any_working_folder(tmp_path: Path) -> None:
    # The grammar is read from the installed package, not from a `dsl` folder that happens to be in the
    # current directory (outside the checkout the lark path once failed with an internal GrammarError).
    code = "from mapsync.dsl.parser import parse; print(parse('mport x', 'x.map').diagnostics[0].code)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "E001\n", "")


@settings(max_examples=150)
@given(st.sampled_from(sorted(SHIPPED_TEXT)), st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(PIECES)),
                                                       min_size=1, max_size=3))
def test_a_syntax_error_reads_the_same_from_its_declaration_alone(name: str, edits: list[tuple[int, str]]) -> None:
    # The tree parse that phrases an error reads the failing declaration only (the ones before it blanked):
    # the messages must be those a tree parse of the whole text gives.
    text = SHIPPED_TEXT[name]
    for index, piece in edits:
        tokens = list(_TOKEN.finditer(text))
        tok = tokens[index % len(tokens)]
        text = text[: tok.start()] + piece + text[tok.end() :]
    alone = parse(text, "t.map").diagnostics
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("mapsync.dsl.parser._failed_decl_start", lambda exc: None)
        assert parse(text, "t.map").diagnostics == alone


def test_an_error_after_a_whole_declaration_looks_back_into_it() -> None:
    (diag,) = parse("flow a {\n}\nflow b {\n  map { x = y }\n}\n)", "t.map").diagnostics
    assert (diag.span.line, diag.span.col) == (6, 1)
    assert diag.message.endswith("after `}`, found `)`")


@settings(max_examples=150)
@given(st.sampled_from(sorted(SHIPPED_TEXT)), st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(PIECES)),
                                                       min_size=1, max_size=3))
def test_the_building_parser_and_the_tree_parser_stop_at_the_same_token(name: str, edits: list[tuple[int, str]]) -> None:
    # One grammar, two lark parsers (the AST built inline; lark's tree, read to phrase an error): the same
    # LALR tables, so the same verdict on every text, and the same token and expectations when it fails.
    text = SHIPPED_TEXT[name]
    for index, piece in edits:
        tokens = list(_TOKEN.finditer(text))
        tok = tokens[index % len(tokens)]
        text = text[: tok.start()] + piece + text[tok.end() :]
    verdicts = []
    for run in (lambda: _build(text, "t.map"), lambda: _lark().parse(text)):
        try:
            run()
            verdicts.append(None)
        except UnexpectedToken as exc:
            verdicts.append((exc.token.type, exc.token.start_pos, frozenset(exc.interactive_parser.accepts())))
        except UnexpectedInput as exc:
            verdicts.append((type(exc).__name__, exc.pos_in_stream))
    assert verdicts[0] == verdicts[1]
