"""The OData ``$filter`` language as Dataverse accepts it: a tokenizer, a recursive-descent parser into a
small frozen AST, a printer (AST -> text, so that parse(print(ast)) == ast), and a compiler from the AST
to a predicate over stored rows. Nothing is ever ``eval``-ed.

Grammar (precedence low to high: or, and, not, comparison)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | comparison
    comparison := operand (("eq"|"ne"|"gt"|"ge"|"lt"|"le") operand)?
    operand    := "(" expr ")" | function "(" args ")" | literal | property

Literals: ``'text'`` (``''`` is a quote), integers, decimals, ``true``/``false``, ``null``, GUIDs
(unquoted), dates ``2024-01-31`` and date-times ``2024-01-31T00:00:00Z``. String comparisons are
case-insensitive, as with Dataverse's SQL collation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "And", "Call", "Compare", "FilterSyntaxError", "Literal", "Node", "Not", "Or", "OrderBy", "Prop",
    "compile_filter", "format_datetime", "parse_filter", "parse_orderby", "to_text",
]

COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
FUNCTIONS = ("contains", "startswith", "endswith")
_OP_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
            "lt": "LessThan", "le": "LessThanOrEqual"}


class FilterSyntaxError(ValueError):
    """The text is not a valid filter; ``position`` is the 0-based offset, ``message`` OData's wording."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class FilterTypeError(ValueError):
    """The filter parses but names an unknown property or compares incompatible types."""

    def __init__(self, kind: str, **fields: Any) -> None:
        super().__init__(kind)
        self.kind = kind
        self.fields = fields


# -- AST ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    kind: str  # string | int | decimal | bool | null | guid | date | datetime
    value: Any


@dataclass(frozen=True, slots=True)
class Prop:
    name: str


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class And:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Or:
    left: Node
    right: Node


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


Node = Literal | Prop | Compare | Call | And | Or | Not


