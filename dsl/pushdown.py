"""Filter push-down: the part of a flow's ``where`` that Dataverse can evaluate goes into ``$filter``.

    split_filter(where, table) -> Split(odata, residual, pushed)

The promise, checked by property tests: for every record, ``server($filter) and residual(record)`` is
the same as ``where(record)`` evaluated locally. Three facts of the real service shape the rules:

- Dataverse evaluates ``$filter`` with SQL's three-valued logic: a comparison with a null column is
  *unknown*, and rows whose filter is unknown are not returned. Locally, ``x != "a"`` is true for a null
  ``x`` (see dsl/runtime.py). So negations are pushed to the atoms first (negation normal form), and an
  atom whose local truth includes null says so: ``x != 5`` becomes ``(x ne 5 or x eq null)``. A pushed
  filter never contains ``not`` over something that can be unknown.
- Dataverse compares text case-insensitively (SQL collation); the mapping compares exactly. A positive
  text test (``eq``, ``in``, ``contains``, ``startswith``, ``endswith``) on the server returns a
  superset of the exact matches, so it is pushed *and* kept in the residual. A negative or ordering text
  test would return a subset (``ne 'abc'`` drops ``'ABC'``), so it stays local only.
- Only conjuncts of top-level ``and`` are split: a conjunct is pushed whole or not at all.

Literals are written from parsed values, never from source text: strings in single quotes with ``'``
doubled, GUIDs unquoted (only canonical lower-case ones), numbers in plain decimal, dates as
``2024-01-31``, datetimes as ``2024-01-31T10:00:00Z``. No value can change the filter's structure.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from dataclasses import dataclass

from mapsync.dsl import ast
from mapsync.dsl.literals import odata_quote
from mapsync.dsl.operators import MIRRORED, NEGATED
from mapsync.dsl.schema import FieldSchema, TableSchema
from mapsync.dsl.types import ValueType

__all__ = ["Split", "odata_literal", "split_filter"]

V = ValueType
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ODATA_OPS = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
_TEXT_FUNCTIONS = ("contains", "startswith", "endswith")


@dataclass(frozen=True, slots=True)
class Split:
    """``odata``: the ``$filter`` text (None: nothing pushable). ``residual``: what must still run locally
    (None: nothing). ``pushed``: the conjuncts the ``$filter`` covers (some may also be in the residual)."""

    odata: str | None
    residual: ast.Expr | None
    pushed: tuple[ast.Expr, ...] = ()


@dataclass(frozen=True, slots=True)
class _Out:
    text: str
    exact: bool  # False: the server's answer is a superset (case-insensitive text)


def split_filter(where: ast.Expr | None, table: TableSchema) -> Split:
    """Split a flow's ``where`` for a Dataverse source table."""
    if where is None:
        return Split(None, None)
    pushed_text: list[str] = []
    pushed: list[ast.Expr] = []
    residual: list[ast.Expr] = []
    for conjunct in _conjuncts(where):
        out = _Translator(table).tr(conjunct, negated=False)
        if out is None:
            residual.append(conjunct)
            continue
        pushed_text.append(out.text)
        pushed.append(conjunct)
        if not out.exact:
            residual.append(conjunct)
    odata = " and ".join(pushed_text) if pushed_text else None
    return Split(odata, _and_all(residual), tuple(pushed))


def _conjuncts(e: ast.Expr) -> list[ast.Expr]:
    if isinstance(e, ast.Binary) and e.op == "and":
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


def _and_all(parts: list[ast.Expr]) -> ast.Expr | None:
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = ast.Binary(span=out.span, op="and", left=out, right=part)
    return out


def odata_literal(f: FieldSchema, lit: ast.Literal) -> str | None:
    """A mapping literal as an OData literal for a comparison with field ``f``; None when it cannot be."""
    v, vt = lit.value, f.value_type
    if v is None:
        return "null"
    if vt in (V.NUMBER, V.CHOICE):
        if type(v) is int:
            return str(v)
        if type(v) is float:
            return format(decimal.Decimal(repr(v)), "f")
        return None
    if vt is V.BOOLEAN:
        return ("true" if v else "false") if type(v) is bool else None
    if vt is V.TEXT:
        return odata_quote(v) if type(v) is str else None
    if vt in (V.GUID, V.REFERENCE):
        # Only canonical lower-case GUIDs: Dataverse sends ids that way, so the local comparison agrees.
        return v if type(v) is str and _GUID.fullmatch(v) else None
    if vt is V.DATE:
        return v.isoformat() if type(v) is dt.date else None
    if vt is V.DATETIME:
        if type(v) is not dt.datetime or v.tzinfo is None or v.microsecond:
            return None
        u = v.astimezone(dt.UTC)
        return f"{u:%Y-%m-%dT%H:%M:%S}Z"
    return None


