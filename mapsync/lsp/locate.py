"""What is written where in a parsed module: every name the editor can point at, with its span.

``occurrences(module, project)`` lists flow and replacement declarations and their uses (``link(x, flow)``,
``via flow``, ``genders(code)``), function calls, imports, tables and field paths. Hover, definition,
references, rename and code actions all start from this one list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from mapsync.dsl import ast
from mapsync.dsl.functions import FUNCTIONS
from mapsync.dsl.project import Project

__all__ = ["Occurrence", "at", "occurrences"]

Kind = Literal["flow", "flow-ref", "replace", "replace-ref", "function", "import", "table",
               "source-field", "target-field", "optout-field"]


@dataclass(frozen=True, slots=True)
class Occurrence:
    kind: Kind
    name: str  # flow / replacement / function name, import path, dotted table or field path
    span: ast.Span
    node: object  # the AST node written there
    owner: ast.Flow | ast.Replace | ast.OptOut | None = None  # the declaration it is written in

    @property
    def is_declaration(self) -> bool:
        return self.kind in ("flow", "replace")


def occurrences(module: ast.Module, project: Project | None = None) -> Iterator[Occurrence]:
    replaces = project.replaces if project is not None else {}
    for decl in module.decls:
        if isinstance(decl, ast.Import):
            yield Occurrence("import", decl.path, decl.span, decl)
        elif isinstance(decl, ast.Flow):
            yield from _flow(decl, replaces)
        elif isinstance(decl, ast.Replace):
            yield Occurrence("replace", decl.name, decl.name_span, decl, decl)
            exprs = [c.result for c in decl.cases] + ([decl.default] if decl.default is not None else [])
            for e in exprs:
                yield from _expr(e, decl, replaces, fields=False)
        else:
            for ref in (decl.d365, decl.campaign):
                yield Occurrence("optout-field", f"{ref.table.dotted}.{ref.field}", ref.span, ref, decl)
            if decl.via is not None:
                yield Occurrence("flow-ref", str(decl.via.value), decl.via.span, decl.via, decl)


def _flow(flow: ast.Flow, replaces: dict[str, ast.Replace]) -> Iterator[Occurrence]:
    yield Occurrence("flow", flow.name, flow.name_span, flow, flow)
    for ref in (flow.source, flow.target):
        if ref is not None:
            yield Occurrence("table", ref.dotted, ref.span, ref, flow)
    if flow.key is not None:
        yield Occurrence("source-field", flow.key.source.dotted, flow.key.source.span, flow.key.source, flow)
        yield Occurrence("target-field", flow.key.target.dotted, flow.key.target.span, flow.key.target, flow)
    if flow.where is not None:
        yield from _expr(flow.where, flow, replaces, fields=True)
    sets = flow.on_delete.assignments if flow.on_delete is not None else ()
    for a in (*flow.assignments, *sets):
        yield Occurrence("target-field", a.target.dotted, a.target.span, a.target, flow)
        yield from _expr(a.expr, flow, replaces, fields=True)


def _expr(expr: ast.Expr, owner: ast.Flow | ast.Replace, replaces: dict[str, ast.Replace], *,
          fields: bool) -> Iterator[Occurrence]:
    flow_args: set[int] = set()  # link()'s second argument names a flow, not a field
    for node in ast.walk_expr(expr):
        if isinstance(node, ast.Call):
            if node.name in replaces:
                yield Occurrence("replace-ref", node.name, node.name_span, node, owner)
            elif node.name in FUNCTIONS:
                yield Occurrence("function", node.name, node.name_span, node, owner)
            if node.name == "link" and len(node.args) == 2 and isinstance(node.args[1], ast.Path):
                flow_args.add(id(node.args[1]))
                yield Occurrence("flow-ref", node.args[1].dotted, node.args[1].span, node.args[1], owner)
        elif isinstance(node, ast.Path) and fields and id(node) not in flow_args:
            yield Occurrence("source-field", node.dotted, node.span, node, owner)


def at(module: ast.Module, offset: int, project: Project | None = None) -> Occurrence | None:
    """The innermost occurrence whose span holds ``offset`` (its end included, where the cursor rests after typing)."""
    best: Occurrence | None = None
    for occ in occurrences(module, project):
        if occ.span.start <= offset <= occ.span.end and (
                best is None or occ.span.end - occ.span.start < best.span.end - best.span.start):
            best = occ
    return best
