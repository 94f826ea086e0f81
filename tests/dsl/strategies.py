"""Hypothesis strategies that generate mapping-language ASTs (``mapsync.dsl.ast``) in the shapes the parser builds.

Every node carries ``Span.unknown()`` (spans take no part in equality). What is generated is what the
grammar can say, so ``parse(format_module(tree)).module == tree`` must hold for every example:

- names match ``NAME`` and are never a keyword of the language (a field called ``required`` right
  after an assignment, or ``not`` as a function name, would read differently; see ``KEYWORDS``);
- numbers inside expressions are never negative (``-1`` parses as unary minus applied to ``1``);
  negative numbers appear only as ``replace`` match values, where the grammar has ``NEG_NUMBER``;
- floats are finite (no literal spells NaN or infinity); any finite float is fine, the formatter
  writes it in plain decimal digits;
- datetimes are timezone-aware with whole-minute offsets (the literal has no seconds in its offset;
  the parser reads an offset-less datetime as UTC), years 2..9998 so that comparing two of them
  never overflows;
- ``in`` lists have at least one item; table references have two or three parts.

Semantically valid values (modes, directions, conflict rules) are the default so the checker and
compiler tests can reuse these; pass ``any_words=True`` where any well-formed word will do.
"""

from __future__ import annotations

import datetime as dt
import string

from hypothesis import strategies as st

from mapsync.dsl import ast

__all__ = [
    "KEYWORDS",
    "SPAN",
    "assignments",
    "calls",
    "declarations",
    "expressions",
    "field_refs",
    "flows",
    "imports",
    "literals",
    "match_literals",
    "modules",
    "names",
    "operator_expressions",
    "optouts",
    "paths",
    "replaces",
    "table_refs",
]

SPAN = ast.Span.unknown()

KEYWORDS = frozenset({
    "flow", "replace", "optout", "import", "from", "to", "key", "mode", "where", "on", "delete", "filtered",
    "set", "batch", "max", "deletes", "map", "required", "keep", "once", "else", "direction", "conflict",
    "via", "and", "or", "not", "in", "is", "null", "true", "false",
})

MODES = ("upsert", "update", "create", "mirror")
DELETE_ACTIONS = ("ignore", "delete")
FILTERED_ACTIONS = ("ignore", "delete")
DIRECTIONS = ("both", "d365-to-campaign", "campaign-to-d365")
CONFLICTS = ("latest-wins", "optout-wins", "d365-wins", "campaign-wins")
FUNCTIONS = ("lower", "upper", "trim", "truncate", "coalesce", "concat", "if", "now", "label", "link", "text")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
BINARY_OPS = ("or", "and", "??", "&", "+", "-", "*", "/", *COMPARISONS)

_FIRST = string.ascii_letters + "_"
_REST = string.ascii_letters + string.digits + "_"


def names() -> st.SearchStrategy[str]:
    """Identifiers: mostly short realistic ones, sometimes any ``NAME``."""
    generated = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=12))
    realistic = st.sampled_from(("emailaddress1", "firstname", "statecode", "x", "_tmp", "cusVin", "a1"))
    return st.one_of(realistic, generated).filter(lambda n: n not in KEYWORDS)


def words() -> st.SearchStrategy[str]:
    """A ``WORD``: a name-like token that may contain inner hyphens (``latest-wins``)."""
    part = st.text(_REST, min_size=1, max_size=6)
    head = st.builds(lambda a, b: a + b, st.sampled_from(string.ascii_letters), st.text(_REST, max_size=6))
    return st.builds(lambda h, tail: "-".join([h, *tail]), head, st.lists(part, max_size=2)).filter(
        lambda w: w not in KEYWORDS
    )


def paths(max_parts: int = 3) -> st.SearchStrategy[ast.Path]:
    return st.lists(names(), min_size=1, max_size=max_parts).map(lambda p: ast.Path(span=SPAN, parts=tuple(p)))


_finite = st.floats(allow_nan=False, allow_infinity=False)
_datetimes = st.datetimes(
    min_value=dt.datetime(2, 1, 1), max_value=dt.datetime(9998, 12, 31),
    timezones=st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
)


