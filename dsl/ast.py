"""The syntax tree of a `.map` file: frozen dataclasses, every node with its source span.

Spans are excluded from equality (``field(compare=False)``): two trees are equal when they say the
same thing, wherever it was written. That is what the formatter's round-trip property relies on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal as Lit
from typing import TypeAlias

__all__ = [
    "Assignment",
    "Binary",
    "Call",
    "Comment",
    "Decl",
    "Expr",
    "FieldRef",
    "Flow",
    "Import",
    "InList",
    "IsNull",
    "KeyClause",
    "Literal",
    "LiteralValue",
    "MaxDeletes",
    "Module",
    "OnDelete",
    "OptOut",
    "Path",
    "Replace",
    "ReplaceCase",
    "Setting",
    "Span",
    "TableRef",
    "Unary",
    "walk_expr",
]


@dataclass(frozen=True, slots=True)
class Span:
    """Where a node was written: 1-based line and column, end exclusive; ``start``/``end`` are offsets."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    start: int
    end: int

    @staticmethod
    def unknown(file: str = "<unknown>") -> Span:
        return Span(file, 1, 1, 1, 1, 0, 0)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def _span() -> Span:
    # Spans say where, not what: they take no part in equality, hashing or repr.
    return field(compare=False, repr=False)


# ---------------------------------------------------------------------------------------------- expressions

LiteralValue: TypeAlias = str | int | float | bool | dt.date | dt.datetime | None
LiteralKind: TypeAlias = Lit["text", "int", "number", "bool", "null", "date", "datetime"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Literal:
    span: Span = _span()
    kind: LiteralKind = "null"
    value: LiteralValue = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Path:
    """A dotted field path: ``emailaddress1``, ``location.city``, ``profile.externalId``."""

    span: Span = _span()
    parts: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


UnaryOp: TypeAlias = Lit["not", "-"]
BinaryOp: TypeAlias = Lit["or", "and", "==", "!=", "<", "<=", ">", ">=", "??", "&", "+", "-", "*", "/"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Unary:
    span: Span = _span()
    op: UnaryOp = "not"
    operand: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Binary:
    span: Span = _span()
    op: BinaryOp = "and"
    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class InList:
    """``x in ("a", "b")`` or ``x not in (...)``."""

    span: Span = _span()
    operand: Expr
    items: tuple[Expr, ...] = ()
    negated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class IsNull:
    """``x is null`` or ``x is not null``."""

    span: Span = _span()
    operand: Expr
    negated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """A function call, or a replacement used like a function: ``genders(gendercode)``."""

    span: Span = _span()
    name: str = ""
    args: tuple[Expr, ...] = ()
    name_span: Span = _span()


Expr: TypeAlias = Literal | Path | Unary | Binary | InList | IsNull | Call


def walk_expr(expr: Expr | None) -> Iterator[Expr]:
    """Every expression inside ``expr`` (itself included), parents before children, without recursion."""
    stack: list[Expr] = [expr] if expr is not None else []
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Call):
            stack.extend(reversed(node.args))
        elif isinstance(node, Binary):
            stack.extend((node.right, node.left))
        elif isinstance(node, Unary | IsNull):
            stack.append(node.operand)
        elif isinstance(node, InList):
            stack.extend((*reversed(node.items), node.operand))


# ---------------------------------------------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True, kw_only=True)
class TableRef:
    """``d365.contact``, ``campaign.profile``, ``campaign.events.click``: a system and a table in it."""

    span: Span = _span()
    system: str = ""
    name: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.system}.{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldRef:
    """``d365.contact.donotbulkemail``: a table and one of its fields (opt-out rules)."""

    span: Span = _span()
    table: TableRef
    field: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyClause:
    """``key contactid -> externalId``: the source key and the target field that keeps it."""

    span: Span = _span()
    source: Path
    target: Path


Modifier: TypeAlias = Lit["required", "keep", "once"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """One line of a ``map`` block: ``target = expr [required|keep|once]``."""

    span: Span = _span()
    target: Path
    expr: Expr
    modifier: Modifier | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OnDelete:
    """``on delete: ignore | delete | set(blackList = true, ...)``."""

    span: Span = _span()
    action: Lit["ignore", "delete", "set"] = "ignore"
    assignments: tuple[Assignment, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MaxDeletes:
    """``max deletes 5%`` (share of the target's synced records) or ``max deletes 200`` (a count)."""

    span: Span = _span()
    value: float = 0
    percent: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """A one-word clause value with its own span: ``mode upsert``, ``on filtered: delete``, ``batch 500``."""

    span: Span = _span()
    value: str | int = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    span: Span = _span()
    name: str = ""
    source: TableRef | None = None
    target: TableRef | None = None
    key: KeyClause | None = None
    mode: Setting | None = None
    on_delete: OnDelete | None = None
    where: Expr | None = None
    on_filtered: Setting | None = None
    batch: Setting | None = None
    max_deletes: MaxDeletes | None = None
    assignments: tuple[Assignment, ...] = ()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplaceCase:
    span: Span = _span()
    match: Literal
    result: Expr


@dataclass(frozen=True, slots=True, kw_only=True)
class Replace:
    """``replace NAME { v => v ... else => v }``; without ``else`` an unmapped value rejects the record."""

    span: Span = _span()
    name: str = ""
    cases: tuple[ReplaceCase, ...] = ()
    default: Expr | None = None
    name_span: Span = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOut:
    """``optout NAME { d365.T.f <-> campaign.R.g  direction ...  conflict ...  [via FLOW] }``."""

    span: Span = _span()
    name: str = ""
    d365: FieldRef
    campaign: FieldRef
    direction: Setting | None = None
    conflict: Setting | None = None
    via: Setting | None = None
    name_span: Span = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Import:
    span: Span = _span()
    path: str = ""


Decl: TypeAlias = Flow | Replace | OptOut | Import


@dataclass(frozen=True, slots=True, kw_only=True)
class Comment:
    """A ``# ...`` comment; kept beside the tree so the formatter can put it back."""

    span: Span = _span()
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Module:
    """One `.map` file."""

    span: Span = _span()
    file: str = ""
    decls: tuple[Decl, ...] = ()
    comments: tuple[Comment, ...] = field(default=(), compare=False)
