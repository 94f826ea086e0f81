"""The checker: a parsed project against the schema snapshots, every problem reported at once.

    analyze(project, catalog) -> Analysis     diagnostics + what the compiler needs (resolved tables/fields)
    check(project, catalog) -> list[Diagnostic]

It resolves systems, tables and fields (source paths in expressions, `where` and `key` against the
flow's source table; assignment targets against its target), types every expression with the value
types of ``mapsync.dsl.types`` and the function contracts of ``mapsync.dsl.functions``, and follows what a value can
be (its longest text, the finite set of values a literal or replacement yields) far enough to warn
about truncation and uncovered option sets. Nothing here raises on user input: an unresolvable name
gives a diagnostic and the type ``any``, so one typo does not cascade into a dozen follow-up errors.

The rules themselves are documented for users in docs/language.md ("Checks").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mapsync.dsl import ast
from mapsync.dsl.diagnostics import Diagnostic, did_you_mean
from mapsync.dsl.functions import FUNCTIONS, FunctionSpec
from mapsync.dsl.graphs import back_edges
from mapsync.dsl.project import Project
from mapsync.dsl.schema import Catalog, FieldSchema, TableSchema
from mapsync.dsl.types import ValueType, arithmetic, assignable, common_type, comparable

__all__ = ["CLAUSE_VALUES", "Analysis", "FlowInfo", "OptOutInfo", "analyze", "check"]

V = ValueType
SYSTEMS = ("d365", "campaign")
MAX_BATCH = 1000

# Allowed words per clause. Kept here (not in the grammar) so a typo gets "did you mean", not a syntax error.
CLAUSE_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mode": ("upsert", "update", "create", "mirror"),
    "on delete": ("ignore", "delete"),
    "on filtered": ("ignore", "delete"),
    "direction": ("d365-to-campaign", "campaign-to-d365", "both"),
    "conflict": ("latest-wins", "optout-wins", "d365-wins", "campaign-wins"),
})

# Functions whose result is as long as their first argument, at most (case mapping, trimming).
_SAME_LENGTH = frozenset({"lower", "upper", "trim", "title"})
_TEXTLIKE = frozenset({V.TEXT, V.GUID, V.REFERENCE, V.NULL, V.ANY})
_BOOLISH = frozenset({V.BOOLEAN, V.NULL, V.ANY})
_GUID_LENGTH = 36


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class FlowInfo:
    """A flow with its names resolved; ``targets`` is aligned with ``flow.assignments`` (None: unresolved)."""

    name: str
    file: str
    flow: ast.Flow
    source: TableSchema | None
    target: TableSchema | None
    key_source: FieldSchema | None
    key_target: FieldSchema | None
    targets: tuple[FieldSchema | None, ...]
    replaces: Mapping[str, ast.Replace]
    links: tuple[str, ...]  # flows this one reads through link()


@dataclass(frozen=True, slots=True)
class OptOutInfo:
    name: str
    optout: ast.OptOut
    d365_table: TableSchema | None
    d365_field: FieldSchema | None
    campaign_table: TableSchema | None
    campaign_field: FieldSchema | None
    via: str | None  # the flow whose key map pairs the records


@dataclass(frozen=True)
class Analysis:
    diagnostics: tuple[Diagnostic, ...]
    flows: Mapping[str, FlowInfo]
    optouts: Mapping[str, OptOutInfo]

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def check(project: Project, catalog: Catalog) -> list[Diagnostic]:
    """Every problem of the project against the catalog (names, types, lengths, options, structure)."""
    return list(analyze(project, catalog).diagnostics)


def analyze(project: Project, catalog: Catalog) -> Analysis:
    """Check the project and return the diagnostics with the resolved flows and opt-outs."""
    return _Checker(project, catalog).run()


def _action(clause: ast.OnDelete | ast.Setting) -> str:
    return str(clause.action if isinstance(clause, ast.OnDelete) else clause.value)


# ----------------------------------------------------------------------------------------------- values


@dataclass(slots=True)  # not frozen: made ~10,000 times per check, and frozen init costs twice as much
class _Val:
    """What the checker knows about an expression's value (never mutated after creation)."""

    type: ValueType
    length: int | None = None  # the longest text it can be, when known
    field: FieldSchema | None = None  # the schema field, when the expression is a bare field path
    values: tuple[object, ...] | None = None  # every value it can take, when that set is finite and known
    literal: bool = False


_ANY = _Val(V.ANY)
_LITERAL_TYPES: Mapping[str, ValueType] = MappingProxyType({
    "text": V.TEXT, "int": V.NUMBER, "number": V.NUMBER, "bool": V.BOOLEAN, "null": V.NULL,
    "date": V.DATE, "datetime": V.DATETIME,
})


def _literal_val(lit: ast.Literal) -> _Val:
    t = _LITERAL_TYPES[lit.kind]
    length = len(lit.value) if isinstance(lit.value, str) else (0 if lit.kind == "null" else None)
    return _Val(t, length=length, values=(lit.value,), literal=True)


def _field_val(f: FieldSchema) -> _Val:
    length = f.max_length
    values: tuple[object, ...] | None = None
    if f.values:  # enum: text restricted to these words
        values = f.values
        length = max(len(v) for v in f.values) if length is None else length
    elif f.options and f.value_type is V.CHOICE:
        values = f.option_values
    if f.value_type is V.GUID and length is None:
        length = _GUID_LENGTH
    return _Val(f.value_type, length=length, field=f, values=values)


