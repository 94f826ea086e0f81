"""Mapping tests: the ``*.test.yaml`` files beside the mappings, run against the compiled flows.

    run_tests(paths, catalog=None) -> TestReport        render(report) -> str

A test file names a flow and lists cases (format: ``schemas/mapping-test.schema.json``). Inputs use the
mapping's own field names; the runner writes them in the source's wire form (``new_contactid`` ->
``_new_contactid_value``, YAML dates -> ISO text or Campaign's ``2019-09-25 23:20:35.000Z``).
Expectations: ``filtered``, ``{rejected: FIELD[, reason: TEXT]}``, or a subset of the payload (nested
objects or dotted paths; ``{link: FLOW, value: ID}`` / ``{contact: ID}`` for references;
``{absent: true}`` for a field left out).

Coverage: the flows are compiled in trace mode, so each outcome says which mapping lines it went
through (assignments, the ``where``, each replacement case). Lines no case went through are listed.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mapsync.dsl import ast
from mapsync.dsl import runtime as rt
from mapsync.dsl.compiler import CompiledFlow, compile_project
from mapsync.dsl.project import Project, display_name, load_project
from mapsync.dsl.schema import Catalog, TableSchema, load_catalog
from mapsync.dsl.types import ValueType

__all__ = ["CaseResult", "TestReport", "find_test_files", "render", "run_tests", "to_wire_input"]

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "mapping-test.schema.json"
_MISSING = object()


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    line: int
    flow: str
    name: str
    ok: bool
    diffs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestReport:
    results: tuple[CaseResult, ...]
    uncovered: tuple[tuple[str, int, str], ...]  # (file, line, why), sorted
    coverable: int
    notes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # files that could not be run at all
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


def find_test_files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.rglob("*.test.yaml"))
        elif p.name.endswith(".test.yaml"):
            out.append(p)
    return out


def _map_paths(paths: Sequence[Path]) -> list[Path]:
    """The mappings a test run needs: the folders given, or the folders of the test files given."""
    out: list[Path] = []
    for p in paths:
        folder = p if p.is_dir() else p.parent
        if folder not in out:
            out.append(folder)
    return out


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def run_tests(paths: Sequence[Path], *, catalog: Catalog | None = None) -> TestReport:
    """Run every test file under ``paths`` against the mappings beside them. Raises ``CheckError``
    when the mappings themselves do not check (there is nothing meaningful to test then)."""
    catalog = catalog or load_catalog()
    tests = find_test_files(paths)
    project, _ = load_project(_map_paths(paths))
    flows = compile_project(project, catalog, trace=True)
    results: list[CaseResult] = []
    errors: list[str] = []
    covered: set[rt.Line] = set()
    outcomes: dict[str, list[rt.Outcome]] = {}
    for test_file in tests:
        name = display_name(test_file)
        try:
            text = test_file.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
            node = yaml.compose(text)
        except OSError as exc:
            errors.append(f"{name}: cannot read the test file: {exc.strerror or exc}")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{name}:{mark.line + 1}" if mark is not None else name
            errors.append(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}")
            continue
        problems = sorted(_validator().iter_errors(data), key=lambda e: list(e.absolute_path))
        if problems:
            p = problems[0]
            where = ".".join(str(x) for x in p.absolute_path) or "(top)"
            errors.append(f"{name}:{_line_of(node, list(p.absolute_path))}: {where}: {p.message}")
            continue
        flow = flows.get(data["flow"])
        if flow is None:
            errors.append(f"{name}:1: no flow `{data['flow']}` in the mappings ({', '.join(sorted(flows))})")
            continue
        for i, case in enumerate(data["cases"]):
            line = _line_of(node, ["cases", i])
            outcome, result = _run_case(flow, case, name, line)
            results.append(result)
            outcomes.setdefault(flow.name, []).append(outcome)
            covered |= set(_lines_of(outcome, flow))
    uncovered, coverable, notes = _coverage(project, flows, covered, outcomes)
    return TestReport(tuple(results), uncovered, coverable, tuple(notes), tuple(errors), project.sources)


def _line_of(node: Any, path: list[Any]) -> int:
    """The 1-based line of the YAML node at ``path`` (keys and indexes), or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else 1
    for step in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _lines_of(outcome: rt.Outcome, flow: CompiledFlow) -> Iterable[rt.Line]:
    yield from outcome.lines
    if isinstance(outcome, rt.Rejected):
        yield (outcome.file, outcome.line)


