"""The parser: every construct of the language, operator precedence, spans, friendly syntax errors,
and bad input of every kind (random text and bytes, 1 MB of garbage, mutated shipped mappings) giving
diagnostics or success, never an exception.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl.checker import check
from mapsync.dsl.diagnostics import Diagnostic, render_json, render_text
from mapsync.dsl.parser import MAX_DEPTH, parse, parse_file
from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog

ROOT = Path(__file__).resolve().parent.parent.parent
SHIPPED = sorted((ROOT / "mappings").glob("*.map"))

EVERYTHING = r'''# every construct of the language in one file
import "shared.map"

flow contacts {
  from d365.contact
  to   campaign.profile
  key  contactid -> externalId   # source key -> target field
  mode mirror
  on delete: set(blackList = true, cusSource = "deleted",)
  where statecode == 0 and emailaddress1 != null
  on filtered: delete
  batch 500
  max deletes 5%

  map {
    email         = lower(trim(emailaddress1))  required
    firstName     = truncate(firstname, 30)
    location.city = address1_city               keep
    cusSource     = "dynamics365"               once
    cusFullName   = firstname & " " & lastname
    mobilePhone   = mobilephone ?? telephone1
    cusJobTitle   = if(jobtitle is not null, jobtitle, "none")
  }
  map {
    birthDate = birthdate
  }
}

flow events {
  from campaign.events.click
  to   d365.acs_emailclick
  key  id -> acs_eventid
  mode create
  on delete: ignore
  max deletes 200
  map {
    subject = "Clicked: \"" & delivery.deliveryName & "\"\n"
  }
}

replace genders {
  1 => "male"
  -2 => "female"
  3.5 => null
  "x" => 1
  true => @2024-01-31
  else => @2024-01-31T10:00:00Z
}

optout email {
  d365.contact.donotbulkemail <-> campaign.profile.blackListEmail
  direction both
  conflict  latest-wins
  via       contacts
}
'''


def ok(text: str) -> ast.Module:
    result = parse(text, "t.map")
    assert result.diagnostics == (), [d.headline() for d in result.diagnostics]
    return result.module


def where(expr: str) -> ast.Expr:
    flow = ok(f"flow f {{ where {expr} }}").decls[0]
    assert isinstance(flow, ast.Flow) and flow.where is not None
    return flow.where


# Spans take no part in equality, so expected trees get the unknown span wherever one is needed.
S = ast.Span.unknown()


def n(cls: type, **fields: object) -> Any:
    for f in dataclasses.fields(cls):
        if f.name.endswith("span"):
            fields.setdefault(f.name, S)
    return cls(**fields)


def P(dotted: str) -> ast.Path:
    return n(ast.Path, parts=tuple(dotted.split(".")))


def B(op: str, left: ast.Expr, right: ast.Expr) -> ast.Binary:
    return n(ast.Binary, op=op, left=left, right=right)  # type: ignore[arg-type]


def N(value: int) -> ast.Literal:
    return n(ast.Literal, kind="int", value=value)


a, b, c = P("a"), P("b"), P("c")


# --------------------------------------------------------------------------------------- constructs


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_mapping_parses(path: Path) -> None:
    result, _ = parse_file(path)
    assert result.diagnostics == ()
    assert result.module.decls


def test_every_construct() -> None:
    module = ok(EVERYTHING)
    imp, contacts, events, genders, email = module.decls
    assert imp == n(ast.Import, path="shared.map")
    assert isinstance(contacts, ast.Flow)
    assert contacts.source == n(ast.TableRef, system="d365", name="contact")
    assert contacts.target == n(ast.TableRef, system="campaign", name="profile")
    assert contacts.key == n(ast.KeyClause, source=P("contactid"), target=P("externalId"))
    assert contacts.mode == n(ast.Setting, value="mirror")
    assert contacts.on_delete is not None and contacts.on_delete.action == "set"
    assert [x.target.dotted for x in contacts.on_delete.assignments] == ["blackList", "cusSource"]
    assert contacts.on_filtered == n(ast.Setting, value="delete")
    assert contacts.batch == n(ast.Setting, value=500)
    assert contacts.max_deletes == n(ast.MaxDeletes, value=5, percent=True)
    assert [x.modifier for x in contacts.assignments] == ["required", None, "keep", "once", None, None, None, None]
    assert contacts.assignments[2].target == P("location.city")
    assert contacts.assignments[-1].target == P("birthDate")  # a second map block adds to the first
    assert isinstance(events, ast.Flow)
    assert events.source == n(ast.TableRef, system="campaign", name="events.click")
    assert events.max_deletes == n(ast.MaxDeletes, value=200, percent=False)
    assert events.on_delete == n(ast.OnDelete, action="ignore")
    subject = events.assignments[0].expr
    assert isinstance(subject, ast.Binary) and subject.right == n(ast.Literal, kind="text", value='"\n')
    assert isinstance(genders, ast.Replace)
    assert [(x.match.kind, x.match.value) for x in genders.cases] == [
        ("int", 1), ("int", -2), ("number", 3.5), ("text", "x"), ("bool", True)]
    assert genders.cases[4].result == n(ast.Literal, kind="date", value=dt.date(2024, 1, 31))
    assert genders.default == n(ast.Literal, kind="datetime", value=dt.datetime(2024, 1, 31, 10, tzinfo=dt.UTC))
    assert email == n(ast.OptOut,
        name="email",
        d365=n(ast.FieldRef, table=n(ast.TableRef, system="d365", name="contact"), field="donotbulkemail"),
        campaign=n(ast.FieldRef, table=n(ast.TableRef, system="campaign", name="profile"), field="blackListEmail"),
        direction=n(ast.Setting, value="both"), conflict=n(ast.Setting, value="latest-wins"),
        via=n(ast.Setting, value="contacts"))
    assert [c.text for c in module.comments] == [
        "# every construct of the language in one file", "# source key -> target field"]


@pytest.mark.parametrize("text", ["mode = key", "delete = set(map)", "to = from.where", "batch = max(on, filtered)"])
def test_keywords_stay_usable_as_field_names(text: str) -> None:
    # The contextual lexer reads a keyword as a name where no keyword fits (here: the first map line).
    flow = ok(f"flow f {{ map {{ {text} }} }}").decls[0]
    assert isinstance(flow, ast.Flow)
    assert flow.assignments[0].target.dotted == text.split(" ")[0]


def test_literals() -> None:
    assert where("x == 3.25") == B("==", P("x"), n(ast.Literal, kind="number", value=3.25))
    assert where("x == @2024-02-29T23:59:59+02:00") == B("==", P("x"), n(ast.Literal,
        kind="datetime", value=dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))))
    assert where('x == "a\\u00e9\\t"') == B("==", P("x"), n(ast.Literal, kind="text", value="aé\t"))
    assert where("x == true or x == false or x == null") == B("or", B("or",
        B("==", P("x"), n(ast.Literal, kind="bool", value=True)),
        B("==", P("x"), n(ast.Literal, kind="bool", value=False))),
        B("==", P("x"), n(ast.Literal, kind="null", value=None)))


# --------------------------------------------------------------------------------------- precedence

PRECEDENCE = [
    ("a or b and c", B("or", a, B("and", b, c))),
    ("a and b or c", B("or", B("and", a, b), c)),
    ("not a and b", B("and", n(ast.Unary, op="not", operand=a), b)),
    ("not a == b", n(ast.Unary, op="not", operand=B("==", a, b))),
    ("a == b ?? c", B("==", a, B("??", b, c))),
    ("a ?? b ?? c", B("??", a, B("??", b, c))),
    ("a ?? b & c", B("??", a, B("&", b, c))),
    ("a & b & c", B("&", B("&", a, b), c)),
    ("a & b + c", B("&", a, B("+", b, c))),
    ("a + b * c", B("+", a, B("*", b, c))),
    ("a - b - c", B("-", B("-", a, b), c)),
    ("a / b * c", B("*", B("/", a, b), c)),
    ("-a * b", B("*", n(ast.Unary, op="-", operand=a), b)),
    ("(a or b) and c", B("and", B("or", a, b), c)),
    ("a + b in (1, 2)", n(ast.InList, operand=B("+", a, b), items=(N(1), N(2)))),
    ("a not in (1,) or b", B("or", n(ast.InList, operand=a, items=(N(1),), negated=True), b)),
    ("a ?? b is null", n(ast.IsNull, operand=B("??", a, b))),
    ("not a is not null", n(ast.Unary, op="not", operand=n(ast.IsNull, operand=a, negated=True))),
    ("f(a, b + c,) <= 2", B("<=", n(ast.Call, name="f", args=(a, B("+", b, c))), N(2))),
    ("a.b.c >= -1", B(">=", P("a.b.c"), n(ast.Unary, op="-", operand=N(1)))),
    ("a-2", B("-", a, N(2))),
    ("a -2 * b", B("-", a, B("*", N(2), b))),
    ("f(a)-1 > (b)-2", B(">", B("-", n(ast.Call, name="f", args=(a,)), N(1)), B("-", b, N(2)))),
    ("1-1 == -1", B("==", B("-", N(1), N(1)), n(ast.Unary, op="-", operand=N(1)))),
    ('"x"-1', B("-", n(ast.Literal, kind="text", value="x"), N(1))),
]


@pytest.mark.parametrize(("text", "tree"), PRECEDENCE, ids=[t for t, _ in PRECEDENCE])
def test_precedence(text: str, tree: ast.Expr) -> None:
    assert where(text) == tree


def test_a_minus_glued_to_a_number_subtracts_on_its_operands_line() -> None:
    text = "flow f { where a-2.5 > 0 }"
    flow = ok(text).decls[0]
    assert isinstance(flow, ast.Flow) and isinstance(flow.where, ast.Binary)
    minus = flow.where.left
    assert isinstance(minus, ast.Binary) and minus.op == "-"
    assert text[minus.right.span.start:minus.right.span.end] == "2.5"
    assert text[minus.span.start:minus.span.end] == "a-2.5"
    # At the start of a line, `-1` is the next replacement case, as before.
    (replace,) = ok('replace r {\n  1 => "a"\n  -1 => "b"\n}').decls
    assert isinstance(replace, ast.Replace)
    assert [c.match.value for c in replace.cases] == [1, -1]


def test_a_negative_number_where_subtraction_was_meant_says_how_to_subtract() -> None:
    (line_start,) = parse("flow f { where a\n  -2 > 0 }", "t.map").diagnostics
    assert "found `-2`" in line_start.message and line_start.hint is not None and "`- 2`" in line_start.hint
    (one_line,) = parse('replace r { 1 => "a" -1 => "b" }', "t.map").diagnostics
    assert one_line.hint is not None and "own line" in one_line.hint


# ------------------------------------------------------------------------------------------- spans


def test_spans() -> None:
    text = "flow contacts {\n  map {\n    email = lower(emailaddress1)  required\n  }\n}\n"
    flow = ok(text).decls[0]
    assert isinstance(flow, ast.Flow)
    assert (flow.span.line, flow.span.col, flow.span.end_line) == (1, 1, 5)
    assert (flow.name_span.line, flow.name_span.col, flow.name_span.end_col) == (1, 6, 14)
    (assign,) = flow.assignments
    assert (assign.span.line, assign.span.col, assign.span.end_col) == (3, 5, 43)
    assert (assign.target.span.col, assign.target.span.end_col) == (5, 10)
    call = assign.expr
    assert isinstance(call, ast.Call)
    assert (call.span.col, call.span.end_col) == (13, 33)
    assert (call.name_span.col, call.name_span.end_col) == (13, 18)
    assert text[call.args[0].span.start:call.args[0].span.end] == "emailaddress1"
    assert all(s.file == "t.map" for s in (flow.span, assign.span, call.span))


# ----------------------------------------------------------------------------------- syntax errors

FLOW = "flow contacts {{\n  from d365.contact\n  map {{\n    {line}\n  }}\n}}\n"
SYNTAX = [
    ("email lower(emailaddress1)", "E001", 4, 11, "expected `=` after target field `email`"),
    ("location.city address1_city", "E001", 4, 19, "expected `=` after target field `location.city`"),
    ("email = 'x'", "E002", 4, 13, "unexpected character `'`"),
    ("email = a && b", "E001", 4, 16, "expected one of `(`, `-`, `false`, `null`, `true`, a date, ... after `&`, "
                                      "found `&`"),
    ("email = lower(x", "E001", 5, 3, "expected `)` or `,` after `x`, found `}`"),
    ("email = x =", "E001", 4, 15, "`=` is not a comparison after `x`"),
]


@pytest.mark.parametrize(("line", "code", "lineno", "col", "message"), SYNTAX, ids=[s[0] for s in SYNTAX])
def test_friendly_syntax_errors(line: str, code: str, lineno: int, col: int, message: str) -> None:
    (d,) = parse(FLOW.format(line=line), "t.map").diagnostics
    assert (d.code, d.span.line, d.span.col, d.message) == (code, lineno, col, message)


def test_hints() -> None:
    (d,) = parse(FLOW.format(line="email = 'x'"), "t.map").diagnostics
    assert d.hint == 'text literals use double quotes: "like this"'
    (d,) = parse(FLOW.format(line="email = a && b"), "t.map").diagnostics
    assert d.hint == "use `and` / `or`"
    (d,) = parse("flow f { where a = 1 }", "t.map").diagnostics
    assert d.hint == "compare with `==`; `=` assigns a target field inside `map { }`"


def test_end_of_file() -> None:
    (d,) = parse("flow f {\n  from d365.contact\n", "t.map").diagnostics
    assert d.code == "E003"
    assert d.message.startswith("the file ends too early: expected ")


def test_every_broken_declaration_is_reported() -> None:
    text = "flow a {\n  map { x lower(y) }\n}\nreplace r {\n  1 => \n}\nflow ok {\n}\nflow b { from }\n"
    result = parse(text, "t.map")
    assert [(d.code, d.span.line) for d in result.diagnostics] == [("E001", 2), ("E001", 6), ("E001", 9)]
    assert [d.name for d in result.module.decls] == ["ok"]  # type: ignore[union-attr]


def test_invalid_literals() -> None:
    result = parse('flow f { where a == "\\q" or b == @2024-02-30 }', "t.map")
    assert [d.code for d in result.diagnostics] == ["E006", "E006"]


def test_clause_given_twice() -> None:
    result = parse("flow f {\n mode upsert\n mode create\n}\noptout o { a.b.c <-> d.e.f via x via y }", "t.map")
    assert [(d.code, d.span.line) for d in result.diagnostics] == [("E007", 3), ("E007", 5)]


@pytest.mark.parametrize("text", [
    "flow f { where " + "not " * 5000 + "x }",
    "flow f { where " + "- " * 5000 + "x }",
    "flow f { where " + "f(" * 5000 + "x" + ")" * 5000 + " }",
    "flow f { where " + "(" * 5000 + "x" + ")" * 5000 + " }",
    "flow f { where " + " ?? ".join(["x"] * 5000) + " }",
])
def test_deep_nesting_is_refused_not_crashed(text: str) -> None:
    result = parse(text, "t.map")
    assert all(isinstance(d, Diagnostic) for d in result.diagnostics)
    assert result.ok or {d.code for d in result.diagnostics} == {"E005"}
    if result.ok:  # parentheses alone add no depth; the tree must still be shallow enough to walk
        assert _depth(result.module) <= MAX_DEPTH + 5


def _depth(node: object) -> int:
    stack, best = [(node, 1)], 0
    while stack:
        current, d = stack.pop()
        best = max(best, d)
        for value in getattr(current, "__dataclass_fields__", {}):
            child = getattr(current, value)
            children = child if isinstance(child, tuple) else (child,)
            stack.extend((x, d + 1) for x in children if hasattr(x, "__dataclass_fields__"))
    return best


# ------------------------------------------------------------------------------------------ bad input


def front_end(text: str | bytes, *, extra: dict[str, str] | None = None) -> list[Diagnostic]:
    """Everything `mapsync validate` does with a file: read, parse, load imports, check, render."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, content in (extra or {}).items():
            (folder / name).write_text(content, encoding="utf-8")
        path = folder / "input.map"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
        project, diags = load_project([path])
        diags = [*diags, *check(project, load_catalog())]
        render_text(diags, project.sources)
        render_json(diags)
    for d in diags:
        assert isinstance(d, Diagnostic)
        assert d.span.line >= 1 and d.span.col >= 1
    return diags


