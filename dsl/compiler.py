"""The compiler: a checked flow becomes plain Python source, compiled once with ``compile()``.

    compile_flow(flow, replaces=..., source=..., target=..., file=..., version="") -> CompiledFlow
    compile_project(project, catalog) -> CompiledProject               (cached by the project's hash)

Each flow becomes one small module with one function per concern:

    filter_full(r)       the whole ``where`` (incremental runs, tests)
    filter_residual(r)   what stays local once the OData part is pushed into ``$filter`` (full runs)
    transform(r)         the ``map`` block: source wire row -> target payload, or a rejection

The generated code reads like the mapping (one commented block per mapping line) and is fast: simple
text functions are inlined (``x.strip().lower()``), nulls are guarded with one test per chain, the
payload is one dict display. No user string is ever evaluated: literals are emitted with ``repr()``
of their parsed values, names are emitted only after they are checked against the schema, and
function implementations are bound into the module's namespace, not looked up by name at run time.

A record's failure never escapes: every generated function catches the data errors of its body and
turns them into a ``Rejected`` naming the mapping line, found from the traceback's line number in the
generated source (no per-line bookkeeping on the hot path).

``mapsync compile FLOW`` prints ``CompiledFlow.python_source`` and the pushed-down filter.
"""

from __future__ import annotations

import ast as pyast
import datetime as dt
import decimal
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mapsync.dsl import ast
from mapsync.dsl import runtime as rt
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.errors import CheckError, CompileError
from mapsync.dsl.formatter import format_expr
from mapsync.dsl.functions import FUNCTIONS, FunctionError
from mapsync.dsl.plan import CompiledProject, optout_rule, run_order
from mapsync.dsl.pushdown import split_filter
from mapsync.dsl.schema import FieldSchema, TableSchema
from mapsync.dsl.types import ValueType

if TYPE_CHECKING:
    from mapsync.dsl.project import Project
    from mapsync.dsl.schema import Catalog

__all__ = ["CompiledFlow", "FilterError", "compile_flow", "compile_project", "expr_text"]

V = ValueType

# Errors a record's data can cause inside generated code. Anything else is a bug and propagates.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    rt.RecordError, FunctionError, TypeError, ValueError, AttributeError, ArithmeticError, KeyError,
    IndexError,
)

# Functions inlined as string methods: same result as the library's impl for text input (a test
# checks this), and non-null for non-null input, so a chain needs only one null test.
_INLINE_SUFFIX: dict[str, str] = {"lower": ".lower()", "upper": ".upper()", "trim": ".strip()"}

_DEFAULT_MODE = "upsert"


class FilterError(rt.RecordError):
    """``matches``/``residual`` met data the filter cannot evaluate; ``rejected`` says where and why."""

    def __init__(self, rejected: rt.Rejected) -> None:
        super().__init__(str(rejected))
        self.rejected = rejected


# ---------------------------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class OnDeletePolicy:
    action: str  # ignore | delete | set
    values: Mapping[str, Any] = field(default_factory=dict)  # set(...): target payload (wire format)


@dataclass(frozen=True, eq=False)
class CompiledFlow:
    """A flow ready to run. ``evaluate`` is the executor's entry point; the parts are public for tools."""

    name: str
    file: str
    version: str
    source: TableSchema
    target: TableSchema
    key_source: str
    key_target: str
    mode: str
    on_delete: OnDeletePolicy
    on_filtered: str
    batch: int | None
    max_deletes: ast.MaxDeletes | None
    select: tuple[str, ...]
    pushdown: str | None
    residual_text: str | None
    python_source: str
    lines: frozenset[rt.Line]
    # transform(record) -> Mapped | Rejected: the ``map`` block on a source wire row (no filter). The
    # generated function itself, not a method around it: one Python frame less per record.
    transform: Callable[[Mapping[str, Any]], rt.Mapped | rt.Rejected] = field(repr=False)
    _filter_full: Callable[[Mapping[str, Any]], Any] = field(repr=False)
    _filter_residual: Callable[[Mapping[str, Any]], Any] = field(repr=False)
    _target_lines: Mapping[str, int] = field(repr=False)
    where_line: int | None = None
    line: int | None = None  # the `flow` header: where a dead letter of a failed write points

    def matches(self, record: Mapping[str, Any]) -> bool:
        """The whole ``where`` on a source wire row. Raises ``FilterError`` when the data cannot be compared."""
        result = self._filter_full(record)
        if isinstance(result, rt.Rejected):
            raise FilterError(result)
        return bool(result)

    def residual(self, record: Mapping[str, Any]) -> bool:
        """The part of ``where`` that ``pushdown`` does not cover (all of it for non-Dataverse sources)."""
        result = self._filter_residual(record)
        if isinstance(result, rt.Rejected):
            raise FilterError(result)
        return bool(result)

    def evaluate(self, record: Mapping[str, Any], *, pushed: bool = False) -> rt.Outcome:
        """Filter then transform. ``pushed=True`` when the source already applied ``pushdown``."""
        result = (self._filter_residual if pushed else self._filter_full)(record)
        if isinstance(result, rt.Rejected):
            return result
        if not result:
            key = _key_text(record.get(self.key_source_wire))
            return rt.Filtered(self.name, key, frozenset({(self.file, self.where_line)}) if self.where_line else frozenset())
        return self.transform(record)

    @property
    def key_source_wire(self) -> str:
        return self.select[0]

    @property
    def target_fields(self) -> tuple[str, ...]:
        """The target fields the ``map`` block assigns (dotted for nested paths), in mapping order."""
        return tuple(self._target_lines)

    def line_of(self, target_field: str) -> int | None:
        """The mapping line that assigns ``target_field`` (dotted for nested paths)."""
        return self._target_lines.get(target_field)