def literals(*, negative: bool = False) -> st.SearchStrategy[ast.Literal]:
    """Literals of every kind; ``negative=True`` also gives negative numbers (replace matches only)."""
    ints = st.integers(min_value=None if negative else 0, max_value=10**30)
    floats = _finite if negative else _finite.map(abs)

    def lit(kind: str) -> object:
        return lambda v: ast.Literal(span=SPAN, kind=kind, value=v)

    return st.one_of(
        st.text(max_size=20).map(lit("text")),
        ints.map(lit("int")),
        floats.map(lit("number")),
        st.booleans().map(lit("bool")),
        st.just(ast.Literal(span=SPAN, kind="null", value=None)),
        st.dates().map(lit("date")),
        _datetimes.map(lit("datetime")),
    )


def match_literals() -> st.SearchStrategy[ast.Literal]:
    """What a ``replace`` case can match: any literal, negative numbers included."""
    return literals(negative=True)


def calls(args: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Call]:
    name = st.one_of(st.sampled_from(FUNCTIONS), names())
    return st.builds(lambda n, a: ast.Call(span=SPAN, name=n, args=tuple(a), name_span=SPAN),
                     name, st.lists(args, max_size=3))


def expressions(max_leaves: int = 12) -> st.SearchStrategy[ast.Expr]:
    """Any expression: literals and paths at the leaves, every operator and calls above them."""
    leaves = st.one_of(literals(), paths())

    def extend(children: st.SearchStrategy[ast.Expr]) -> st.SearchStrategy[ast.Expr]:
        return st.one_of(
            st.builds(lambda op, e: ast.Unary(span=SPAN, op=op, operand=e), st.sampled_from(("not", "-")), children),
            st.builds(lambda op, a, b: ast.Binary(span=SPAN, op=op, left=a, right=b),
                      st.sampled_from(BINARY_OPS), children, children),
            st.builds(lambda e, items, neg: ast.InList(span=SPAN, operand=e, items=tuple(items), negated=neg),
                      children, st.lists(children, min_size=1, max_size=3), st.booleans()),
            st.builds(lambda e, neg: ast.IsNull(span=SPAN, operand=e, negated=neg), children, st.booleans()),
            calls(children),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def operator_expressions(depth: int = 4) -> st.SearchStrategy[ast.Expr]:
    """Operators only (binary, unary, `in`, `is null`) over short paths and small numbers, ``depth`` deep.

    Dense in what precedence and associativity decide (``a - (b - c)``, ``(a ?? b) ?? c``), which
    ``expressions`` reaches only now and then: ``st.recursive`` favours small trees, so this one is
    built level by level with a leaf only one time in six.
    """
    leaf = st.one_of(
        st.sampled_from("abcxyz").map(lambda n: ast.Path(span=SPAN, parts=(n,))),
        st.integers(0, 9).map(lambda v: ast.Literal(span=SPAN, kind="int", value=v)),
    )
    if depth <= 0:
        return leaf
    children = operator_expressions(depth - 1)
    binary = st.builds(lambda op, a, b: ast.Binary(span=SPAN, op=op, left=a, right=b),
                       st.sampled_from(BINARY_OPS), children, children)
    return st.one_of(
        binary, binary, binary,
        st.builds(lambda op, e: ast.Unary(span=SPAN, op=op, operand=e), st.sampled_from(("not", "-")), children),
        st.builds(lambda e, neg: ast.IsNull(span=SPAN, operand=e, negated=neg), children, st.booleans()),
        st.builds(lambda e, i, neg: ast.InList(span=SPAN, operand=e, items=(i,), negated=neg),
                  children, children, st.booleans()),
        leaf,
    )


def table_refs(system: str | None = None) -> st.SearchStrategy[ast.TableRef]:
    systems = st.just(system) if system else st.one_of(st.sampled_from(("d365", "campaign")), names())
    table = st.one_of(names(), st.builds(lambda a, b: f"{a}.{b}", names(), names()))
    return st.builds(lambda s, t: ast.TableRef(span=SPAN, system=s, name=t), systems, table)


def field_refs(system: str) -> st.SearchStrategy[ast.FieldRef]:
    table = st.builds(lambda t: ast.TableRef(span=SPAN, system=system, name=t), names())
    return st.builds(lambda t, f: ast.FieldRef(span=SPAN, table=t, field=f), table, names())


def assignments(exprs: st.SearchStrategy[ast.Expr] | None = None) -> st.SearchStrategy[ast.Assignment]:
    return st.builds(
        lambda t, e, m: ast.Assignment(span=SPAN, target=t, expr=e, modifier=m),
        paths(), expressions() if exprs is None else exprs, st.sampled_from((None, "required", "keep", "once")),
    )


def _setting(values: st.SearchStrategy[str | int]) -> st.SearchStrategy[ast.Setting]:
    return values.map(lambda v: ast.Setting(span=SPAN, value=v))


def _optional(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(st.none(), strategy)


def _on_delete(any_words: bool) -> st.SearchStrategy[ast.OnDelete]:
    actions = names() if any_words else st.sampled_from(DELETE_ACTIONS)
    simple = actions.filter(lambda a: a != "set").map(lambda a: ast.OnDelete(span=SPAN, action=a))
    setter = st.lists(assignments(expressions(max_leaves=3)), max_size=3).map(
        lambda a: ast.OnDelete(span=SPAN, action="set", assignments=tuple(a)))
    return st.one_of(simple, setter)


def flows(*, any_words: bool = False, max_assignments: int = 6) -> st.SearchStrategy[ast.Flow]:
    """Flows with any subset of clauses (each present or absent) and 0..``max_assignments`` map lines."""
    modes = names() if any_words else st.sampled_from(MODES)
    filtered = names() if any_words else st.sampled_from(FILTERED_ACTIONS)
    max_deletes = st.builds(lambda v, p: ast.MaxDeletes(span=SPAN, value=v, percent=p),
                            st.one_of(st.integers(0, 10_000).map(float), _finite.map(abs)), st.booleans())
    return st.builds(
        lambda name, src, tgt, key, mode, on_delete, where, on_filtered, batch, maxd, assigned: ast.Flow(
            span=SPAN, name=name, name_span=SPAN, source=src, target=tgt, key=key, mode=mode,
            on_delete=on_delete, where=where, on_filtered=on_filtered, batch=batch, max_deletes=maxd,
            assignments=tuple(assigned)),
        names(),
        _optional(table_refs()),
        _optional(table_refs()),
        _optional(st.builds(lambda s, t: ast.KeyClause(span=SPAN, source=s, target=t), paths(), paths())),
        _optional(_setting(modes)),
        _optional(_on_delete(any_words)),
        _optional(expressions()),
        _optional(_setting(filtered)),
        _optional(_setting(st.integers(0, 100_000))),
        _optional(max_deletes),
        st.lists(assignments(), max_size=max_assignments),
    )


def replaces() -> st.SearchStrategy[ast.Replace]:
    case = st.builds(lambda m, r: ast.ReplaceCase(span=SPAN, match=m, result=r),
                     match_literals(), expressions(max_leaves=4))
    return st.builds(
        lambda n, cases, default: ast.Replace(span=SPAN, name=n, name_span=SPAN, cases=tuple(cases), default=default),
        names(), st.lists(case, max_size=5), _optional(expressions(max_leaves=4)),
    )


def optouts(*, any_words: bool = False) -> st.SearchStrategy[ast.OptOut]:
    directions = words() if any_words else st.sampled_from(DIRECTIONS)
    conflicts = words() if any_words else st.sampled_from(CONFLICTS)
    return st.builds(
        lambda n, d, c, direction, conflict, via: ast.OptOut(
            span=SPAN, name=n, name_span=SPAN, d365=d, campaign=c, direction=direction, conflict=conflict, via=via),
        names(), field_refs("d365"), field_refs("campaign"),
        _optional(_setting(directions)), _optional(_setting(conflicts)), _optional(_setting(names())),
    )


def imports() -> st.SearchStrategy[ast.Import]:
    path = st.one_of(st.sampled_from(("replacements.map", "shared/values.map")), st.text(max_size=20))
    return path.map(lambda p: ast.Import(span=SPAN, path=p))


def declarations(*, any_words: bool = False) -> st.SearchStrategy[ast.Decl]:
    return st.one_of(flows(any_words=any_words), replaces(), optouts(any_words=any_words), imports())


def modules(*, max_decls: int = 4, any_words: bool = False) -> st.SearchStrategy[ast.Module]:
    return st.lists(declarations(any_words=any_words), max_size=max_decls).map(
        lambda d: ast.Module(span=SPAN, file="<generated>", decls=tuple(d)))