# -- tokenizer ------------------------------------------------------------------------------------

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2})"
_TOKEN = re.compile(
    rf"""
    (?P<ws>\s+)
  | (?P<guid>{_GUID})(?![0-9A-Za-z_])
  | (?P<datetime>{_DATETIME})
  | (?P<date>\d{{4}}-\d{{2}}-\d{{2}})(?![0-9A-Za-z_:])
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![A-Za-z_])
  | (?P<string>'(?:[^']|'')*')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] == "'":
                raise FilterSyntaxError(f"There is an unterminated string literal at position {pos} in '{text}'.", pos)
            raise FilterSyntaxError(f"Syntax error: character '{text[pos]}' is not valid at position {pos} in '{text}'.", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("eof", "", len(text)))
    return toks


# -- parser ---------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "ident" and tok.text == word:
            self.i += 1
            return True
        return False

    def error(self, what: str, tok: _Tok | None = None) -> FilterSyntaxError:
        tok = tok or self.peek()
        return FilterSyntaxError(f"{what} at position {tok.pos} in '{self.text}'.", tok.pos)

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise self.error("Expression expected")
        node = self.expr()
        if self.peek().kind != "eof":
            raise self.error("Syntax error")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > 100:  # the real service also caps nesting; keeps recursion bounded
            raise self.error("The recursion depth of the filter expression exceeded its limit")
        node = self.and_expr()
        while self.keyword("or"):
            node = Or(node, self.and_expr())
        self.depth -= 1
        return node

    def and_expr(self) -> Node:
        node = self.unary()
        while self.keyword("and"):
            node = And(node, self.unary())
        return node

    def unary(self) -> Node:
        if self.keyword("not"):
            self.depth += 1
            if self.depth > 100:
                raise self.error("The recursion depth of the filter expression exceeded its limit")
            node = Not(self.unary())
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        tok = self.peek()
        if tok.kind == "ident" and tok.text in COMPARISONS:
            self.take()
            return Compare(tok.text, left, self.operand())
        return left

    def operand(self) -> Node:
        tok = self.take()
        if tok.kind == "lparen":
            node = self.expr()
            if self.peek().kind != "rparen":
                raise self.error("')' or operator expected")
            self.take()
            return node
        if tok.kind == "string":
            return Literal("string", tok.text[1:-1].replace("''", "'"))
        if tok.kind == "guid":
            return Literal("guid", tok.text.lower())
        if tok.kind == "datetime":
            return Literal("datetime", _parse_datetime(tok, self))
        if tok.kind == "date":
            try:
                return Literal("date", date.fromisoformat(tok.text).isoformat())
            except ValueError:
                raise self.error(f"Unrecognized 'Edm.Date' literal '{tok.text}'", tok) from None
        if tok.kind == "number":
            if re.fullmatch(r"-?\d+", tok.text):
                return Literal("int", int(tok.text))
            try:
                return Literal("decimal", Decimal(tok.text))
            except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
                raise self.error("Syntax error", tok) from None
        if tok.kind == "ident":
            word = tok.text
            if word in ("true", "false"):
                return Literal("bool", word == "true")
            if word == "null":
                return Literal("null", None)
            if self.peek().kind == "lparen":
                if word not in FUNCTIONS:
                    raise self.error(f"An unknown function with name '{word}' was found", tok)
                self.take()
                args = [self.expr()]
                while self.peek().kind == "comma":
                    self.take()
                    args.append(self.expr())
                if self.peek().kind != "rparen":
                    raise self.error("')' or ',' expected")
                self.take()
                if len(args) != 2:
                    raise self.error(f"No function signature for the function with name '{word}' matches the "
                                     f"specified arguments", tok)
                return Call(word, tuple(args))
            if word in COMPARISONS or word in ("and", "or", "not"):
                raise self.error("Expression expected", tok)
            return Prop(word)
        if tok.kind == "eof":
            raise self.error("Expression expected", tok)
        raise self.error("Syntax error", tok)


def _parse_datetime(tok: _Tok, parser: _Parser) -> str:
    text = tok.text.replace("Z", "+00:00")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # Python keeps microseconds; Dataverse keeps seconds anyway
        text = text.replace(frac.group(0), "." + frac.group(1)[:6])
    try:
        return format_datetime(datetime.fromisoformat(text))
    except ValueError:
        raise parser.error(f"Unrecognized 'Edm.DateTimeOffset' literal '{tok.text}'", tok) from None


def format_datetime(value: datetime) -> str:
    """Dataverse's wire format for date-times: UTC, whole seconds, ``Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_filter(text: str) -> Node:
    """Parse a ``$filter`` value; raises ``FilterSyntaxError`` (with OData's message) on bad input."""
    return _Parser(text).parse()


# -- printer --------------------------------------------------------------------------------------


def to_text(node: Node) -> str:
    """Print an AST as filter text that parses back to the same AST."""
    match node:
        case Literal(kind="string", value=v):
            return "'" + str(v).replace("'", "''") + "'"
        case Literal(kind="bool", value=v):
            return "true" if v else "false"
        case Literal(kind="null"):
            return "null"
        case Literal(kind="decimal", value=v):
            text = format(v, "f")
            return text if "." in text else text + ".0"
        case Literal(value=v):
            return str(v)
        case Prop(name=n):
            return n
        case Compare(op=op, left=l, right=r):
            return f"{_wrap(l)} {op} {_wrap(r)}"
        case Call(func=f, args=args):
            return f"{f}(" + ",".join(to_text(a) for a in args) + ")"
        case And(left=l, right=r):
            return f"({to_text(l)}) and ({to_text(r)})"
        case Or(left=l, right=r):
            return f"({to_text(l)}) or ({to_text(r)})"
        case Not(operand=o):
            return f"not ({to_text(o)})"
    raise TypeError(f"not a filter node: {node!r}")


def _wrap(node: Node) -> str:
    return to_text(node) if isinstance(node, (Literal, Prop, Call)) else f"({to_text(node)})"


# -- $orderby -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderBy:
    name: str
    descending: bool = False


def parse_orderby(text: str) -> tuple[OrderBy, ...]:
    items = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise FilterSyntaxError(f"Syntax error at position {max(0, text.find(part))} in '{text}'.", 0)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", words[0]):
            raise FilterSyntaxError(f"Syntax error at position {max(0, text.find(part))} in '{text}'.", 0)
        items.append(OrderBy(words[0], len(words) == 2 and words[1] == "desc"))
    return tuple(items)


# -- compiler to a row predicate ------------------------------------------------------------------

_STRINGY = {"string", "memo", "enum", "multichoice"}
_NUMERIC = {"integer", "bigint", "decimal", "money", "double", "choice"}


def _edm_of_literal(lit: Literal) -> str:
    return {"string": "Edm.String", "int": "Edm.Int32", "decimal": "Edm.Decimal", "bool": "Edm.Boolean",
            "guid": "Edm.Guid", "date": "Edm.Date", "datetime": "Edm.DateTimeOffset"}.get(lit.kind, "null")


def _compatible(col_type: str, lit: Literal) -> bool:
    if lit.kind == "null":
        return True
    if col_type in _STRINGY:
        return lit.kind == "string"
    if col_type in _NUMERIC:
        return lit.kind in ("int", "decimal")
    if col_type == "boolean":
        return lit.kind == "bool"
    if col_type in ("guid", "lookup"):
        return lit.kind == "guid"
    if col_type in ("datetime", "date"):
        return lit.kind in ("datetime", "date")
    return False


def _norm_literal(col_type: str, lit: Literal) -> Any:
    """The literal in the form values are stored in, so that comparison is plain Python comparison."""
    if lit.kind == "null":
        return None
    if col_type in _STRINGY:
        return str(lit.value).casefold()
    if col_type == "datetime" and lit.kind == "date":
        return lit.value + "T00:00:00Z"
    if col_type == "date" and lit.kind == "datetime":
        return lit.value[:10]
    if lit.kind == "decimal":
        return float(lit.value)
    return lit.value


_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}