def _key_text(value: Any) -> str:
    return value if type(value) is str else ("" if value is None else str(value))


# ---------------------------------------------------------------------------------------------- expressions


def expr_text(e: ast.Expr) -> str:
    """A mapping expression written back as mapping text (for comments, messages and `mapsync compile`):
    the formatter's printer, so precedence and escaping are the language's own."""
    return format_expr(e)


@dataclass(frozen=True, slots=True)
class _E:
    """An emitted expression. ``guard``: the value is ``None if <cond> is None else <inner>``."""

    py: str
    nullable: bool
    vt: ValueType
    atom: bool = False  # a local name or a literal: free to repeat
    guard: tuple[str, str, str] | None = None  # (condition expression, guarded name, inner expression)
    max_len: int | None = None  # provable upper bound of a text value's length
    values: frozenset[Any] | None = None  # the finite set of non-null values it can take, when known
    raw: str | None = None  # a source date read: the local holding the wire value before conversion


def _lit(py: str, vt: ValueType, *, nullable: bool = False, max_len: int | None = None) -> _E:
    return _E(py, nullable, vt, atom=True, max_len=max_len)


_IDENT = re.compile(r"[^0-9A-Za-z_]")


def _ident(text: str) -> str:
    name = _IDENT.sub("_", text)
    return name + "_" if keyword.iskeyword(name) else name