class _Translator:
    def __init__(self, table: TableSchema) -> None:
        self.table = table

    def column(self, e: ast.Expr) -> tuple[str, FieldSchema] | None:
        if not isinstance(e, ast.Path) or len(e.parts) != 1:
            return None
        f = self.table.resolve(e.parts)
        if f is None or f.value_type in (V.LIST, V.RECORD, V.ANY):
            return None
        name = f"_{f.name}_value" if f.type == "lookup" else f.name
        return name, f

    def tr(self, e: ast.Expr, negated: bool) -> _Out | None:
        if isinstance(e, ast.Unary) and e.op == "not":
            return self.tr(e.operand, not negated)
        if isinstance(e, ast.Binary) and e.op in ("and", "or"):
            op = e.op if not negated else ("or" if e.op == "and" else "and")
            left, right = self.tr(e.left, negated), self.tr(e.right, negated)
            if left is None or right is None:
                return None
            return _Out(f"({left.text} {op} {right.text})", left.exact and right.exact)
        if isinstance(e, ast.Binary) and e.op in _ODATA_OPS:
            return self.compare(e.op, e.left, e.right, negated)
        if isinstance(e, ast.IsNull):
            col = self.column(e.operand)
            if col is None:
                return None
            is_null = e.negated == negated  # "is null" un-negated, or "is not null" negated
            return _Out(f"{col[0]} {'eq' if is_null else 'ne'} null", True)
        if isinstance(e, ast.InList):
            return self.in_list(e, negated)
        if isinstance(e, ast.Call) and e.name in _TEXT_FUNCTIONS:
            return self.text_function(e, negated)
        if isinstance(e, ast.Path):
            col = self.column(e)
            if col is None or col[1].value_type is not V.BOOLEAN:
                return None
            name = col[0]
            # Locally a null counts as false, so "not b" is true for null as well.
            return _Out(f"({name} eq false or {name} eq null)" if negated else f"{name} eq true", True)
        return None

    def compare(self, op: str, left: ast.Expr, right: ast.Expr, negated: bool) -> _Out | None:
        if isinstance(left, ast.Literal) and isinstance(right, ast.Path):
            left, right, op = right, left, MIRRORED[op]
        col = self.column(left)
        if col is None or not isinstance(right, ast.Literal):
            return None
        name, f = col
        lit = odata_literal(f, right)
        if lit is None:
            return None
        if negated:
            op = NEGATED[op]
        text = f.value_type is V.TEXT
        if lit == "null":
            if op in ("==", "!="):
                return _Out(f"{name} {_ODATA_OPS[op]} null", True)
            return None  # an ordering with null is never true locally; nothing worth sending
        if op == "==":
            return _Out(f"{name} eq {lit}", not text)
        if text:
            return None  # ne / ordering on text: the server's collation would drop matching rows
        if op == "!=" or negated:
            # The local truth includes null here ("x != 5" or "not (x < 5)"): say so explicitly.
            return _Out(f"({name} {_ODATA_OPS[op]} {lit} or {name} eq null)", True)
        return _Out(f"{name} {_ODATA_OPS[op]} {lit}", True)

    def in_list(self, e: ast.InList, negated: bool) -> _Out | None:
        if not e.items:
            return None
        negated = negated != e.negated
        parts = [self.compare("==", e.operand, item, negated) for item in e.items]
        if any(p is None for p in parts):
            return None
        done = [p for p in parts if p is not None]
        if len(done) == 1:
            return done[0]
        joiner = " and " if negated else " or "
        return _Out("(" + joiner.join(p.text for p in done) + ")", all(p.exact for p in done))

    def text_function(self, e: ast.Call, negated: bool) -> _Out | None:
        if negated or len(e.args) != 2:
            return None
        col = self.column(e.args[0])
        needle = e.args[1]
        if col is None or col[1].value_type is not V.TEXT or not isinstance(needle, ast.Literal):
            return None
        if type(needle.value) is not str:
            return None
        lit = odata_literal(col[1], needle)
        return _Out(f"{e.name}({col[0]},{lit})", False)