@settings(max_examples=200)
@given(st.text(max_size=3000))
def test_random_text(text: str) -> None:
    result = parse(text, "t.map")
    assert all(isinstance(d, Diagnostic) for d in result.diagnostics)
    render_text(result.diagnostics, {"t.map": text})


@settings(max_examples=100)
@given(st.binary(max_size=3000))
def test_random_bytes(data: bytes) -> None:
    front_end(data)


ALPHABET = 'flowreplacemapkeyimport{}()=<->.,"#@&?!0123456789 \n\tabcdefxyz_\'\\%:'


@settings(max_examples=150)
@given(st.text(alphabet=ALPHABET, max_size=2000))
def test_random_text_made_of_the_languages_characters(text: str) -> None:
    front_end(text)


def test_a_megabyte_of_garbage() -> None:
    rng = random.Random(1234)
    pieces = ["flow", "{", "}", "map", "=", "(", ")", '"', "x", ".", "\n", "@2024-01-01", "#", "\x7f", "é", "->"]
    garbage = "".join(rng.choice(pieces) + rng.choice(" \n") for _ in range(350_000))
    assert len(garbage.encode()) >= 1 << 20
    front_end(garbage)
    front_end(bytes(rng.randrange(256) for _ in range(1 << 20)))
    front_end("flow f {\n  map {\n" + "    email = lower(emailaddress1)\n" * 5_000)  # no closing brace


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|@[0-9T:+\-.Z]+|[A-Za-z_][A-Za-z0-9_\-]*|\d+(?:\.\d+)?'
                    r"|<->|->|=>|==|!=|<=|>=|\?\?|#[^\n]*|\S")