# ------------------------------------------------------------------------------------------------ one case


def to_wire_input(table: TableSchema, record: Mapping[str, Any]) -> dict[str, Any]:
    """A test input (mapping field names, YAML values) as the source's wire row."""
    return {_wire_name(table, k): _wire_value(table.system, table.resolve((k,)), v) for k, v in record.items()}


def _wire_name(table: TableSchema, name: str) -> str:
    f = table.resolve((name,))
    if table.system == "d365" and f is not None and f.type == "lookup":
        return f"_{name}_value"
    return name


def _wire_value(system: str, f: Any, value: Any) -> Any:
    if isinstance(value, dict):
        fields = f.fields if f is not None else {}
        return {k: _wire_value(system, fields.get(k), v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return rt.d365_datetime(value) if system == "d365" else rt.campaign_datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _run_case(flow: CompiledFlow, case: Mapping[str, Any], file: str, line: int) -> tuple[rt.Outcome, CaseResult]:
    record = to_wire_input(flow.source, case["input"])
    outcome = flow.evaluate(record)
    expect = case["expect"]
    diffs = _compare(flow, expect, outcome)
    return outcome, CaseResult(file, line, flow.name, case["name"], not diffs, tuple(diffs))


def _describe(outcome: rt.Outcome) -> str:
    if isinstance(outcome, rt.Filtered):
        return "filtered out by where"
    if isinstance(outcome, rt.Rejected):
        return f"rejected at {outcome.field} ({outcome.location}): {outcome.reason}"
    return "mapped"


def _compare(flow: CompiledFlow, expect: Any, outcome: rt.Outcome) -> list[str]:
    if expect == "filtered":
        return [] if isinstance(outcome, rt.Filtered) else [f"expected: filtered; got: {_describe(outcome)}"]
    if isinstance(expect, dict) and "rejected" in expect:
        if not isinstance(outcome, rt.Rejected):
            return [f"expected: rejected at {expect['rejected']}; got: {_describe(outcome)}"]
        out = []
        if outcome.field != expect["rejected"]:
            out.append(f"expected: rejected at {expect['rejected']}; got: {_describe(outcome)}")
        if "reason" in expect and expect["reason"] not in outcome.reason:
            out.append(f"reason: expected to contain {expect['reason']!r}; got {outcome.reason!r}")
        return out
    if not isinstance(outcome, rt.Mapped):
        return [f"expected: mapped; got: {_describe(outcome)}"]
    actual = _actual_view(outcome)
    diffs: list[str] = []
    for path, want in _flatten(expect):
        got = _get(actual, path)
        dotted = ".".join(path)
        if isinstance(want, dict) and want.get("absent") is True:
            if got is not _MISSING:
                diffs.append(f"{dotted}: expected absent; got {_show(got)}")
            continue
        want = _expected_wire(flow, path, want)
        if got is _MISSING:
            diffs.append(f"{dotted}: expected {_show(want)}; got (not in the payload)")
        elif got != want or (type(got) is bool) != (type(want) is bool):
            diffs.append(f"{dotted}: expected {_show(want)}; got {_show(got)}")
    return diffs


def _actual_view(outcome: rt.Mapped) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(json.dumps(outcome.payload, default=str))
    for ref in outcome.refs:
        node = view
        parts = ref.target_path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = ({"link": ref.flow, "value": ref.source_value} if isinstance(ref, rt.LinkRef)
                           else {"contact": ref.external_id})
    return view


def _flatten(expect: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    for k, v in expect.items():
        path = prefix + tuple(str(k).split("."))
        if isinstance(v, dict) and v and not ({"link", "contact", "absent"} & set(v)):
            yield from _flatten(v, path)
        else:
            yield path, v


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        if not isinstance(tree, dict) or p not in tree:
            return _MISSING
        tree = tree[p]
    return tree


def _expected_wire(flow: CompiledFlow, path: tuple[str, ...], want: Any) -> Any:
    """YAML dates in an expectation, written the way the target's wire format writes them."""
    f = flow.target.resolve(path)
    if isinstance(want, dt.datetime) or (isinstance(want, dt.date) and f is not None and f.value_type is ValueType.DATETIME):
        return rt.d365_datetime(want) if flow.target.system == "d365" else rt.campaign_datetime(want)
    if isinstance(want, dt.date):
        return want.isoformat()
    return want


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------------ coverage


def _coverage(project: Project, flows: Mapping[str, CompiledFlow], covered: set[rt.Line],
              outcomes: Mapping[str, list[rt.Outcome]]) -> tuple[tuple[tuple[str, int, str], ...], int, list[str]]:
    coverable: dict[rt.Line, str] = {}
    notes: list[str] = []
    for name, flow in sorted(flows.items()):
        why = f"flow {name}" + ("" if name in outcomes else " has no test cases")
        for line in flow.lines:
            coverable.setdefault(line, why)
        ast_flow = project.flows[name]
        for rep in _replaces_used(ast_flow, project.replaces_for(flow.file)):
            for case in rep.cases:
                coverable.setdefault((rep.span.file, case.span.line), f"replace {rep.name}: no case maps this value")
            if rep.default is not None:
                coverable.setdefault((rep.span.file, rep.default.span.line), f"replace {rep.name}: no case hits else")
        seen = outcomes.get(name, [])
        if ast_flow.where is not None and seen and not any(isinstance(o, rt.Filtered) for o in seen):
            notes.append(f"flow {name}: no case is filtered out by its where ({flow.file}:{ast_flow.where.span.line})")
    for name, optout in sorted(project.optouts.items()):
        notes.append(f"optout {name} ({optout.span.file}:{optout.span.line}) is run by the executor, "
                     "not by mapping tests")
    missing = tuple(sorted((f, ln, why) for (f, ln), why in coverable.items() if (f, ln) not in covered))
    return missing, len(coverable), notes


def _replaces_used(flow: ast.Flow, replaces: Mapping[str, ast.Replace]) -> list[ast.Replace]:
    exprs = [flow.where, *(a.expr for a in flow.assignments)]
    names = {node.name for e in exprs for node in ast.walk_expr(e) if isinstance(node, ast.Call) and node.name in replaces}
    return [replaces[n] for n in sorted(names)]


# ------------------------------------------------------------------------------------------------ report


def render(report: TestReport) -> str:
    out: list[str] = []
    for err in report.errors:
        out.append(f"{err}")
    for r in report.failed:
        out.append(f"{r.file}:{r.line}: FAIL {r.name} (flow {r.flow})")
        out += [f"    {d}" for d in r.diffs]
    passed = len(report.results) - len(report.failed)
    out.append(f"{len(report.results)} cases: {passed} passed, {len(report.failed)} failed"
               + (f", {len(report.errors)} test files could not run" if report.errors else ""))
    done = report.coverable - len(report.uncovered)
    out.append(f"coverage: {done}/{report.coverable} mapping lines exercised")
    for file, line, why in report.uncovered:
        text = report.sources.get(file, "").splitlines()
        source = text[line - 1].strip() if 0 < line <= len(text) else ""
        out.append(f"  {file}:{line}: not exercised ({why}): {source}")
    out += [f"  note: {n}" for n in report.notes]
    return "\n".join(out) + "\n"