def _fmt_value(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def _fmt_options(f: FieldSchema, values: Iterable[object]) -> str:
    return ", ".join(f"{v} ({f.label_for(v)})" if isinstance(v, int) and f.label_for(v) else _fmt_value(v)
                     for v in values)


def _a(t: ValueType) -> str:
    """``a number``, ``text``, ``a date``: a type as a noun in messages."""
    if t is V.TEXT:
        return "text"
    if t is V.ANY:
        return "a value of unknown type"
    return f"an {t}" if str(t)[0] in "aeiou" else f"a {t}"


def _conversion_hint(source: ValueType, target: ValueType) -> str | None:
    if target is V.TEXT:
        if source is V.CHOICE:
            return "use label(...) for the option's label, or text(...) for its number"
        return "convert it with text(...)"
    if target in (V.NUMBER, V.CHOICE) and source is V.TEXT:
        return "convert it with number(...)"
    if target is V.DATE and source in (V.TEXT, V.DATETIME):
        return "convert it with date(...)"
    if target is V.DATETIME and source is V.TEXT:
        return "convert it with datetime(...)"
    if target is V.REFERENCE:
        return "a lookup is set with link(field, flow) or contact(key)"
    return None


# ----------------------------------------------------------------------------------------------- checker


@dataclass
class _Scope:
    """Where an expression is typed: the flow (if any), its tables, and the replacements it may call."""

    file: str
    flow: ast.Flow | None
    source: TableSchema | None
    target: TableSchema | None
    replaces: Mapping[str, ast.Replace]
    links: list[tuple[str, ast.Span]] = field(default_factory=list)
    in_replace: str | None = None  # typing the results of this replacement (no fields there)


class _Checker:
    def __init__(self, project: Project, catalog: Catalog) -> None:
        self.project = project
        self.catalog = catalog
        self.out: list[Diagnostic] = []
        self.used_replaces: set[str] = set()
        self.mixed_replaces: set[str] = set()  # E205 reported: no W104 at their call sites
        self.replace_results: dict[str, _Val] = {}
        self.flow_sources: dict[str, TableSchema | None] = {}
        self.flow_targets: dict[str, TableSchema | None] = {}
        self._path_vals: dict[tuple[int, tuple[str, ...]], _Val] = {}  # (id(table), path) -> its value

    # ---- reporting
    def error(self, code: str, message: str, span: ast.Span, hint: str | None = None) -> None:
        self.out.append(Diagnostic.error(code, message, span, hint))

    def warning(self, code: str, message: str, span: ast.Span, hint: str | None = None) -> None:
        self.out.append(Diagnostic.warning(code, message, span, hint))

    # ---- driver
    def run(self) -> Analysis:
        project = self.project
        # Tables first: link() and opt-outs need every flow's tables before any flow is checked.
        for name, flow in project.flows.items():
            self.flow_sources[name] = self._table(flow.source, "from") if flow.source else None
            self.flow_targets[name] = self._table(flow.target, "to") if flow.target else None
        for name, rep in project.replaces.items():
            self._check_replace(project.replace_file(name), rep)
        flows = {name: self._check_flow(name, flow) for name, flow in project.flows.items()}
        self._link_cycles(flows)
        optouts = {name: self._check_optout(o) for name, o in project.optouts.items()}
        for name, rep in project.replaces.items():
            if name not in self.used_replaces:
                self.warning("W103", f"replacement `{name}` is never used", rep.name_span,
                             "call it like a function, e.g. `gender = " + name + "(gendercode)`, or remove it")
        unique = list(dict.fromkeys(self.out))  # the same finding from two call sites is shown once
        return Analysis(tuple(unique), MappingProxyType(flows), MappingProxyType(optouts))

    # ---- tables
    def _table(self, ref: ast.TableRef, clause: str) -> TableSchema | None:
        if ref.system not in SYSTEMS and ref.system not in self.catalog.systems():
            self.error("E101", f"unknown system `{ref.system}`", ref.span,
                       did_you_mean(ref.system, SYSTEMS) or "systems are `d365` and `campaign`")
            return None
        table = self.catalog.table(ref.system, ref.name)
        if table is None:
            names = [t.name for t in self.catalog.tables(ref.system)]
            self.error("E102", f"unknown table `{ref.name}` in {ref.system}", ref.span,
                       did_you_mean(ref.name, names) or self._missing_snapshot(ref.system, ref.name, names))
        return table

    def _missing_snapshot(self, system: str, name: str, names: list[str]) -> str | None:
        """What to do about a table no snapshot describes: write its snapshot, or pull it."""
        where = self.catalog.snapshot_file(system, name)
        if where is None:  # checking against a live pull: the service has no such table
            return _known(names, "tables")
        flag = "--table" if system == "d365" else "--resource"
        return (f"no snapshot {where}; pull it with `mapsync schema pull --env E {flag} {name}`, or write it by hand "
                f"(format: schemas/snapshot.schema.json)")

    def _stale_snapshot(self, table: TableSchema, hint: str | None) -> str | None:
        """A field a snapshot lacks: a typo (the hint), or a field added to the service since the pull."""
        if hint is not None:
            return hint
        where = self.catalog.snapshot_file(table.system, table.name)
        if where is None:
            return None
        flag = "--table" if table.system == "d365" else "--resource"
        return (f"not in {where}; if it was added to the service since, refresh the snapshot: "
                f"`mapsync schema pull --env E {flag} {table.name}`")

    # ---- replacements (declarations)
    def _check_replace(self, file: str, rep: ast.Replace) -> None:
        if rep.name in FUNCTIONS:
            self.error("E109", f"`{rep.name}` is a built-in function; a replacement cannot take its name",
                       rep.name_span, "rename the replacement")
        kinds: dict[str, ast.Span] = {}
        seen: dict[object, ast.Span] = {}
        for case in rep.cases:
            t = _LITERAL_TYPES[case.match.kind]
            if t is not V.NULL:
                kinds.setdefault(str(t), case.match.span)
            key = (t, case.match.value)
            if key in seen:
                self.warning("W104", f"case {_fmt_value(case.match.value)} of `{rep.name}` can never match: "
                             f"it repeats line {seen[key].line}", case.match.span, "remove one of them")
            else:
                seen[key] = case.match.span
        if len(kinds) > 1:
            self.mixed_replaces.add(rep.name)
            (first, _), (second, span) = list(kinds.items())[:2]
            self.error("E205", f"replacement `{rep.name}` mixes {first} and {second} case values", span,
                       "one replacement maps one kind of value; convert the input with text(...) or number(...)")
        scope = _Scope(file, None, None, None, self.project.replaces_for(file), in_replace=rep.name)
        results = [self._val(c.result, scope) for c in rep.cases]
        if rep.default is not None:
            results.append(self._val(rep.default, scope))
        self.replace_results[rep.name] = _merge(results)

    # ---- flows
    def _check_flow(self, name: str, flow: ast.Flow) -> FlowInfo:
        file = self.project.flow_file(name)
        source, target = self.flow_sources[name], self.flow_targets[name]
        self._missing_clauses(flow)
        self._direction(flow, source, target)
        self._settings(flow)
        self._combinations(flow, source)
        scope = _Scope(file, flow, source, target, self.project.replaces_for(file))

        key_source = key_target = None
        assigned: dict[tuple[str, ...], tuple[ast.Span, str]] = {}
        if flow.key is not None:
            key_source = self._key_field(flow.key.source, source)
            key_target = self._key_field(flow.key.target, target)
            if key_source is not None and key_target is not None and not assignable(
                    key_source.value_type, key_target.value_type):
                self.error("E201", f"the key `{flow.key.source.dotted}` is {_a(key_source.value_type)}, but "
                           f"`{flow.key.target.dotted}` holds {_a(key_target.value_type)}", flow.key.span)
            if key_target is not None:
                assigned[flow.key.target.parts] = (flow.key.span, "the key")

        if flow.where is not None:
            cond = self._val(flow.where, scope)
            if cond.type not in _BOOLISH:
                self.error("E201", f"`where` needs a condition (true or false), not {_a(cond.type)}",
                           flow.where.span, "compare it, e.g. `statecode == 0`")

        targets = tuple(self._assignment(a, scope, assigned) for a in flow.assignments)
        if flow.on_delete is not None and flow.on_delete.action == "set":
            set_assigned: dict[tuple[str, ...], tuple[ast.Span, str]] = {}
            for a in flow.on_delete.assignments:
                self._assignment(a, scope, set_assigned)
        return FlowInfo(name=name, file=file, flow=flow, source=source, target=target, key_source=key_source,
                        key_target=key_target, targets=targets, replaces=scope.replaces,
                        links=tuple(dict.fromkeys(n for n, _ in scope.links)))

    def _missing_clauses(self, flow: ast.Flow) -> None:
        needed = (
            (flow.source, "from", "add `from SYSTEM.TABLE`, e.g. `from d365.contact`"),
            (flow.target, "to", "add `to SYSTEM.TABLE`, e.g. `to campaign.profile`"),
            (flow.key, "key", "add `key SOURCE_FIELD -> TARGET_FIELD`, e.g. `key contactid -> externalId`"),
        )
        for value, clause, hint in needed:
            if value is None:
                self.error("E008", f"flow `{flow.name}` has no `{clause}` clause", flow.name_span, hint)
        if not flow.assignments:
            self.error("E008", f"flow `{flow.name}` maps no fields", flow.name_span,
                       "add a `map { target = expression }` block")

    def _direction(self, flow: ast.Flow, source: TableSchema | None, target: TableSchema | None) -> None:
        if flow.source is not None and flow.target is not None and flow.source.system == flow.target.system:
            self.error("E301", f"flow `{flow.name}` reads and writes {flow.source.system}", flow.target.span,
                       "a flow goes from one system to the other")
        if target is not None and target.feed is not None:
            self.error("E301", f"{target.dotted} is an event feed: it can be read, not written", flow.target.span
                       if flow.target else flow.name_span)

    def _settings(self, flow: ast.Flow) -> None:
        if flow.mode is not None:
            self._word("mode", flow.mode)
        if flow.on_delete is not None and flow.on_delete.action != "set":
            self._word("on delete", ast.Setting(span=flow.on_delete.span, value=flow.on_delete.action), extra="or set(field = value, ...)")
        if flow.on_filtered is not None:
            self._word("on filtered", flow.on_filtered)
        if flow.batch is not None and isinstance(flow.batch.value, int) and not 1 <= flow.batch.value <= MAX_BATCH:
            self.error("E112", f"`batch` must be between 1 and {MAX_BATCH}, not {flow.batch.value}",
                       flow.batch.span, f"Dataverse accepts at most {MAX_BATCH} operations in one $batch")
        md = flow.max_deletes
        if md is not None:
            mode = flow.mode.value if flow.mode is not None else "upsert"
            if mode != "mirror":
                self.error("E112", "`max deletes` only applies to `mode mirror`", md.span,
                           "remove it, or use `mode mirror`")
            elif md.percent and md.value > 100:
                self.error("E112", f"`max deletes` cannot be more than 100%, not {md.value:g}%", md.span)

    def _combinations(self, flow: ast.Flow, source: TableSchema | None) -> None:
        """Clauses that are valid alone but would not do what they say together."""
        mode = str(flow.mode.value) if flow.mode is not None else "upsert"
        removes = [(clause.span, name) for clause, name in ((flow.on_delete, "on delete: delete"),
                                                             (flow.on_filtered, "on filtered: delete"))
                   if clause is not None and _action(clause) == "delete"]
        if mode == "update":
            # Update mode writes records others made: removing them is never mapsync's to do.
            for span, name in removes:
                self.error("E112", f"`{name}` with `mode update`: this flow creates nothing, so it deletes nothing",
                           span, "use `ignore`, or `on delete: set(...)` to mark the record")
        if source is not None and source.feed is not None:
            if flow.on_delete is not None:
                self.error("E112", f"`on delete` on {source.dotted}: an event feed never deletes an event",
                           flow.on_delete.span, "remove it")
            if mode == "mirror" and flow.mode is not None:
                self.error("E112", f"`mode mirror` on {source.dotted}: an event feed never deletes an event, so "
                           "there is nothing to mirror", flow.mode.span, "use `mode create` or `mode upsert`")

    def _word(self, clause: str, setting: ast.Setting, *, extra: str = "") -> bool:
        span, word = setting.span, str(setting.value)
        allowed = CLAUSE_VALUES[clause]
        if word in allowed:
            return True
        listing = " | ".join(allowed) + (f" {extra}" if extra else "")
        self.error("E112", f"`{word}` is not a valid `{clause}` value", span,
                   did_you_mean(word, allowed) or f"`{clause}` is one of {listing}")
        return False

    def _key_field(self, path: ast.Path, table: TableSchema | None) -> FieldSchema | None:
        if table is None or not path.parts:
            return None
        found, hint = _resolve(table, path.parts)
        if found is None:
            self.error("E111", f"unknown key field `{path.dotted}` on {table.dotted}", path.span, hint)
        return found

    def _assignment(self, a: ast.Assignment, scope: _Scope,
                    assigned: dict[tuple[str, ...], tuple[ast.Span, str]]) -> FieldSchema | None:
        value = self._val(a.expr, scope)
        parts = a.target.parts
        if not parts:
            return None
        clash = _clash(assigned, parts)
        if clash is not None:
            span, what = clash
            where = "by the key" if what == "the key" else f"on line {span.line}"
            self.error("E110", f"`{a.target.dotted}` is assigned twice", a.target.span,
                       f"it is already set {where}; keep one")
        assigned[parts] = (a.span, "map")
        target = scope.target
        if target is None:
            return None
        f, hint = _resolve(target, parts)
        if f is None:
            self.error("E104", f"unknown field `{a.target.dotted}` on {target.dotted}", a.target.span,
                       self._stale_snapshot(target, hint))
            return None
        if f.read_only:
            self.error("E113", f"`{a.target.dotted}` is read-only in {target.dotted}", a.target.span,
                       "the service sets it; remove this line")
        self._fits(a, value, f, scope)
        return f

    def _fits(self, a: ast.Assignment, value: _Val, f: FieldSchema, scope: _Scope) -> None:
        """Type, allowed values and length of a value written into target field ``f``."""
        name = a.target.dotted
        if not assignable(value.type, f.value_type):
            self.error("E201", f"cannot write {_a(value.type)} into the {f.value_type} field `{name}`",
                       a.expr.span, _conversion_hint(value.type, f.value_type))
            return
        allowed: tuple[object, ...] = f.values if f.values else (f.option_values if f.options else ())
        if allowed and value.values is not None:
            bad = [v for v in value.values if v is not None and v not in allowed]
            if bad:
                shown = ", ".join(_fmt_value(v) for v in allowed) if f.values else _fmt_options(f, allowed)
                self.error("E206", f"`{name}` does not accept {', '.join(_fmt_value(v) for v in bad)}",
                           a.expr.span, f"allowed: {shown}")
        if (f.value_type is V.TEXT and f.max_length is not None and value.length is not None
                and value.length > f.max_length):
            self.warning("W101", f"the value can be {value.length} characters, but `{name}` holds "
                         f"{f.max_length}", a.expr.span,
                         f"wrap it in truncate(..., {f.max_length}), or longer values reject the record")

    # ---- expressions
    def _val(self, e: ast.Expr, scope: _Scope) -> _Val:
        if isinstance(e, ast.Literal):
            return _literal_val(e)
        if isinstance(e, ast.Path):
            return self._path(e, scope)
        if isinstance(e, ast.Call):
            return self._call(e, scope)
        if isinstance(e, ast.Binary):
            return self._binary(e, scope)
        if isinstance(e, ast.Unary):
            operand = self._val(e.operand, scope)
            if e.op == "not":
                if operand.type not in _BOOLISH:
                    self.error("E203", f"`not` needs a condition, not {_a(operand.type)}", e.operand.span)
                return _Val(V.BOOLEAN)
            result = arithmetic("-", V.NUMBER, operand.type) if operand.type is not V.DURATION else V.DURATION
            if result is None:
                self.error("E203", f"`-` needs a number, not {_a(operand.type)}", e.operand.span)
                return _ANY
            return _Val(result)
        if isinstance(e, ast.InList):
            operand = self._val(e.operand, scope)
            for item in e.items:
                self._compare(operand, self._val(item, scope), e.operand, item, "in")
            return _Val(V.BOOLEAN)
        if isinstance(e, ast.IsNull):
            self._val(e.operand, scope)
            return _Val(V.BOOLEAN)
        return _ANY

    def _path(self, p: ast.Path, scope: _Scope) -> _Val:
        if scope.in_replace is not None:
            self.error("E103", f"a replacement's result cannot read a field (`{p.dotted}`)", p.span,
                       "replacement results are values such as \"male\" or 3; map fields in the flow")
            return _ANY
        table = scope.source
        if table is None or not p.parts:
            return _ANY  # the missing table was reported where it was named
        key = (id(table), p.parts)
        val = self._path_vals.get(key)
        if val is not None:  # the same field read again (a flow reads few fields, many times)
            return val
        f, hint = _resolve(table, p.parts)
        if f is None:
            self.error("E103", f"unknown field `{p.dotted}` on {table.dotted}", p.span, self._stale_snapshot(table, hint))
            return _ANY
        val = self._path_vals[key] = _field_val(f)
        return val

    def _binary(self, e: ast.Binary, scope: _Scope) -> _Val:
        left, right = self._val(e.left, scope), self._val(e.right, scope)
        op = e.op
        if op in ("and", "or"):
            for side, val in (("left", left), ("right", right)):
                if val.type not in _BOOLISH:
                    self.error("E203", f"`{op}` needs a condition on the {side}, not {_a(val.type)}",
                               (e.left if side == "left" else e.right).span)
            return _Val(V.BOOLEAN)
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self._compare(left, right, e.left, e.right, op)
            return _Val(V.BOOLEAN)
        if op == "&":
            for side, val in ((e.left, left), (e.right, right)):
                if val.type not in _TEXTLIKE:
                    self.error("E203", f"`&` joins text, but this is {_a(val.type)}", side.span,
                               _conversion_hint(val.type, V.TEXT))
            length = None if left.length is None or right.length is None else left.length + right.length
            return _Val(V.TEXT, length=length, values=_product(left.values, right.values))
        if op == "??":
            result = common_type(left.type, right.type)
            if result is V.ANY and V.ANY not in (left.type, right.type):
                self.error("E203", f"the two sides of `??` differ: {left.type} and {right.type}", e.span,
                           _conversion_hint(right.type, left.type))
            return _Val(result, length=_max_len([left, right]), values=_union([left, right]))
        result = arithmetic(op, left.type, right.type)
        if result is None:
            hint = "join text with `&`" if op == "+" and V.TEXT in (left.type, right.type) else None
            self.error("E203", f"`{op}` cannot combine {_a(left.type)} and {_a(right.type)}", e.span, hint)
            return _ANY
        return _Val(result)

    def _compare(self, left: _Val, right: _Val, le: ast.Expr, re_: ast.Expr, op: str) -> None:
        if not comparable(left.type, right.type):
            hint = _conversion_hint(right.type, left.type)
            self.error("E202", f"cannot compare {_a(left.type)} with {_a(right.type)}",
                       _join_spans(le.span, re_.span), hint and hint.replace("convert it", "convert the right side"))
            return
        # A literal that the field can never hold: `statecode == 7`, `bounce.type == "hrad"`.
        for fv, lv, lit_expr in ((left, right, re_), (right, left, le)):
            if fv.field is None or not lv.literal or lv.values is None or fv.values is None:
                continue
            value = lv.values[0]
            if value is None or value in fv.values or op not in ("==", "!=", "in"):
                continue
            f = fv.field
            shown = ", ".join(_fmt_value(v) for v in f.values) if f.values else _fmt_options(f, f.option_values)
            self.warning("W104", f"`{f.name}` is never {_fmt_value(value)}", lit_expr.span,
                         f"its values are {shown}")

    def _call(self, c: ast.Call, scope: _Scope) -> _Val:
        if c.name in scope.replaces and c.name not in FUNCTIONS:
            return self._replace_call(c, scope, scope.replaces[c.name])
        spec = FUNCTIONS.get(c.name)
        if spec is None:
            for a in c.args:
                self._val(a, scope)
            self._unknown_call(c, scope)
            return _ANY
        if not spec.min_args <= len(c.args) <= (spec.max_args if spec.max_args is not None else len(c.args)):
            for a in c.args:
                self._val(a, scope)
            self.error("E106", f"`{c.name}` takes {_arity(spec)}, not {len(c.args)}", c.span,
                       f"usage: {spec.signature()}")
            return _Val(spec.returns) if isinstance(spec.returns, ValueType) else _ANY
        if spec.special:
            return self._special(c, spec, scope)
        args = [self._val(a, scope) for a in c.args]
        for i, (arg_expr, arg) in enumerate(zip(c.args, args, strict=True)):
            want = spec.param_type(i)
            if want is not V.ANY and not assignable(arg.type, want):
                self.error("E201", f"argument `{spec.params[min(i, len(spec.params) - 1)]}` of `{c.name}` "
                           f"must be {_a(want)}, not {_a(arg.type)}", arg_expr.span,
                           _conversion_hint(arg.type, want))
        result = spec.result_type([a.type for a in args])
        return _Val(result, length=_call_length(c, args) if result is V.TEXT else None,
                    values=_call_values(c.name, args))

    def _unknown_call(self, c: ast.Call, scope: _Scope) -> None:
        if c.name in self.project.replaces:
            self.used_replaces.add(c.name)
            where = self.project.replace_file(c.name)
            rel = os.path.relpath(where, os.path.dirname(scope.file) or ".").replace(os.sep, "/")
            self.error("E105", f"replacement `{c.name}` is not imported here", c.name_span,
                       f'it is declared in {where}: add `import "{rel}"`')
            return
        names = list(FUNCTIONS) + list(scope.replaces)
        self.error("E105", f"unknown function or replacement `{c.name}`", c.name_span,
                   did_you_mean(c.name, names))

    def _replace_call(self, c: ast.Call, scope: _Scope, rep: ast.Replace) -> _Val:
        self.used_replaces.add(rep.name)
        if len(c.args) != 1:
            for a in c.args:
                self._val(a, scope)
            self.error("E106", f"replacement `{rep.name}` takes 1 argument, not {len(c.args)}", c.span,
                       f"usage: {rep.name}(value)")
            return self.replace_results.get(rep.name, _ANY)
        arg = self._val(c.args[0], scope)
        cases = [(case.match.value, _LITERAL_TYPES[case.match.kind]) for case in rep.cases]
        never = [v for v, t in cases if t is not V.NULL and not comparable(t, arg.type)]
        if rep.name in self.mixed_replaces:
            pass
        elif never:
            self.warning("W104", f"{', '.join(_fmt_value(v) for v in never)} of `{rep.name}` can never match "
                         f"{_a(arg.type)}", c.span, _conversion_hint(arg.type, cases[0][1]) if cases else None)
        elif arg.field is not None and arg.values is not None:
            f = arg.field
            stray = [v for v, t in cases if t is not V.NULL and v not in arg.values]
            if stray:
                self.warning("W104", f"{', '.join(_fmt_value(v) for v in stray)} of `{rep.name}` can never "
                             f"match `{f.name}`", c.span, f"its values are {_fmt_options(f, arg.values)}")
            if rep.default is None:
                covered = {v for v, _ in cases}
                missing = [v for v in arg.values if v not in covered]
                if missing:
                    self.warning("W102", f"`{rep.name}` has no case for {_fmt_options(f, missing)} of `{f.name}`",
                                 c.span, "add the cases, or `else => ...` (without it those records are rejected)")
        return self.replace_results.get(rep.name, _ANY)

    def _special(self, c: ast.Call, spec: FunctionSpec, scope: _Scope) -> _Val:
        if c.name == "label":
            arg = c.args[0]
            val = self._val(arg, scope)
            f = val.field if isinstance(arg, ast.Path) else None
            if f is None or not f.options:
                if val.type is not V.ANY or not isinstance(arg, ast.Path):
                    what = f"`{arg.dotted}` is {_a(val.type)}" if isinstance(arg, ast.Path) else "this is an expression"
                    self.error("E204", f"label() needs a choice (option set) field; {what}", arg.span,
                               "label() gives the display label of an option-set value")
                return _Val(V.TEXT)
            labels = tuple(label for _, label in f.options)
            return _Val(V.TEXT, length=max(len(x) for x in labels), values=labels)
        if c.name == "link":
            return self._link(c, scope)
        # contact(key): the Dynamics 365 contact a Campaign profile came from.
        val = self._val(c.args[0], scope)
        if not assignable(val.type, V.TEXT):
            self.error("E201", f"contact() needs the contact's key as text, not {_a(val.type)}", c.args[0].span,
                       _conversion_hint(val.type, V.TEXT))
        if scope.flow is not None and scope.flow.target is not None and scope.flow.target.system != "d365":
            self.error("E301", f"contact() gives a Dynamics 365 contact, but flow `{scope.flow.name}` writes "
                       f"{scope.flow.target.dotted}", c.span, "use contact() only in flows that write to d365")
        return _Val(V.REFERENCE)

    def _link(self, c: ast.Call, scope: _Scope) -> _Val:
        lookup, flow_arg = c.args
        val = self._val(lookup, scope)
        if val.type not in (V.REFERENCE, V.GUID, V.ANY, V.NULL):
            self.error("E201", f"link() needs a lookup field, not {_a(val.type)}", lookup.span,
                       "the first argument is a lookup of the source table, e.g. parentcustomerid")
        if not isinstance(flow_arg, ast.Path) or len(flow_arg.parts) != 1:
            self.error("E201", "the second argument of link() is a flow name", flow_arg.span,
                       "e.g. link(new_contactid, contacts)")
            return _Val(V.REFERENCE)
        other = flow_arg.parts[0]
        if other not in self.project.flows:
            self.error("E107", f"unknown flow `{other}`", flow_arg.span,
                       did_you_mean(other, self.project.flows) or _known(list(self.project.flows), "flows"))
            return _Val(V.REFERENCE)
        scope.links.append((other, c.span))
        other_source = self.flow_sources.get(other)
        f = val.field
        if f is not None and f.targets and other_source is not None and other_source.name not in f.targets:
            self.error("E201", f"`{f.name}` points at {' or '.join(f.targets)}, but flow `{other}` reads "
                       f"{other_source.dotted}", c.span, "link to the flow that syncs the table the lookup points at")
        other_target = self.flow_targets.get(other)
        if scope.target is not None and other_target is not None and other_target.system != scope.target.system:
            self.error("E301", f"flow `{other}` writes to {other_target.system}, but this flow writes to "
                       f"{scope.target.system}", c.span, "link() gives a record of this flow's target system")
        return _Val(V.REFERENCE)

    # ---- link cycles
    def _link_cycles(self, flows: Mapping[str, FlowInfo]) -> None:
        def links(name: str) -> Iterable[tuple[str, str]]:
            return ((other, other) for other in flows[name].links if other in flows)

        for cycle, node, child in back_edges(flows, links):
            span = _link_span(flows[node].flow, child) or flows[node].flow.name_span
            message = (f"flow `{node}` links to itself" if node == child
                       else "flows link to each other in a cycle: " + " -> ".join(cycle))
            self.error("E108", message, span, "a record could wait for itself forever; write one direction in a second flow")

    # ---- opt-outs
    def _check_optout(self, o: ast.OptOut) -> OptOutInfo:
        sides = []
        for ref, system in ((o.d365, "d365"), (o.campaign, "campaign")):
            table = f = None
            if ref.table.system != system:
                side = "left" if system == "d365" else "right"
                self.error("E302", f"the {side} side of an opt-out is a {system} field", ref.span,
                           "write `d365.TABLE.FIELD <-> campaign.RESOURCE.FIELD`")
            else:
                table = self._table(ref.table, "optout")
            if table is not None:
                f, hint = _resolve(table, (ref.field,))
                if f is None:
                    self.error("E103", f"unknown field `{ref.field}` on {table.dotted}", ref.span,
                               self._stale_snapshot(table, hint))
                elif f.value_type is not V.BOOLEAN:
                    self.error("E302", f"`{ref.field}` is {_a(f.value_type)}; opt-out fields are booleans",
                               ref.span, _optout_fields_hint(table))
            sides.append((table, f))
        (dt_, df), (ct, cf) = sides
        if o.direction is not None:
            self._word("direction", o.direction)
        if o.conflict is not None:
            self._word("conflict", o.conflict)
        via = self._via(o, dt_, ct)
        return OptOutInfo(o.name, o, dt_, df, ct, cf, via)

    def _via(self, o: ast.OptOut, d365: TableSchema | None, campaign: TableSchema | None) -> str | None:
        if d365 is None or campaign is None:
            return None
        pair = {d365.dotted, campaign.dotted}

        def pairs(name: str) -> bool:
            s, t = self.flow_sources.get(name), self.flow_targets.get(name)
            return s is not None and t is not None and {s.dotted, t.dotted} == pair

        if o.via is not None:
            name = str(o.via.value)
            if name not in self.project.flows:
                self.error("E107", f"unknown flow `{name}`", o.via.span, did_you_mean(name, self.project.flows))
                return None
            if not pairs(name):
                s, t = self.flow_sources.get(name), self.flow_targets.get(name)
                what = f"pairs {s.dotted} with {t.dotted}" if s and t else "has no resolved tables"
                self.error("E302", f"flow `{name}` {what}, not {d365.dotted} with {campaign.dotted}", o.via.span,
                           "`via` names the flow whose key pairs the two records")
            return name
        candidates = [n for n in self.project.flows if pairs(n)]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            self.error("E302", f"no flow pairs {d365.dotted} with {campaign.dotted}", o.name_span,
                       "an opt-out pairs records through a flow's key: add that flow, or name one with `via FLOW`")
        else:
            self.error("E302", f"several flows pair {d365.dotted} with {campaign.dotted}: "
                       f"{', '.join(candidates)}", o.name_span, "name one with `via FLOW`")
        return None


# ----------------------------------------------------------------------------------------------- helpers


def _resolve(table: TableSchema, parts: tuple[str, ...]) -> tuple[FieldSchema | None, str | None]:
    """The field at ``parts``, or None and a "did you mean" hint for the first step that is missing."""
    fields: Mapping[str, FieldSchema] = table.fields
    found: FieldSchema | None = None
    for i, part in enumerate(parts):
        if found is not None and not found.fields:
            return None, f"`{'.'.join(parts[:i])}` is {_a(found.value_type)}: it has no fields"
        found = fields.get(part)
        if found is None:
            prefix = ".".join(parts[:i]) + "." if i else ""
            hint = did_you_mean(prefix + part, [prefix + n for n in fields])
            return None, hint
        fields = found.fields
    return found, None


def _clash(assigned: Mapping[tuple[str, ...], tuple[ast.Span, str]],
           parts: tuple[str, ...]) -> tuple[ast.Span, str] | None:
    """The earlier assignment of the same field, of a record holding it, or of a field inside it."""
    if parts in assigned:
        return assigned[parts]
    for k in range(1, len(parts)):  # `location` then `location.city`
        if parts[:k] in assigned:
            return assigned[parts[:k]]
    for other, value in assigned.items():  # `location.city` then `location`
        if len(other) > len(parts) and other[: len(parts)] == parts:
            return value
    return None


def _known(names: list[str], what: str) -> str | None:
    if not names:
        return None
    shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
    return f"known {what}: {shown}"


def _optout_fields_hint(table: TableSchema) -> str | None:
    booleans = [n for n, f in table.fields.items() if f.value_type is V.BOOLEAN]
    return _known(booleans, "boolean fields")


def _arity(spec: FunctionSpec) -> str:
    if spec.max_args is None:
        return f"at least {spec.min_args} argument{'s' if spec.min_args != 1 else ''}"
    if spec.min_args == spec.max_args:
        return f"{spec.min_args} argument{'s' if spec.min_args != 1 else ''}"
    return f"{spec.min_args} to {spec.max_args} arguments"


def _max_len(vals: Iterable[_Val]) -> int | None:
    lengths = [v.length for v in vals if v.type is not V.NULL]
    return None if not lengths or any(n is None for n in lengths) else max(lengths)  # type: ignore[type-var]


def _union(vals: Iterable[_Val]) -> tuple[object, ...] | None:
    # A dict keeps first-seen order and makes the membership test O(1): a replacement of 60,000 cases
    # must not cost 60,000² comparisons.
    out: dict[object, None] = {}
    for v in vals:
        if v.values is None:
            return None
        out.update(dict.fromkeys(v.values))
    return tuple(out)


def _product(a: tuple[object, ...] | None, b: tuple[object, ...] | None) -> tuple[object, ...] | None:
    # "a" & "b" is the one value "ab"; beyond a handful of combinations, stop tracking.
    if a is None or b is None or len(a) * len(b) > 16:
        return None
    return tuple(f"{x if x is not None else ''}{y if y is not None else ''}" for x in a for y in b
                 if isinstance(x, str | None) and isinstance(y, str | None))


def _merge(results: list[_Val]) -> _Val:
    """The value of a replacement call: any of its results."""
    if not results:
        return _ANY
    t = V.NULL
    for r in results:
        t = common_type(t, r.type)
    return _Val(t, length=_max_len(results), values=_union(results))


def _int_literal(e: ast.Expr) -> int | None:
    if isinstance(e, ast.Literal) and e.kind == "int" and isinstance(e.value, int) and not isinstance(e.value, bool):
        return e.value
    return None


def _call_length(c: ast.Call, args: list[_Val]) -> int | None:
    """The longest text a text-valued call can return, when the arguments tell."""
    name = c.name
    first = args[0].length if args else None
    if name in _SAME_LENGTH:
        return first
    if name == "truncate":
        n = _int_literal(c.args[1])
        return first if n is None else (n if first is None else min(n, first))
    if name == "substring":
        n = _int_literal(c.args[2])
        return first if n is None else (n if first is None else min(n, first))
    if name == "concat":
        lengths = [a.length if a.type in _TEXTLIKE else None for a in args]
        return None if any(n is None for n in lengths) else sum(lengths)  # type: ignore[arg-type]
    if name in ("coalesce", "if"):
        return _max_len(args if name == "coalesce" else args[1:])
    if name == "hash":
        return 64
    if name == "replace_text":
        old, new = args[1].values, args[2].values
        if old and new and all(isinstance(v, str) for v in (*old, *new)) and \
                max(len(str(v)) for v in new) <= min(len(str(v)) for v in old):
            return first
        return None
    return None


def _call_values(name: str, args: list[_Val]) -> tuple[object, ...] | None:
    if name in ("coalesce",):
        return _union(args)
    if name == "if" and len(args) == 3:
        return _union(args[1:])
    return None


def _join_spans(a: ast.Span, b: ast.Span) -> ast.Span:
    if a.file != b.file or b.start < a.start:
        return a
    return ast.Span(a.file, a.line, a.col, b.end_line, b.end_col, a.start, b.end)


def _link_span(flow: ast.Flow, other: str) -> ast.Span | None:
    """The span of the link(..., other) call in a flow, found again for the cycle report."""
    stack: list[ast.Expr] = [a.expr for a in flow.assignments]
    while stack:
        e = stack.pop()
        if isinstance(e, ast.Call):
            if (e.name == "link" and len(e.args) == 2 and isinstance(e.args[1], ast.Path)
                    and e.args[1].parts == (other,)):
                return e.span
            stack.extend(e.args)
        elif isinstance(e, ast.Binary):
            stack.extend((e.left, e.right))
        elif isinstance(e, ast.Unary | ast.IsNull):
            stack.append(e.operand)
        elif isinstance(e, ast.InList):
            stack.extend((e.operand, *e.items))
    return None
