"""Parsing and checking stay linear in the size of a mapping: large inputs complete, with the right result.

Speed itself is measured in bench/parse.py; these tests only make sure the large cases finish (well inside
pytest's timeout) and say the right thing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mapsync.dsl import check, parse
from mapsync.dsl.parser import _lark
from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog

FLOW = """
flow contacts {
  from d365.contact
  to   campaign.profile
  key  contactid -> externalId
  map {
    %s
  }
}
"""


# Not a speed assertion: a bound far above the seconds it takes (quadratic, it took minutes).
@pytest.mark.timeout(120)
def test_a_replacement_of_60000_cases_checks_without_error(tmp_path: Path) -> None:
    cases = "".join(f'  "v{i}" => "r{i}"\n' for i in range(60_000))
    text = f'replace big {{\n{cases}  else => "other"\n}}\n' + FLOW % "cusJobTitle = big(firstname)"
    (tmp_path / "big.map").write_text(text, encoding="utf-8")
    project, diagnostics = load_project([tmp_path / "big.map"])
    found = [*diagnostics, *check(project, load_catalog())]
    assert [d for d in found if d.is_error] == []
    assert len(project.replaces["big"].cases) == 60_000


def test_a_huge_expression_nested_too_deeply_is_one_e005() -> None:
    text = FLOW % ("cusJobTitle = text(numberofchildren" + " + 1" * 6_000 + ")")
    result = parse(text, "deep.map")
    assert [d.code for d in result.diagnostics] == ["E005"]
    assert result.diagnostics[0].span.line == 7


def test_a_string_of_megabytes_is_one_literal() -> None:
    text = FLOW % ('cusJobTitle = "' + "a" * 3_000_000 + '"')
    result = parse(text, "long.map")
    assert [d.code for d in result.diagnostics] == []
    assignment = result.module.decls[0].assignments[0]
    assert len(assignment.expr.value) == 3_000_000


# The string terminal before it was unrolled: the unrolled one must match exactly the same texts.
_OLD_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_STRING = re.compile(_lark().get_terminal("STRING").pattern.to_regexp())


@given(st.text(alphabet='ab"\\\n x', max_size=30))
def test_the_unrolled_string_pattern_matches_what_the_old_one_did(text: str) -> None:
    old = _OLD_STRING.match(text.lstrip(" \t\f\r\n"))
    new = _STRING.match(text.lstrip(" \t\f\r\n"))
    assert (old.group() if old else None) == (new.group() if new else None)


class _Counted:
    """A case value that counts how often it is compared: the work of a union, measured without a clock."""

    comparisons = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        _Counted.comparisons += 1
        return isinstance(other, _Counted) and other.n == self.n


def test_the_values_of_a_replacement_are_merged_in_linear_work() -> None:
    from mapsync.dsl.checker import _union, _Val
    from mapsync.dsl.types import ValueType

    n = 3_000
    values = [_Val(ValueType.TEXT, values=tuple(_Counted(i) for i in range(n))),
              _Val(ValueType.TEXT, values=tuple(_Counted(i) for i in range(n // 2, n + n // 2)))]
    _Counted.comparisons = 0
    merged = _union(values)
    assert merged is not None and [v.n for v in merged] == list(range(n + n // 2))  # first-seen order kept
    assert _Counted.comparisons <= 2 * n  # a list's `not in` made n²/2 of them


def test_a_huge_too_deep_expression_is_judged_without_a_parse_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    # A parse tree of megabytes of operators took minutes to build and measure: the AST is built while lark
    # parses, and lark's tree parser (kept to phrase syntax errors) never runs on valid text.

    def no_tree() -> object:
        raise AssertionError("the tree parser ran")

    monkeypatch.setattr("mapsync.dsl.parser._lark", no_tree)
    text = FLOW % ("cusJobTitle = text(numberofchildren" + " + 1" * 20_000 + ")")
    assert [d.code for d in parse(text, "deep.map").diagnostics] == ["E005"]


def test_each_file_gives_its_replacements_once_not_once_per_caller(tmp_path: Path) -> None:
    reps = "".join(f'replace r{i} {{\n  1 => "a"\n  else => "b"\n}}\n' for i in range(2_000))
    flows = "".join((FLOW % f"firstName = r{i}(gendercode)").replace("flow contacts", f"flow f{i}") for i in range(200))
    (tmp_path / "many.map").write_text(reps + flows, encoding="utf-8")
    project, _ = load_project([tmp_path / "many.map"])
    file = project.files[0]
    assert project.replaces_for(file) is project.replaces_for(file)  # built once: it is a pass over them all
    found = check(project, load_catalog())
    assert [d for d in found if d.is_error] == []


class _CountingText(str):
    splits = 0

    def splitlines(self, keepends: bool = False) -> list[str]:  # type: ignore[override]
        _CountingText.splits += 1
        return super().splitlines(keepends)


def test_rendering_splits_each_source_once_whatever_the_number_of_diagnostics() -> None:
    from mapsync.dsl.ast import Span
    from mapsync.dsl.diagnostics import Diagnostic, render_text

    text = _CountingText("".join(f"line {i}\n" for i in range(1_000)))
    diagnostics = [Diagnostic.warning("W103", "unused", Span("a.map", i, 1, i, 5, 0, 4)) for i in range(1, 1_001)]
    _CountingText.splits = 0
    rendered = render_text(diagnostics, {"a.map": text})
    assert rendered.count("^^^^") == 1_000 and "1000 | line 999" in rendered
    assert _CountingText.splits == 1