class _FlowCompiler:
    """Emits the module of one flow. One instance per flow; not reused."""

    def __init__(self, flow: ast.Flow, replaces: Mapping[str, ast.Replace], source: TableSchema,
                 target: TableSchema, file: str, version: str, trace: bool) -> None:
        self.flow = flow
        self.replaces = replaces
        self.source = source
        self.target = target
        self.file = file
        self.version = version
        self.trace = trace
        self.temp = 0
        self.reads: dict[tuple[str, ...], str] = {}  # source path -> local name, per function
        self.read_order: list[tuple[str, ...]] = []
        self.all_reads: dict[str, None] = {}  # top-level wire columns, in first-use order
        self.constants: dict[str, str] = {}  # module-level name -> its definition
        self.namespace: dict[str, Any] = {}
        self.lines: list[str] = []
        self.owners: dict[int, tuple[str, int]] = {}  # generated line -> (target field, mapping line)

    # ---- errors

    def fail(self, message: str, span: ast.Span) -> CompileError:
        return CompileError(message, [Diagnostic.error("E201", message, span)])

    # ---- source reads

    def wire_name(self, parts: tuple[str, ...], span: ast.Span) -> tuple[str, FieldSchema]:
        f = self.source.resolve(parts)
        if f is None:
            raise self.fail(f"unknown field `{'.'.join(parts)}` of {self.source.dotted}", span)
        top = parts[0]
        if self.source.system == "d365" and f.type == "lookup" and len(parts) == 1:
            top = f"_{top}_value"  # Dataverse sends a lookup's id as _<name>_value
        return top, f

    def read(self, p: ast.Path) -> _E:
        wire, f = self.wire_name(p.parts, p.span)
        self.all_reads.setdefault(wire, None)
        name = self.reads.get(p.parts)
        if name is None:
            name = "s_" + _ident("_".join((wire, *p.parts[1:])))
            while name in self.reads.values():
                name += "_"
            self.reads[p.parts] = name
            self.read_order.append(p.parts)
        vt = f.value_type
        if vt is V.DATE:
            e = self.call_helper("read_date", rt.read_date, [_E(name, True, V.ANY, atom=True)], V.DATE)
            return _E(e.py, True, V.DATE, raw=name)
        if vt is V.DATETIME:
            return self.call_helper("read_datetime", rt.read_datetime, [_E(name, True, V.ANY, atom=True)], V.DATETIME)
        return _E(name, True, vt, atom=True, max_len=None)

    def read_statements(self, indent: str) -> list[str]:
        out = []
        for parts in self.read_order:
            wire, _ = self.wire_name(parts, ast.Span.unknown(self.file))
            code = f"r.get({wire!r})"
            for part in parts[1:]:
                code = f"({code} or _EMPTY).get({part!r})"
                self.namespace["_EMPTY"] = _EMPTY
            out.append(f"{indent}{self.reads[parts]} = {code}")
        return out

    # ---- helpers

    def new_temp(self) -> str:
        self.temp += 1
        return f"t{self.temp}"

    def bind(self, name: str, value: Any) -> str:
        self.namespace[name] = value
        return name

    def call_helper(self, name: str, fn: Callable[..., Any], args: list[_E], vt: ValueType) -> _E:
        self.bind("_" + name, fn)
        nullable = any(a.nullable for a in args)
        return _E(f"_{name}({', '.join(a.py for a in args)})", nullable, vt)

    def materialize(self, e: _E) -> tuple[str, str]:
        """(first use, later uses) of an expression: a walrus temp unless it is an atom."""
        if e.atom:
            return e.py, e.py
        t = self.new_temp()
        return f"({t} := {e.py})", t

    def guarded(self, e: _E) -> tuple[str, str, str]:
        """Split a nullable expression into (condition, name, inner) for ``None if cond is None else ...``."""
        if e.guard is not None:
            return e.guard
        first, later = self.materialize(e)
        return first, later, later

    # ---- expressions

    def emit(self, e: ast.Expr, boolean: bool = False) -> _E:
        if isinstance(e, ast.Literal):
            return self.literal(e)
        if isinstance(e, ast.Path):
            return self.read(e)
        if isinstance(e, ast.Call):
            return self.call(e)
        if isinstance(e, ast.Unary):
            if e.op == "not":
                inner = self.emit(e.operand, boolean=True)
                return _E(f"(not {inner.py})", False, V.BOOLEAN)
            inner = self.emit(e.operand)
            if not inner.nullable:
                return _E(f"(-{inner.py})", False, inner.vt)
            cond, _, inner_py = self.guarded(inner)
            return _E(f"(None if {cond} is None else -{inner_py})", True, inner.vt)
        if isinstance(e, ast.IsNull):
            inner = self.emit(e.operand)
            return _E(f"({inner.py} is {'not ' if e.negated else ''}None)", False, V.BOOLEAN)
        if isinstance(e, ast.InList):
            return self.in_list(e)
        if not isinstance(e, ast.Binary):  # a tree the parser never builds (an API caller's, or a new node)
            raise CompileError(f"{self.file}:{e.span.line}: cannot compile an expression of type {type(e).__name__}")
        return self.binary(e, boolean)

    def literal(self, lit: ast.Literal) -> _E:
        v = lit.value
        if lit.kind == "null":
            return _lit("None", V.NULL, nullable=True)
        if lit.kind == "text":
            assert isinstance(v, str)
            return _E(repr(v), False, V.TEXT, atom=True, max_len=len(v), values=frozenset({v}))
        if lit.kind == "bool":
            return _lit(repr(v), V.BOOLEAN)
        if lit.kind in ("int", "number"):
            return _lit(repr(v), V.NUMBER)
        if isinstance(v, dt.datetime | dt.date):
            # A module constant: repr() of the parsed value, evaluated once when the module is loaded.
            name = f"_{lit.kind.upper()}_{_ident(v.isoformat())}"
            self.constants[name] = repr(v)
            self.namespace["datetime"] = dt
            return _lit(name, V.DATETIME if lit.kind == "datetime" else V.DATE)
        raise self.fail(f"cannot compile the literal {v!r}", lit.span)

    def in_list(self, e: ast.InList) -> _E:
        operand = self.emit(e.operand)
        items = [self.emit(i) for i in e.items]
        tup = "(" + ", ".join(i.py for i in items) + ("," if len(items) == 1 else "") + ")"
        return _E(f"({operand.py} {'not in' if e.negated else 'in'} {tup})", False, V.BOOLEAN)

    def binary(self, e: ast.Binary, boolean: bool) -> _E:
        op = e.op
        if op in ("and", "or"):
            left, right = self.emit(e.left, True), self.emit(e.right, True)
            code = f"({left.py} {op} {right.py})"
            # In a boolean position Python's truthiness is the language's (null counts as false), and the
            # operands' own values may come back: fine for `if`/`where`, wrapped in bool() for a value.
            return _E(code, True, V.BOOLEAN) if boolean else _E(f"bool{code}", False, V.BOOLEAN)
        if op == "&":
            parts = self.concat_parts(e)
            max_len = None
            if all(p.max_len is not None for p in parts):
                max_len = sum(p.max_len or 0 for p in parts)
            return _E("(" + " + ".join(self.as_text(p) for p in parts) + ")", False, V.TEXT, max_len=max_len)
        if op == "??":
            left, right = self.emit(e.left), self.emit(e.right)
            if not left.nullable:
                return left
            first, later = self.materialize(left)
            return _E(f"({later} if {first} is not None else {right.py})", right.nullable, left.vt if left.vt is not V.NULL else right.vt)
        left, right = self.emit(e.left), self.emit(e.right)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return self.compare(op, left, right)
        return self.arith(op, left, right)

    def concat_parts(self, e: ast.Expr) -> list[_E]:
        if isinstance(e, ast.Binary) and e.op == "&":
            return self.concat_parts(e.left) + self.concat_parts(e.right)
        return [self.emit(e)]

    def as_text(self, p: _E) -> str:
        if not p.nullable and p.vt is V.TEXT:
            return p.py
        if p.vt in (V.TEXT, V.GUID):
            return f"({p.py} or '')"
        if p.vt is V.NULL:
            return "''"
        self.bind("_text_of", rt.text_of)
        return f"_text_of({p.py})"

    def coerce_dates(self, left: _E, right: _E) -> tuple[_E, _E]:
        # A date meets a datetime as its midnight UTC (dsl.types widening): Python would refuse to order them.
        if {left.vt, right.vt} == {V.DATE, V.DATETIME}:
            conv = FUNCTIONS["datetime"].impl
            assert conv is not None
            if left.vt is V.DATE:
                left = self.call_helper("as_datetime", conv, [left], V.DATETIME)
            else:
                right = self.call_helper("as_datetime", conv, [right], V.DATETIME)
        return left, right

    def compare(self, op: str, left: _E, right: _E) -> _E:
        left, right = self.coerce_dates(left, right)
        if op in ("==", "!="):
            return _E(f"({left.py} {op} {right.py})", False, V.BOOLEAN)
        checks = []
        lfirst, llater = self.materialize(left) if left.nullable else (left.py, left.py)
        rfirst, rlater = self.materialize(right) if right.nullable else (right.py, right.py)
        if left.nullable:
            checks.append(f"{lfirst} is not None")
        if right.nullable:
            checks.append(f"{rfirst} is not None")
        lhs = llater if left.nullable else lfirst
        rhs = rlater if right.nullable else rfirst
        checks.append(f"{lhs} {op} {rhs}")
        return _E("(" + " and ".join(checks) + ")", False, V.BOOLEAN)

    def arith(self, op: str, left: _E, right: _E) -> _E:
        vt = left.vt if left.vt in (V.DATE, V.DATETIME) else (right.vt if op == "+" and right.vt in (V.DATE, V.DATETIME) else V.NUMBER)
        if left.vt in (V.DATE, V.DATETIME) and right.vt in (V.DATE, V.DATETIME) and op == "-":
            vt = V.DURATION if hasattr(V, "DURATION") else V.ANY
        if not left.nullable and not right.nullable:
            return _E(f"({left.py} {op} {right.py})", False, vt)
        checks = []
        lfirst, llater = self.materialize(left) if left.nullable else (left.py, left.py)
        rfirst, rlater = self.materialize(right) if right.nullable else (right.py, right.py)
        if left.nullable:
            checks.append(f"{lfirst} is None")
        if right.nullable:
            checks.append(f"{rfirst} is None")
        return _E(f"(None if {' or '.join(checks)} else {llater} {op} {rlater})", True, vt)

    def call(self, c: ast.Call) -> _E:
        if c.name in self.replaces:
            return self.replacement(c, self.replaces[c.name])
        spec = FUNCTIONS.get(c.name)
        if spec is None:
            raise self.fail(f"unknown function or replacement `{c.name}`", c.name_span)
        n = len(c.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            raise self.fail(f"{c.name}() takes {spec.min_args}..{spec.max_args} arguments, got {n}", c.span)
        if c.name == "label":
            return self.label(c)
        if c.name in ("link", "contact"):
            raise self.fail(f"{c.name}() must be the whole value of a map line", c.span)
        if c.name == "if":
            cond = self.emit(c.args[0], boolean=True)
            a, b = self.emit(c.args[1]), self.emit(c.args[2])
            return _E(f"({a.py} if {cond.py} else {b.py})", a.nullable or b.nullable, a.vt if a.vt is not V.NULL else b.vt)
        args = [self.emit(a) for a in c.args]
        if c.name in _INLINE_SUFFIX and args[0].vt in (V.TEXT, V.GUID):
            return self.inline(args[0], _INLINE_SUFFIX[c.name], args[0].max_len if c.name == "trim" else None)
        if (c.name == "truncate" and args[0].vt in (V.TEXT, V.GUID) and isinstance(c.args[1], ast.Literal)
                and type(c.args[1].value) is int and c.args[1].value >= 0):
            n_chars = c.args[1].value
            bound = n_chars if args[0].max_len is None else min(n_chars, args[0].max_len)
            return self.inline(args[0], f"[:{n_chars}]", bound)
        impl = spec.impl
        if impl is None:  # `link()` and the like only mean something where the checker allows them
            raise CompileError(f"{self.file}:{c.span.line}: `{c.name}()` cannot be used here")
        name = self.bind("f_" + _ident(c.name), impl)
        result = spec.result_type([a.vt for a in args])
        if spec.null_propagating:
            nullable = any(a.nullable for a in args) or result in (V.ANY,)
        elif c.name in ("concat", "now"):
            nullable = False
        else:
            nullable = all(a.nullable for a in args) if c.name == "coalesce" else True
        return _E(f"{name}({', '.join(a.py for a in args)})", nullable, result)

    def inline(self, arg: _E, suffix: str, max_len: int | None) -> _E:
        if not arg.nullable:
            return _E(f"{arg.py}{suffix}", False, V.TEXT, max_len=max_len)
        cond, name, inner = self.guarded(arg)
        inner = f"{inner}{suffix}"
        return _E(f"(None if {cond} is None else {inner})", True, V.TEXT, guard=(cond, name, inner), max_len=max_len)

    def label(self, c: ast.Call) -> _E:
        arg = c.args[0]
        if not isinstance(arg, ast.Path):
            raise self.fail("label() needs a choice field of the source, not an expression", arg.span)
        _, f = self.wire_name(arg.parts, arg.span)
        if not f.options:
            raise self.fail(f"label() needs an option-set field; `{arg.dotted}` has no options", arg.span)
        value = self.emit(arg)
        name = "_LABELS_" + _ident(arg.dotted)
        cases = {v: label for v, label in f.options}
        if f.value_type is V.LIST:
            self.bind("_label_of", rt.label_of)
            self.constants[name] = repr(cases)
            return _E(f"_label_of({name}, {arg.dotted!r}, {value.py})", True, V.LIST)
        self.constants[name] = f"_ReplaceMap({arg.dotted!r}, {cases!r}, 'label')"
        self.bind("_ReplaceMap", rt.ReplaceMap)
        cond, _, inner = self.guarded(value)
        return _E(f"(None if {cond} is None else {name}[{inner}])", True, V.TEXT,
                  max_len=max(len(label) for _, label in f.options))

    def replacement(self, c: ast.Call, rep: ast.Replace) -> _E:
        if len(c.args) != 1:
            raise self.fail(f"replacement `{rep.name}` takes one value, got {len(c.args)}", c.span)
        value = self.emit(c.args[0])
        cases: dict[Any, Any] = {}
        lines: dict[Any, int] = {}
        for case in rep.cases:
            cases[case.match.value] = _literal_value(case.result, rep.name)
            lines.setdefault(case.match.value, case.span.line)
        has_else = rep.default is not None
        default = _literal_value(rep.default, rep.name) if rep.default is not None else None
        results = [*cases.values(), *([default] if has_else else [])]
        vt = _common_literal_type(results)
        max_len = max((len(r) for r in results if isinstance(r, str)), default=0) if vt is V.TEXT else None
        name = "_REPLACE_" + _ident(rep.name)
        if self.trace:
            self.bind("_traced", _traced_replace)
            self.constants[name] = repr(cases)
            else_line = rep.default.span.line if rep.default is not None else None
            self.constants[name + "_LINES"] = repr({k: (rep.span.file, line) for k, line in lines.items()})
            call = (f"_traced({rep.name!r}, {name}, {name}_LINES, {has_else!r}, {default!r}, "
                    f"{(rep.span.file, else_line)!r}, hits, {value.py})")
            return _E(call, True, vt, max_len=max_len)
        if has_else:
            self.constants[name] = repr(cases)
            lookup = f"{name}.get({{}}, {default!r})"
        else:
            self.constants[name] = f"_ReplaceMap({rep.name!r}, {cases!r})"
            self.bind("_ReplaceMap", rt.ReplaceMap)
            lookup = f"{name}[{{}}]"
        possible = frozenset(r for r in results if r is not None)
        if None in cases or not value.nullable:
            return _E(lookup.format(value.py), True, vt, max_len=max_len, values=possible)
        cond, _, inner = self.guarded(value)
        return _E(f"(None if {cond} is None else {lookup.format(inner)})", True, vt, max_len=max_len, values=possible)

    # ---- functions of the module

    def emit_filter(self, name: str, where: ast.Expr | None, doc: str) -> None:
        self.reads, self.read_order, self.temp = {}, [], 0
        if where is None:
            self.lines += [f"def {name}(r):", f'    {doc!r}', "    return True", "", ""]
            return
        value = self.emit(where, boolean=True)
        start = len(self.lines)
        self.lines += [f"def {name}(r):", f'    {doc!r}', "    try:"]
        self.lines += self.read_statements("        ")
        always_bool = value.vt is V.BOOLEAN and not value.nullable
        self.lines.append(f"        return {_unwrap(value.py)}" if always_bool else f"        return bool({_unwrap(value.py)})")
        self.lines += ["    except _DATA_ERRORS as exc:", "        return _reject_at(exc, r)", "", ""]
        for i in range(start, len(self.lines)):
            self.owners[i + 1] = ("where", where.span.line)

    def emit_transform(self) -> dict[str, int]:
        flow = self.flow
        self.reads, self.read_order, self.temp = {}, [], 0
        key = flow.key
        assert key is not None  # compile_flow refuses a flow without a key before emitting
        key_wire, _ = self.wire_name(key.source.parts, key.source.span)
        self.all_reads.setdefault(key_wire, None)
        body: list[str] = []
        owners: dict[int, tuple[str, int]] = {}  # index into body -> owner
        payload: list[tuple[tuple[str, ...], str | None]] = [(key.target.parts, "key")]  # None: filled in later
        after: list[str] = []  # keep fields and references, after the payload display
        target_lines: dict[str, int] = {key.target.dotted: key.span.line}
        keep: list[str] = []
        once: list[str] = []
        refs = False
        for i, a in enumerate(flow.assignments, start=1):
            dotted = a.target.dotted
            line = a.span.line
            target_lines[dotted] = line
            owner = (dotted, line)
            tf = self.target.resolve(a.target.parts)
            if tf is None:
                raise self.fail(f"unknown target field `{dotted}` of {self.target.dotted}", a.target.span)
            var = f"v{i}"
            start = len(body)
            body.append("        # " + _comment(f"{self.file}:{line}  {dotted} = {expr_text(a.expr)}"
                                             + (f"  {a.modifier}" if a.modifier else "")))
            if a.modifier == "keep":
                keep.append(dotted)
            elif a.modifier == "once":
                once.append(dotted)
            if isinstance(a.expr, ast.Call) and a.expr.name in ("link", "contact") and a.expr.name not in self.replaces:
                refs = True
                body += self.emit_ref(a, var, dotted, line)
                for j in range(start, len(body)):
                    owners[j] = owner
                payload.append((a.target.parts, None))
                if a.modifier is None or a.modifier == "once":
                    after.append(f"        if {var} is None:")
                    after.append(f"            {self.payload_ref(a.target.parts)} = None")
                continue
            value = self.emit(a.expr)
            converted = self.convert(tf, value)
            if a.modifier == "required" and converted.guard is not None:
                # One null test: reject on the guarded input, then compute without a second test.
                cond, _, inner = converted.guard
                body.append(f"        if {cond} is None:")
                body.append(f"            return _reject(r, {dotted!r}, {line}, {'required value is null: ' + expr_text(a.expr)!r})")
                body.append(f"        {var} = {inner}")
                value = converted = _E(var, False, value.vt, atom=True, max_len=value.max_len, values=value.values)
            else:
                body.append(f"        {var} = {converted.py}")
            body += self.checks(a, value, tf, var, dotted, line)
            conv = self.to_wire(tf, value) if converted is value else None
            if conv:
                body.append(f"        {var} = {conv.format(var)}")
            for j in range(start, len(body)):
                owners[j] = owner
            if a.modifier == "keep" and value.nullable:
                payload.append((a.target.parts, None))
                after.append(f"        if {var} is not None:")
                after.append(f"            {self.payload_ref(a.target.parts)} = {var}")
            else:
                payload.append((a.target.parts, var))
        lines = ["def transform(r):", f"    {'flow ' + flow.name + ': ' + self.source.dotted + ' -> ' + self.target.dotted!r}",
                 "    try:"]
        lines += self.read_statements("        ")
        lines.append(f"        key = r.get({key_wire!r})")
        lines.append("        if key is None:")
        lines.append(f"            return _reject(r, {key.target.dotted!r}, {key.span.line}, {'the record has no key (' + key_wire + ')'!r})")
        lines.append("        if type(key) is not str:")
        lines.append("            key = str(key)")
        if self.trace:
            lines.append("        hits = []")
        if refs:
            lines.append("        refs = []")
        base = len(lines)
        lines += body
        lines.append("        out = " + self.payload_display(payload))
        lines += after
        lines_expr = "_LINES | frozenset(hits)" if self.trace else "_LINES"
        # tuple.__new__ directly: a NamedTuple's own __new__ is a Python function, one frame per record.
        lines.append(f"        return _new(_Mapped, (_FLOW, key, out, {'tuple(refs)' if refs else '()'}, _KEEP, _ONCE, {lines_expr}))")
        lines += ["    except _DATA_ERRORS as exc:", "        return _reject_at(exc, r)", "", ""]
        offset = len(self.lines)
        for j, owner in owners.items():
            self.owners[offset + base + j + 1] = owner
        self.lines += lines
        self.constants["_KEEP"] = f"frozenset({sorted(keep)!r})" if keep else "frozenset()"
        self.constants["_ONCE"] = f"frozenset({sorted(once)!r})" if once else "frozenset()"
        self.target_lines = target_lines
        return target_lines

    def emit_ref(self, a: ast.Assignment, var: str, dotted: str, line: int) -> list[str]:
        call = a.expr
        assert isinstance(call, ast.Call)
        out: list[str] = []
        if call.name == "link":
            if len(call.args) != 2 or not isinstance(call.args[1], ast.Path) or len(call.args[1].parts) != 1:
                raise self.fail("link(field, flow) takes a source lookup and a flow name", call.span)
            value = self.emit(call.args[0])
            flow_name = call.args[1].parts[0]
            make = f"_LinkRef({dotted!r}, {flow_name!r}, {var}, {line})"
            self.bind("_LinkRef", rt.LinkRef)
        else:
            if len(call.args) != 1:
                raise self.fail("contact(key) takes one value", call.span)
            value = self.emit(call.args[0])
            make = f"_ContactRef({dotted!r}, {var}, {line})"
            self.bind("_ContactRef", rt.ContactRef)
        out.append(f"        {var} = {value.py}")
        if value.vt not in (V.TEXT, V.GUID, V.REFERENCE):
            out.append(f"        {var} = None if {var} is None else str({var})")
        if a.modifier == "required":
            out.append(f"        if {var} is None:")
            out.append(f"            return _reject(r, {dotted!r}, {line}, {'required value is null: ' + expr_text(call.args[0])!r})")
            out.append(f"        refs.append({make})")
        else:
            out.append(f"        if {var} is not None:")
            out.append(f"            refs.append({make})")
        return out

    def checks(self, a: ast.Assignment, value: _E, tf: FieldSchema, var: str, dotted: str, line: int) -> list[str]:
        out: list[str] = []
        if a.modifier == "required" and value.nullable:
            out.append(f"        if {var} is None:")
            out.append(f"            return _reject(r, {dotted!r}, {line}, {'required value is null: ' + expr_text(a.expr)!r})")
        guard = f"{var} is not None and " if value.nullable and a.modifier != "required" else ""
        limit = tf.max_length
        if limit is not None and tf.value_type is V.TEXT and (value.max_len is None or value.max_len > limit):
            out.append(f"        if {guard}len({var}) > {limit}:")
            out.append(f"            return _too_long(r, {dotted!r}, {line}, {var}, {limit})")
        if tf.values and (value.values is None or not value.values <= set(tf.values)):
            name = "_VALUES_" + _ident(dotted)
            self.constants[name] = f"frozenset({sorted(tf.values)!r})"
            out.append(f"        if {guard}{var} not in {name}:")
            out.append(f"            return _not_allowed(r, {dotted!r}, {line}, {var}, {name})")
        return out

    def to_wire(self, tf: FieldSchema, value: _E) -> str | None:
        system = self.target.system
        if tf.value_type is V.DATETIME:
            fn = rt.d365_datetime if system == "d365" else rt.campaign_datetime
            return f"{self.bind('_' + fn.__name__, fn)}({{}})"
        if tf.value_type is V.DATE:
            return f"{self.bind('_date_out', rt.d365_date)}({{}})"
        return None

    def convert(self, tf: FieldSchema, value: _E) -> _E:
        """A source date copied to a date field needs one check-and-rewrite, not a parse and a format."""
        if tf.value_type is V.DATE and value.raw is not None:
            # Inline fast path for the usual YYYY-MM-DD (parsed, so a bad date still rejects the record);
            # anything else (a datetime text, odd forms) goes through the library.
            self.bind("_date_wire", rt.date_wire)
            self.bind("_fromiso", dt.date.fromisoformat)
            x = value.raw
            return _E(f"(None if {x} is None else _fromiso({x}).isoformat() if type({x}) is str and len({x}) == 10 "
                      f"else _date_wire({x}))", True, V.TEXT)
        return value
    def payload_ref(self, parts: tuple[str, ...]) -> str:
        return "out" + "".join(f"[{p!r}]" for p in parts)

    def payload_display(self, payload: list[tuple[tuple[str, ...], str | None]]) -> str:
        """The payload as one dict display, in mapping order. Paths filled in after it (keep fields,
        references) still get their parent objects here, so ``out['location']['city'] = ...`` works."""
        tree: dict[str, Any] = {}
        for parts, var in payload:
            node = tree
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            if var is not None:
                node[parts[-1]] = var
        return _display(tree, 8)

    # ---- the module

    def module(self, pushdown: str | None, residual: ast.Expr | None) -> str:
        flow = self.flow
        where = flow.where
        self.emit_filter("filter_full", where,
                         "where " + expr_text(where) if where is not None else "no where: every record")
        self.emit_filter("filter_residual", residual,
                         "what $filter does not do: " + expr_text(residual) if residual is not None
                         else "nothing left after $filter" if where is not None else "no where: every record")
        self.emit_transform()
        lines = sorted({(self.file, a.span.line) for a in flow.assignments}
                       | ({(self.file, where.span.line)} if where is not None else set())
                       | ({(self.file, flow.key.span.line)} if flow.key is not None else set()))
        self.constants["_LINES"] = f"frozenset({lines!r})"
        self.constants["_FLOW"] = repr(flow.name)
        header = [_comment(line) for line in (
            f"# Generated by mapsync from {self.file} (flow {flow.name}). Do not edit: change the mapping.",
            f"# {self.source.dotted} -> {self.target.dotted}",
            f"# $filter pushed to the source: {pushdown if pushdown is not None else '(none)'}",
        )] + [""]
        consts = [f"{k} = {v}" for k, v in sorted(self.constants.items())]
        body_start = len(header) + len(consts) + 2
        text = "\n".join([*header, *consts, "", "", *self.lines]).rstrip() + "\n"
        self.owners = {line + body_start: owner for line, owner in self.owners.items()}
        return text


def _unwrap(py: str) -> str:
    """``(a and b)`` -> ``a and b`` when the outer parentheses enclose the whole expression.

    Decided by Python's own parser, not by counting: string literals may hold parentheses."""
    if not (py.startswith("(") and py.endswith(")")):
        return py
    try:
        same = pyast.dump(pyast.parse(py[1:-1], mode="eval")) == pyast.dump(pyast.parse(py, mode="eval"))
    except SyntaxError:
        return py
    return py[1:-1] if same else py


def _comment(text: str) -> str:
    """Text safe in a ``#`` comment of generated code: no character may end the comment's line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _display(tree: Mapping[str, Any], indent: int) -> str:
    if not tree:
        return "{}"
    pad = " " * (indent + 4)
    items = []
    for k, v in tree.items():
        items.append(f"{pad}{k!r}: {_display(v, indent + 4) if isinstance(v, dict) else v},")
    return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"


def _literal_value(e: ast.Expr, rep: str) -> Any:
    if isinstance(e, ast.Literal):
        return e.value
    if isinstance(e, ast.Unary) and e.op == "-" and isinstance(e.operand, ast.Literal) and isinstance(e.operand.value, int | float):
        return -e.operand.value
    raise CompileError(f"replace {rep}: results must be literal values",
                       [Diagnostic.error("E201", f"replace {rep}: results must be literal values", e.span)])


def _common_literal_type(values: list[Any]) -> ValueType:
    from mapsync.dsl.types import type_of

    types = {type_of(v) for v in values if v is not None}
    return types.pop() if len(types) == 1 else V.ANY


_EMPTY: Mapping[str, Any] = {}


def _traced_replace(name: str, cases: dict[Any, Any], lines: dict[Any, rt.Line], has_else: bool, default: Any,
                    else_line: rt.Line, hits: list[rt.Line], value: Any) -> Any:
    """Test-run form of a replacement: the same result, and which case line it went through."""
    if value is None and None not in cases:
        return None
    if value in cases:
        hits.append(lines[value])
        return cases[value]
    if not has_else:
        raise rt.UnmappedValue(name, value)
    hits.append(else_line)
    return default


# ---------------------------------------------------------------------------------------------- compile


def compile_flow(flow: ast.Flow, *, replaces: Mapping[str, ast.Replace], source: TableSchema,
                 target: TableSchema, file: str, version: str = "", trace: bool = False) -> CompiledFlow:
    """Compile one checked flow. ``trace=True`` records replacement case lines in ``Mapped.lines`` (tests)."""
    if flow.key is None:
        raise CompileError(f"flow {flow.name} has no key",
                           [Diagnostic.error("E008", f"flow {flow.name} has no key clause", flow.span)])
    c = _FlowCompiler(flow, replaces, source, target, file, version, trace)
    split = split_filter(flow.where, source) if source.system == "d365" else None
    pushdown = split.odata if split is not None else None
    residual = split.residual if split is not None else flow.where
    python_source = c.module(pushdown, residual)
    filename = f"<mapsync {file}:{flow.name}>"
    code = compile(python_source, filename, "exec")
    ns: dict[str, Any] = dict(c.namespace)
    ns["__builtins__"] = __builtins__
    ns["_DATA_ERRORS"] = _DATA_ERRORS
    ns["_Mapped"] = rt.Mapped
    ns["_new"] = tuple.__new__
    key_wire = c.wire_name(flow.key.source.parts, flow.key.source.span)[0]
    owners = c.owners
    where_line = flow.where.span.line if flow.where is not None else None

    def key_of(r: Mapping[str, Any]) -> str:
        try:
            return _key_text(r.get(key_wire))
        except AttributeError:
            return ""

    def reject(r: Mapping[str, Any], field_name: str, line: int, reason: str) -> rt.Rejected:
        return rt.Rejected(flow.name, key_of(r), reason, field_name, file, line, frozenset({(file, line)}))

    def too_long(r: Mapping[str, Any], field_name: str, line: int, value: str, limit: int) -> rt.Rejected:
        return reject(r, field_name, line, f"value is {len(value)} characters, over the target's {limit}: {_short(value)}")

    def not_allowed(r: Mapping[str, Any], field_name: str, line: int, value: Any, allowed: frozenset[str]) -> rt.Rejected:
        return reject(r, field_name, line, f"{_short(value)} is not one of {', '.join(sorted(allowed))}")

    def reject_at(exc: BaseException, r: Any) -> rt.Rejected:
        field_name, line = _owner_of(exc.__traceback__, filename, owners) or ("", 0)
        if not field_name:
            field_name, line = ("where", where_line or 0)
        if isinstance(exc, rt.RecordError | FunctionError):
            reason = str(exc)
        else:
            reason = f"cannot compute the value ({type(exc).__name__}: {exc})"
        if not isinstance(r, Mapping):
            return rt.Rejected(flow.name, "", f"the record is not an object: {_short(r)}", field_name, file, line)
        return reject(r, field_name, line, reason)

    ns.update(_reject=reject, _too_long=too_long, _not_allowed=not_allowed, _reject_at=reject_at)
    exec(code, ns)  # the module we just generated from checked names and repr()'d literals
    on_delete = _on_delete(flow, target)
    select = (key_wire, *sorted(w for w in c.all_reads if w != key_wire))
    return CompiledFlow(
        name=flow.name,
        file=file,
        version=version,
        source=source,
        target=target,
        key_source=flow.key.source.dotted,
        key_target=flow.key.target.dotted,
        mode=str(flow.mode.value) if flow.mode is not None else _DEFAULT_MODE,
        on_delete=on_delete,
        on_filtered=str(flow.on_filtered.value) if flow.on_filtered is not None else "ignore",
        batch=int(flow.batch.value) if flow.batch is not None else None,
        max_deletes=flow.max_deletes,
        select=select,
        pushdown=pushdown,
        residual_text=expr_text(residual) if residual is not None else None,
        python_source=python_source,
        lines=frozenset(_coverable_lines(flow, file)),
        transform=ns["transform"],
        _filter_full=ns["filter_full"],
        _filter_residual=ns["filter_residual"],
        _target_lines=c.target_lines,
        where_line=where_line,
        line=flow.span.line or None,
    )


def _coverable_lines(flow: ast.Flow, file: str) -> set[rt.Line]:
    out = {(file, a.span.line) for a in flow.assignments}
    if flow.where is not None:
        out.add((file, flow.where.span.line))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _owner_of(tb: TracebackType | None, filename: str, owners: Mapping[int, tuple[str, int]]) -> tuple[str, int] | None:
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            found = owners.get(tb.tb_lineno)
        tb = tb.tb_next
    return found


def _on_delete(flow: ast.Flow, target: TableSchema) -> OnDeletePolicy:
    od = flow.on_delete
    if od is None:
        return OnDeletePolicy("ignore")
    if od.action != "set":
        return OnDeletePolicy(od.action)
    values: dict[str, Any] = {}
    for a in od.assignments:
        if not isinstance(a.expr, ast.Literal):
            raise CompileError("on delete: set(...) takes literal values only", [
                Diagnostic.error("E201", "on delete: set(...) takes literal values only (the record is gone)", a.expr.span)])
        tf = target.resolve(a.target.parts)
        value: Any = a.expr.value
        if tf is not None and value is not None:
            if tf.value_type is V.DATETIME:
                value = (rt.d365_datetime if target.system == "d365" else rt.campaign_datetime)(value)
            elif tf.value_type is V.DATE:
                value = rt.d365_date(value)
        node = values
        for p in a.target.parts[:-1]:
            node = node.setdefault(p, {})
        node[a.target.parts[-1]] = value
    return OnDeletePolicy("set", values)


# ---------------------------------------------------------------------------------------------- projects

_CACHE: dict[tuple[str, tuple[str, ...], int, bool], tuple[Any, CompiledProject]] = {}


def compile_project(project: Project, catalog: Catalog, *, trace: bool = False) -> CompiledProject:
    """Check and compile a project: its flows (by name: the result reads as that mapping), what each links
    to, its opt-out rules with ``via`` resolved, and the run order. Raises ``CheckError`` when the project has
    errors.

    Cached in memory by the project's content hash (``Project.version``) and the catalog: compiling
    the same mappings twice returns the same objects.
    """
    # The version ignores where the files are (a mapping's version is its content); the flows name their
    # files, so the same mappings at another place compile anew.
    files = tuple(project.flow_file(name) for name in sorted(project.flows))
    key = (project.version, files, id(catalog), trace)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] is catalog:
        return cached[1]
    from mapsync.dsl.checker import analyze

    analysis = analyze(project, catalog)
    diagnostics = [d for d in analysis.diagnostics if d.is_error]
    if diagnostics:
        raise CheckError(f"{len(diagnostics)} error(s) in the mappings", diagnostics)
    flows: dict[str, CompiledFlow] = {}
    for name, info in sorted(analysis.flows.items()):
        if info.source is None or info.target is None:
            raise CompileError(f"flow {name}: its tables were not resolved", [])
        flows[name] = compile_flow(info.flow, replaces=info.replaces, source=info.source, target=info.target,
                                   file=info.file, version=project.version, trace=trace)
    links = {name: frozenset(analysis.flows[name].links) - {name} for name in flows}
    compiled = CompiledProject(
        flows, links, {name: optout_rule(info.optout, info.via) for name, info in analysis.optouts.items()},
        run_order(links, {name: f.source.system for name, f in flows.items()}))
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = (catalog, compiled)
    return compiled


# Decimal values appear in repr() of money literals in the future; keep the name importable for exec.
_ = decimal
