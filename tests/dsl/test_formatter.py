"""The formatter's layout (golden files), its literals and parentheses, and the `mapsync fmt` command."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from mapsync.dsl import ast
from mapsync.dsl.formatter import FormatError, format_expr, format_module, format_text
from mapsync.dsl.parser import parse
from mapsync.engine.cli import main
from tests.dsl.strategies import BINARY_OPS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "format"
CASES = sorted(p for p in FIXTURES.glob("*.map") if not p.name.endswith(".expected.map"))
SPAN = ast.Span.unknown()


# ----------------------------------------------------------------------------------------------- golden


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_golden_layout(case: Path) -> None:
    expected = case.with_name(f"{case.stem}.expected.map").read_text(encoding="utf-8")
    source = case.read_text(encoding="utf-8")
    assert format_text(source, case.name) == expected
    assert format_text(expected, case.name) == expected  # the canonical text is a fixed point
    assert parse(expected, case.name).module == parse(source, case.name).module


def test_golden_cases_exist() -> None:
    assert {"layout", "comments", "expressions", "empty", "only_comments"} <= {c.stem for c in CASES}


# ---------------------------------------------------------------------------------------------- pieces


def _p(name: str) -> ast.Path:
    return ast.Path(span=SPAN, parts=(name,))


def _bin(op: str, left: ast.Expr, right: ast.Expr) -> ast.Binary:
    return ast.Binary(span=SPAN, op=op, left=left, right=right)  # type: ignore[arg-type]


def _lit(kind: str, value: object) -> ast.Literal:
    return ast.Literal(span=SPAN, kind=kind, value=value)  # type: ignore[arg-type]


def _where(expr: ast.Expr) -> ast.Module:
    return ast.Module(span=SPAN, file="t.map", decls=(ast.Flow(span=SPAN, name="f", name_span=SPAN, where=expr),))


def _round_trips(expr: ast.Expr) -> bool:
    result = parse(format_module(_where(expr)), "t.map")
    return result.ok and result.module == _where(expr)


def test_every_pair_of_binary_operators_nests_both_ways() -> None:
    # Exhaustive over precedence and associativity at depth two: 14 x 14 operators, left and right.
    a, b, c = _p("a"), _p("b"), _p("c")
    failures = [
        (outer, inner, side)
        for outer, inner in itertools.product(BINARY_OPS, repeat=2)
        for side, tree in (("left", _bin(outer, _bin(inner, a, b), c)), ("right", _bin(outer, a, _bin(inner, b, c))))
        if not _round_trips(tree)
    ]
    assert failures == []


@pytest.mark.parametrize(("tree", "text"), [
    (_bin("-", _p("a"), _bin("-", _p("b"), _p("c"))), "a - (b - c)"),
    (_bin("-", _bin("-", _p("a"), _p("b")), _p("c")), "a - b - c"),
    (_bin("??", _p("a"), _bin("??", _p("b"), _p("c"))), "a ?? b ?? c"),
    (_bin("??", _bin("??", _p("a"), _p("b")), _p("c")), "(a ?? b) ?? c"),
    (_bin("*", _bin("+", _p("a"), _p("b")), _p("c")), "(a + b) * c"),
    (_bin("==", _bin("==", _p("a"), _p("b")), _p("c")), "(a == b) == c"),
    (_bin("and", _p("a"), _bin("or", _p("b"), _p("c"))), "a and (b or c)"),
    (ast.Unary(span=SPAN, op="not", operand=_bin("==", _p("a"), _p("b"))), "not a == b"),
    (_bin("==", ast.Unary(span=SPAN, op="not", operand=_p("a")), _p("b")), "(not a) == b"),
    (ast.Unary(span=SPAN, op="-", operand=_bin("+", _p("a"), _p("b"))), "-(a + b)"),
    (ast.Unary(span=SPAN, op="-", operand=ast.Unary(span=SPAN, op="-", operand=_p("a"))), "--a"),
    (ast.InList(span=SPAN, operand=_bin("or", _p("a"), _p("b")), items=(_bin("or", _p("c"), _p("d")),)),
     "(a or b) in (c or d)"),
    (ast.IsNull(span=SPAN, operand=_bin("??", _p("a"), _p("b")), negated=True), "a ?? b is not null"),
    (ast.Call(span=SPAN, name="f", name_span=SPAN, args=()), "f()"),
])
def test_minimal_parentheses(tree: ast.Expr, text: str) -> None:
    assert format_expr(tree) == text
    assert _round_trips(tree)


@pytest.mark.parametrize(("literal", "text"), [
    (_lit("text", 'a "b" \\ \n\t\r'), '"a \\"b\\" \\\\ \\n\\t\\r"'),
    (_lit("text", "\x00\x1f\x7f\u2028é€😀"), '"\\u0000\\u001f\\u007f\\u2028é€😀"'),
    (_lit("text", "\ud800"), '"\\ud800"'),  # a lone surrogate cannot be written as UTF-8
    (_lit("int", 42), "42"),
    (_lit("number", 5.0), "5.0"),
    (_lit("number", 1e-07), "0.0000001"),
    (_lit("number", 1e16), "10000000000000000.0"),
    (_lit("number", 0.1), "0.1"),
    (_lit("number", float("inf")), "1" + "0" * 309 + ".0"),  # what a 310-digit literal in a file reads as
    (_lit("bool", True), "true"),
    (_lit("null", None), "null"),
    (_lit("date", dt.date(1, 2, 3)), "@0001-02-03"),
    (_lit("datetime", dt.datetime(2024, 1, 31, 10, tzinfo=dt.UTC)), "@2024-01-31T10:00:00Z"),
    (_lit("datetime", dt.datetime(2024, 1, 31, 10, 0, 0, 120000, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30)))),
     "@2024-01-31T10:00:00.12-05:30"),
])
def test_literals_print_so_they_read_back(literal: ast.Literal, text: str) -> None:
    assert format_expr(literal) == text
    assert _round_trips(literal)


def test_negative_numbers_are_literals_only_as_replace_matches() -> None:
    replace = ast.Replace(span=SPAN, name="r", name_span=SPAN, cases=(
        ast.ReplaceCase(span=SPAN, match=_lit("int", -2), result=_lit("number", -0.5)),
    ))
    text = format_module(ast.Module(span=SPAN, file="t.map", decls=(replace,)))
    assert text == "replace r {\n  -2 => -0.5\n}\n"
    # In an expression `-0.5` reads back as unary minus on 0.5: same meaning, another tree.
    assert parse(text, "t.map").module.decls[0].cases[0].result == ast.Unary(  # type: ignore[union-attr]
        span=SPAN, op="-", operand=_lit("number", 0.5))


@pytest.mark.parametrize("node", [
    _lit("number", float("nan")),
    _lit("int", "12"),
    _lit("datetime", dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=30)))),
    _p("not a name"),
    ast.Path(span=SPAN, parts=()),
    ast.InList(span=SPAN, operand=_p("a"), items=()),
    "not a node",
])
def test_trees_the_parser_never_builds_are_refused_clearly(node: object) -> None:
    with pytest.raises(FormatError):
        format_expr(node)  # type: ignore[arg-type]


def test_unknown_declaration_is_refused_clearly() -> None:
    with pytest.raises(FormatError, match="Comment"):
        format_module(ast.Module(span=SPAN, file="t.map", decls=(ast.Comment(span=SPAN, text="# x"),)))  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["flow {", "flow f { map { a = } }", "\x00", "flow f { mode a mode b }",
                                  'flow f { where a == "\\q" }'])
def test_text_that_does_not_parse_gives_none(text: str) -> None:
    assert format_text(text, "bad.map") is None


def test_without_source_comments_before_map_go_inside_it() -> None:
    # The AST has no span for `map {`; given the source, the formatter finds it. Without, the
    # comment still survives, as the first line of the block.
    text = "flow f {\n  from a.b\n\n  # the fields\n  map {\n    x = y\n  }\n}\n"
    module = parse(text, "t.map").module
    assert format_module(module, source=text) == text
    assert format_module(module) == "flow f {\n  from a.b\n\n  map {\n    # the fields\n    x = y\n  }\n}\n"


def test_crlf_and_tabs_become_canonical() -> None:
    assert format_text("flow f {\r\n\tfrom a.b\t# c\r\n}\r\n") == "flow f {\n  from a.b  # c\n}\n"


# ----------------------------------------------------------------------------------------------- the CLI


def _mappings(tmp_path: Path) -> Path:
    folder = tmp_path / "mappings"
    folder.mkdir()
    (folder / "ok.map").write_text((FIXTURES / "layout.expected.map").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "messy.map").write_text((FIXTURES / "layout.map").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def test_fmt_rewrites_files_in_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _mappings(tmp_path)
    (folder / "messy.map").chmod(0o640)
    ok_before = (folder / "ok.map").stat().st_mtime_ns
    assert main(["fmt", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert (folder / "messy.map").read_text(encoding="utf-8") == (FIXTURES / "layout.expected.map").read_text()
    assert (folder / "messy.map").stat().st_mode & 0o777 == 0o640
    assert (folder / "ok.map").stat().st_mtime_ns == ok_before  # a canonical file is not rewritten
    assert "reformatted" in out and "messy.map" in out and "ok.map" not in out
    assert "1 file reformatted, 1 unchanged" in err
    assert sorted(p.name for p in folder.iterdir()) == ["messy.map", "ok.map"]  # no temporary left behind
    assert main(["fmt", "--check", str(folder)]) == 0


def test_fmt_check_prints_a_diff_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _mappings(tmp_path)
    before = (folder / "messy.map").read_text(encoding="utf-8")
    assert main(["fmt", "--check", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert (folder / "messy.map").read_text(encoding="utf-8") == before
    assert "would reformat" in out and "messy.map" in out and "ok.map" not in out.replace("messy.map", "")
    assert "+  to   campaign.profile" in out and "--- " in out and "+++ " in out
    assert "1 file would be reformatted, 1 unchanged" in err


def test_fmt_leaves_a_file_that_does_not_parse_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _mappings(tmp_path)
    broken = folder / "broken.map"
    broken.write_text("flow f {\n  map { a = }\n}\n", encoding="utf-8")
    assert main(["fmt", str(folder)]) == 1
    _, err = capsys.readouterr()
    assert broken.read_text(encoding="utf-8") == "flow f {\n  map { a = }\n}\n"
    assert "broken.map:2:13: error[E001]" in err and "^" in err
    assert (folder / "messy.map").read_text() == (FIXTURES / "layout.expected.map").read_text()  # others still done


def test_fmt_reports_a_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bin.map"
    bad.write_bytes(b"flow f {\xff}")
    assert main(["fmt", str(bad)]) == 1
    assert "error[E004]" in capsys.readouterr().err
    assert bad.read_bytes() == b"flow f {\xff}"


@pytest.mark.parametrize("args", [["fmt", "no/such/folder"], ["fmt", "--bogus"]])
def test_fmt_usage_errors_exit_2(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(args))
    assert exit_info.value.code == 2
    assert "mapsync" in capsys.readouterr().err


def test_fmt_on_a_folder_without_mappings_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["fmt", str(tmp_path)]) == 2


def test_shipped_mappings_pass_fmt_check() -> None:
    # The real entry point, as CI and `make lint` run it.
    result = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "fmt", "--check", "mappings/"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 files would be reformatted" in result.stderr


def test_the_example_in_the_formatting_rules_is_canonical() -> None:
    rules = (ROOT / "docs" / "formatting.md").read_text(encoding="utf-8")
    example = rules.split("```\n", 2)[1]
    assert format_text(example, "formatting.md") == example