Row = Sequence[Any]
Predicate = Callable[[Row], bool]


def compile_filter(node: Node, columns: dict[str, tuple[int, str, str]], table: str) -> Predicate:
    """Turn an AST into ``predicate(row)``. ``columns`` maps wire name -> (index in row, column type, edm).

    Raises ``FilterTypeError`` for unknown properties and incompatible operand types.
    """

    def col(name: str) -> tuple[int, str, str]:
        found = columns.get(name)
        if found is None:
            raise FilterTypeError("no_property", name=name, table=table)
        return found

    def value_getter(n: Node) -> tuple[Callable[[Row], Any], str]:
        if isinstance(n, Prop):
            idx, ctype, _edm = col(n.name)
            if ctype in _STRINGY:
                return (lambda row: None if row[idx] is None else str(row[idx]).casefold()), ctype
            return (lambda row: row[idx]), ctype
        raise FilterTypeError("query_syntax", detail="A property was expected")

    def build(n: Node) -> Predicate:
        if isinstance(n, And):
            a, b = build(n.left), build(n.right)
            return lambda row: a(row) and b(row)
        if isinstance(n, Or):
            a, b = build(n.left), build(n.right)
            return lambda row: a(row) or b(row)
        if isinstance(n, Not):
            a = build(n.operand)
            return lambda row: not a(row)
        if isinstance(n, Prop):
            idx, ctype, edm = col(n.name)
            if ctype != "boolean":
                raise FilterTypeError("query_syntax",
                                      detail=f"The $filter expression must evaluate to a single boolean value; "
                                             f"'{n.name}' is of type '{edm}'.")
            return lambda row: row[idx] is True
        if isinstance(n, Literal):
            if n.kind != "bool":
                raise FilterTypeError("query_syntax",
                                      detail="The $filter expression must evaluate to a single boolean value.")
            value = bool(n.value)
            return lambda row: value
        if isinstance(n, Call):
            target, lit = n.args
            if not isinstance(target, Prop) or not isinstance(lit, Literal) or lit.kind != "string":
                raise FilterTypeError("query_syntax",
                                      detail=f"The function '{n.func}' expects a property and a string literal.")
            get, ctype = value_getter(target)
            if ctype not in _STRINGY:
                raise FilterTypeError("query_type", left=col(target.name)[2], right="Edm.String", op=n.func)
            needle = str(lit.value).casefold()
            method = {"contains": str.__contains__, "startswith": str.startswith, "endswith": str.endswith}[n.func]
            return lambda row: (v := get(row)) is not None and method(v, needle)
        if isinstance(n, Compare):
            return build_compare(n)
        raise TypeError(f"not a filter node: {n!r}")  # pragma: no cover

    def build_compare(n: Compare) -> Predicate:
        left, right, op = n.left, n.right, n.op
        if isinstance(left, Literal) and isinstance(right, Prop):  # 5 lt x  ==  x gt 5
            left, right = right, left
            op = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(op, op)
        if isinstance(left, Prop) and isinstance(right, Prop):  # column comparison
            ga, ta = value_getter(left)
            gb, tb = value_getter(right)
            if (ta in _STRINGY) != (tb in _STRINGY) or (ta in _NUMERIC) != (tb in _NUMERIC):
                raise FilterTypeError("query_type", left=col(left.name)[2], right=col(right.name)[2], op=_OP_KIND[op])
            fn = _PY_OPS[op]
            return lambda row: (a := ga(row)) is not None and (b := gb(row)) is not None and fn(a, b)
        if not (isinstance(left, Prop) and isinstance(right, Literal)):
            raise FilterTypeError("query_syntax",
                                  detail=f"The operator '{op}' needs a property on at least one side.")
        get, ctype = value_getter(left)
        if not _compatible(ctype, right):
            raise FilterTypeError("query_type", left=col(left.name)[2], right=_edm_of_literal(right), op=_OP_KIND[op])
        value = _norm_literal(ctype, right)
        if value is None:
            if op == "eq":
                return lambda row: get(row) is None
            if op == "ne":
                return lambda row: get(row) is not None
            return lambda row: False
        fn = _PY_OPS[op]
        if op == "ne":  # (assumed) like FetchXML's ne, a null column counts as "not equal"
            return lambda row: (v := get(row)) is None or v != value
        return lambda row: (v := get(row)) is not None and fn(v, value)

    return build(node)


def is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return bool(re.fullmatch(_GUID, text))