SHIPPED_TEXT = {p.name: p.read_text(encoding="utf-8") for p in SHIPPED}


@settings(max_examples=250)
@given(st.sampled_from(sorted(SHIPPED_TEXT)), st.integers(min_value=0), st.sampled_from(["delete", "duplicate"]))
def test_shipped_mapping_with_a_token_deleted_or_duplicated(name: str, index: int, how: str) -> None:
    text = SHIPPED_TEXT[name]
    tokens = list(_TOKEN.finditer(text))
    tok = tokens[index % len(tokens)]
    replacement = "" if how == "delete" else tok.group() + " " + tok.group()
    mutated = text[: tok.start()] + replacement + text[tok.end():]
    others = {n: t for n, t in SHIPPED_TEXT.items() if n != name}
    front_end(mutated, extra=others)


def test_every_single_token_deletion_of_contacts_map() -> None:
    # Exhaustive for one file: every token, not a sample.
    text = SHIPPED_TEXT["contacts.map"]
    extra = {"replacements.map": SHIPPED_TEXT["replacements.map"]}
    for tok in _TOKEN.finditer(text):
        mutated = text[: tok.start()] + text[tok.end():]
        result = parse(mutated, "contacts.map")
        assert all(isinstance(d, Diagnostic) for d in result.diagnostics)
    front_end(text, extra=extra)


def test_clause_words_are_valid_target_fields_on_any_map_line() -> None:
    # LALR shares the state after an expression between `map` lines and flow clauses: the grammar must
    # take these words as targets itself, or `mode = 1` after another line reads as a `mode` clause.
    result = parse("flow a {\n  map {\n    m = x\n    mode = 1\n    key = 2\n    to.city = 3\n    where = 4\n  }\n}\n", "t.map")
    assert result.diagnostics == ()
    targets = [a.target.dotted for a in result.module.decls[0].assignments]
    assert targets == ["m", "mode", "key", "to.city", "where"]
