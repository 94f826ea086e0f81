"""AST -> canonical `.map` text: the one layout `mapsync fmt` writes (rules in docs/formatting.md).

The formatter works in three steps:

1. *Layout*: each declaration becomes a tree of output lines (``_Line``) grouped into blocks and
   alignment groups, in canonical order. Every line remembers the source span it came from.
2. *Comments*: the parser hands comments over as a flat list with positions. Each comment is attached
   to a line by source offset alone, so it travels with its clause even when clauses are reordered:
   a comment after code on the same source line stays a trailing comment of that line; a comment on a
   line of its own (or inside a construct that spans lines) goes before the next line.
3. *Render*: alignment (``=`` in a map block, ``=>`` in a replace block, modifiers, trailing
   comments) is computed per group, then everything is joined.

Expressions are printed with the fewest parentheses the precedence table (dsl/operators.py) allows, on one
line. Literals are printed so that they parse back to the same value. The result is idempotent:
``format(parse(format(m))) == format(m)``, and ``parse(format(m)).module == m``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from mapsync.dsl import ast
from mapsync.dsl.errors import DslError
from mapsync.dsl.literals import quote
from mapsync.dsl.operators import BINARY, Level, operand_levels
from mapsync.dsl.parser import parse

__all__ = ["INDENT", "FormatError", "format_expr", "format_module", "format_text"]

INDENT = "  "
# Trailing comments sit this many spaces after the longest commented line of their group.
_COMMENT_GAP = 2
# Keywords whose values line up: `from`, `to   `, `key  `, `mode` in a flow; the opt-out clauses.
_FLOW_KEYWORD_WIDTH = 4
_OPTOUT_KEYWORD_WIDTH = len("direction")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*\Z")


class FormatError(DslError):
    """The tree cannot be written as text (an internal error: the parser never builds such a tree)."""


# ------------------------------------------------------------------------------------------ expressions

_OR, _NOT, _CMP, _COALESCE, _UNARY, _ATOM = Level.OR, Level.NOT, Level.CMP, Level.COALESCE, Level.UNARY, Level.ATOM


def format_expr(expr: ast.Expr) -> str:
    """One expression on one line, with minimal parentheses."""
    return _expr(expr)[0]


def _wrap(expr: ast.Expr, weakest: int) -> str:
    text, level = _expr(expr)
    return text if level >= weakest else f"({text})"


def _expr(expr: ast.Expr) -> tuple[str, int]:
    handler = _EXPR_HANDLERS.get(type(expr))
    if handler is None:
        raise FormatError(f"cannot format an expression of type {type(expr).__name__}")
    return handler(expr)


def _expr_literal(node: ast.Literal) -> tuple[str, int]:
    text = _literal(node)
    # A negative number is not a literal inside an expression: it reads back as unary minus.
    return (text, _UNARY) if text.startswith("-") else (text, _ATOM)


def _expr_path(node: ast.Path) -> tuple[str, int]:
    return _path(node), _ATOM


def _expr_unary(node: ast.Unary) -> tuple[str, int]:
    if node.op == "not":
        return f"not {_wrap(node.operand, _NOT)}", _NOT
    if node.op == "-":
        return f"-{_wrap(node.operand, _UNARY)}", _UNARY
    raise FormatError(f"unknown unary operator {node.op!r}")


def _expr_binary(node: ast.Binary) -> tuple[str, int]:
    if node.op not in BINARY:
        raise FormatError(f"unknown binary operator {node.op!r}")
    left, right = operand_levels(node.op)
    return f"{_wrap(node.left, left)} {node.op} {_wrap(node.right, right)}", BINARY[node.op]


def _expr_in(node: ast.InList) -> tuple[str, int]:
    if not node.items:
        raise FormatError("an `in` list needs at least one item")
    items = ", ".join(_wrap(item, _OR) for item in node.items)
    op = "not in" if node.negated else "in"
    return f"{_wrap(node.operand, _COALESCE)} {op} ({items})", _CMP


def _expr_is_null(node: ast.IsNull) -> tuple[str, int]:
    op = "is not null" if node.negated else "is null"
    return f"{_wrap(node.operand, _COALESCE)} {op}", _CMP


def _expr_call(node: ast.Call) -> tuple[str, int]:
    args = ", ".join(_wrap(arg, _OR) for arg in node.args)
    return f"{_name(node.name)}({args})", _ATOM


_EXPR_HANDLERS: dict[type, Callable[..., tuple[str, int]]] = {
    ast.Literal: _expr_literal,
    ast.Path: _expr_path,
    ast.Unary: _expr_unary,
    ast.Binary: _expr_binary,
    ast.InList: _expr_in,
    ast.IsNull: _expr_is_null,
    ast.Call: _expr_call,
}


# -------------------------------------------------------------------------------------------- literals

# float("1" + 309 zeros) is the smallest such text that reads back as infinity (a huge literal in a file).
_INFINITY_DIGITS = "1" + "0" * 309


def _decimal(value: float) -> str:
    """A float as plain decimal digits (the grammar has no exponent) that float() reads back exactly."""
    if math.isnan(value):
        raise FormatError("NaN has no literal")
    sign = "-" if math.copysign(1.0, value) < 0 and value != 0 else ""
    magnitude = abs(value)
    if math.isinf(magnitude):
        return sign + _INFINITY_DIGITS
    text = repr(magnitude)  # the shortest text that round-trips; may use an exponent
    if "e" in text:
        text = format(Decimal(text), "f")
    return sign + text


def _literal(node: ast.Literal) -> str:
    kind, value = node.kind, node.value
    if kind == "text" and isinstance(value, str):
        return quote(value)
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError as exc:  # over Python's int -> str digit limit
            raise FormatError("integer literal too long to print") from exc
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        text = _decimal(float(value))
        return text if "." in text else text + ".0"  # keep it a `number`, not an `int`
    if kind == "bool" and isinstance(value, bool):
        return "true" if value else "false"
    if kind == "null" and value is None:
        return "null"
    if kind == "datetime" and isinstance(value, dt.datetime):
        return "@" + _datetime(value)
    if kind == "date" and isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return f"@{value.year:04d}-{value.month:02d}-{value.day:02d}"
    raise FormatError(f"a {kind!r} literal cannot hold {value!r}")


def _datetime(value: dt.datetime) -> str:
    text = (f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
            f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset()
    if offset is None:  # naive: the parser reads a datetime without offset as UTC
        return text
    if not offset:
        return text + "Z"
    seconds = int(offset.total_seconds())
    if seconds % 60:
        raise FormatError("a UTC offset with seconds has no literal")
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    return text + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _name(name: str) -> str:
    if not _NAME.match(name):
        raise FormatError(f"{name!r} is not a name")
    return name


def _word(word: str) -> str:
    if not _WORD.match(word):
        raise FormatError(f"{word!r} is not a word")
    return word


def _path(node: ast.Path) -> str:
    if not node.parts:
        raise FormatError("an empty field path")
    return ".".join(_name(p) for p in node.parts)


def _table(node: ast.TableRef) -> str:
    parts = [node.system, *node.name.split(".")]
    if not 2 <= len(parts) <= 3:
        raise FormatError(f"{node.dotted!r} is not a table reference")
    return ".".join(_name(p) for p in parts)


def _field_ref(node: ast.FieldRef) -> str:
    return f"{_name(node.table.system)}.{_name(node.table.name)}.{_name(node.field)}"


# ------------------------------------------------------------------------------------------ line model


@dataclass(frozen=True, slots=True)
class _Anchor:
    """Where a line's content was in the source: offsets and lines of its first and last character."""

    start: int
    end: int
    line: int
    end_line: int


@dataclass(eq=False, slots=True)
class _Line:
    cells: tuple[str, ...]
    anchor: _Anchor | None = None
    leading: list[ast.Comment] = field(default_factory=list)
    trailing: ast.Comment | None = None


@dataclass(eq=False, slots=True)
class _Group:
    """Lines at one indent that align together; ``layout`` says how their cells are joined."""

    layout: str  # "plain" | "map" | "replace"
    lines: list[_Line]


@dataclass(eq=False, slots=True)
class _Block:
    """``header {`` parts (separated by one blank line) ``}``."""

    header: _Line
    parts: list[_Group | _Block]
    closer: _Line


def _anchor(span: ast.Span) -> _Anchor | None:
    # Nodes built in code (tests, strategies) carry Span.unknown(): they have no place in a source.
    if span.end <= span.start:
        return None
    return _Anchor(span.start, span.end, span.line, span.end_line)


def _between(first: ast.Span, last: ast.Span) -> _Anchor | None:
    a, b = _anchor(first), _anchor(last)
    if a is None or b is None:
        return None
    return _Anchor(a.start, b.end, a.line, b.end_line)


def _closer(span: ast.Span) -> _Line:
    """The `}` that ends a declaration: the last character of its span."""
    anchor = _anchor(span)
    if anchor is not None:
        anchor = _Anchor(anchor.end - 1, anchor.end, anchor.end_line, anchor.end_line)
    return _Line(("}",), anchor)


# ------------------------------------------------------------------------------------------ declarations


def _layout_decl(decl: ast.Decl, source: _Source | None) -> _Block | _Line:
    handler = _DECL_HANDLERS.get(type(decl))
    if handler is None:
        raise FormatError(f"cannot format a declaration of type {type(decl).__name__}")
    return handler(decl, source)


def _layout_import(node: ast.Import, source: _Source | None) -> _Line:
    return _Line((f"import {quote(node.path)}",), _anchor(node.span))


def _setting_line(keyword: str, width: int, setting: ast.Setting, value: str) -> _Line:
    return _Line((f"{keyword:<{width}} {value}",), _anchor(setting.span))


def _assignment_inline(node: ast.Assignment) -> str:
    text = f"{_path(node.target)} = {format_expr(node.expr)}"
    return f"{text} {node.modifier}" if node.modifier else text


def _on_delete(node: ast.OnDelete) -> str:
    if node.action == "set":
        return "set(" + ", ".join(_assignment_inline(a) for a in node.assignments) + ")"
    return _name(node.action)


def _max_deletes(node: ast.MaxDeletes) -> str:
    number = _decimal(float(node.value))
    if number.startswith("-"):
        raise FormatError("`max deletes` cannot be negative")
    number = number.removesuffix(".0")
    return f"max deletes {number}{'%' if node.percent else ''}"


def _layout_flow(node: ast.Flow, source: _Source | None) -> _Block:
    w = _FLOW_KEYWORD_WIDTH
    clauses: list[_Line] = []
    if node.source is not None:
        clauses.append(_Line((f"{'from':<{w}} {_table(node.source)}",), _anchor(node.source.span)))
    if node.target is not None:
        clauses.append(_Line((f"{'to':<{w}} {_table(node.target)}",), _anchor(node.target.span)))
    if node.key is not None:
        key = f"{'key':<{w}} {_path(node.key.source)} -> {_path(node.key.target)}"
        clauses.append(_Line((key,), _anchor(node.key.span)))
    if node.mode is not None:
        clauses.append(_setting_line("mode", w, node.mode, _name(str(node.mode.value))))
    if node.on_delete is not None:
        clauses.append(_Line((f"on delete: {_on_delete(node.on_delete)}",), _anchor(node.on_delete.span)))
    if node.where is not None:
        clauses.append(_Line((f"where {format_expr(node.where)}",), _anchor(node.where.span)))
    if node.on_filtered is not None:
        clauses.append(_setting_line("on filtered:", 0, node.on_filtered, _name(str(node.on_filtered.value))))
    if node.batch is not None:
        value = node.batch.value
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FormatError(f"`batch` needs a whole number, not {value!r}")
        clauses.append(_setting_line("batch", 0, node.batch, str(value)))
    if node.max_deletes is not None:
        clauses.append(_Line((_max_deletes(node.max_deletes),), _anchor(node.max_deletes.span)))

    parts: list[_Group | _Block] = []
    if clauses:
        parts.append(_Group("plain", clauses))
    if node.assignments:
        lines = [_Line((_path(a.target), format_expr(a.expr), a.modifier or ""), _anchor(a.span))
                 for a in node.assignments]
        header_anchor, closer_anchor = _map_braces(node, clauses, source)
        parts.append(_Block(_Line(("map {",), header_anchor), [_Group("map", lines)], _Line(("}",), closer_anchor)))
    header = _Line((f"flow {_name(node.name)} {{",), _between(node.span, node.name_span))
    return _Block(header, parts, _closer(node.span))


def _layout_replace(node: ast.Replace, source: _Source | None) -> _Block:
    lines = [_Line((_literal(c.match), format_expr(c.result)), _anchor(c.span)) for c in node.cases]
    if node.default is not None:
        lines.append(_Line(("else", format_expr(node.default)), _anchor(node.default.span)))
    header = _Line((f"replace {_name(node.name)} {{",), _between(node.span, node.name_span))
    return _Block(header, [_Group("replace", lines)] if lines else [], _closer(node.span))


def _layout_optout(node: ast.OptOut, source: _Source | None) -> _Block:
    w = _OPTOUT_KEYWORD_WIDTH
    lines = [_Line((f"{_field_ref(node.d365)} <-> {_field_ref(node.campaign)}",),
                   _between(node.d365.span, node.campaign.span))]
    if node.direction is not None:
        lines.append(_setting_line("direction", w, node.direction, _word(str(node.direction.value))))
    if node.conflict is not None:
        lines.append(_setting_line("conflict", w, node.conflict, _word(str(node.conflict.value))))
    if node.via is not None:
        lines.append(_setting_line("via", w, node.via, _name(str(node.via.value))))
    header = _Line((f"optout {_name(node.name)} {{",), _between(node.span, node.name_span))
    return _Block(header, [_Group("plain", lines)], _closer(node.span))


_DECL_HANDLERS: dict[type, Callable[..., _Block | _Line]] = {
    ast.Flow: _layout_flow,
    ast.Replace: _layout_replace,
    ast.OptOut: _layout_optout,
    ast.Import: _layout_import,
}


# ------------------------------------------------------------------------- the `map {` and `}` of a flow


@dataclass(frozen=True, slots=True)
class _Source:
    """The source text with its comments blanked out, for the few positions the AST does not keep."""

    text: str
    newlines: tuple[int, ...]  # offsets of every "\n", to turn an offset into a line number quickly

    @staticmethod
    def of(text: str, comments: Sequence[ast.Comment]) -> _Source:
        chars = list(text)
        for c in comments:
            for i in range(c.span.start, min(c.span.end, len(chars))):
                chars[i] = " "
        return _Source("".join(chars), tuple(i for i, ch in enumerate(text) if ch == "\n"))

    def anchor(self, start: int, end: int) -> _Anchor:
        line = bisect.bisect_left(self.newlines, start) + 1
        return _Anchor(start, end, line, bisect.bisect_left(self.newlines, end - 1) + 1)


_MAP_OPEN = re.compile(r"\bmap\s*\{")


def _map_braces(flow: ast.Flow, clauses: list[_Line], source: _Source | None) -> tuple[_Anchor | None, _Anchor | None]:
    """Find where the flow's `map {` and its `}` were: the AST keeps only the assignments' spans.

    Between the item before the first assignment and that assignment the text holds only keywords,
    punctuation and (blanked) comments, so a plain search is exact there. With several `map` blocks
    the first opening and the last closing brace stand for the merged block.
    """
    first, last = _anchor(flow.assignments[0].span), _anchor(flow.assignments[-1].span)
    header_end = _anchor(flow.name_span)
    if source is None or first is None or last is None or header_end is None:
        return None, None
    others = [c.anchor for c in clauses if c.anchor is not None] + [header_end]
    lower = max((a.end for a in others if a.end <= first.start), default=header_end.end)
    opening = None
    for match in _MAP_OPEN.finditer(source.text, lower, first.start):
        opening = source.anchor(match.start(), match.end())
    flow_end = flow.span.end - 1 if flow.span.end > flow.span.start else len(source.text)
    upper = min((a.start for a in others if a.start >= last.end), default=flow_end)
    brace = source.text.find("}", last.end, upper)
    closing = source.anchor(brace, brace + 1) if brace != -1 else None
    return opening, closing


# ------------------------------------------------------------------------------------------- comments


def _lines_of(item: _Block | _Group | _Line) -> list[_Line]:
    if isinstance(item, _Line):
        return [item]
    if isinstance(item, _Group):
        return list(item.lines)
    out = [item.header]
    for part in item.parts:
        out.extend(_lines_of(part))
    out.append(item.closer)
    return out


def _attach(lines: list[_Line], end_of_file: _Line, comments: Sequence[ast.Comment]) -> None:
    """Give each comment to the line it belongs to, by source position (see the module docstring)."""
    anchored = sorted((ln for ln in lines if ln.anchor is not None), key=lambda ln: ln.anchor.start)  # type: ignore[union-attr]
    starts = [ln.anchor.start for ln in anchored]  # type: ignore[union-attr]
    for comment in sorted(comments, key=lambda c: c.span.start):
        at = comment.span.start
        i = bisect.bisect_left(starts, at)
        before = anchored[i - 1] if i else None
        if before is not None and before.anchor is not None:
            if at < before.anchor.end:
                # Inside a construct written over several lines: keep it just above that line.
                before.leading.append(comment)
                continue
            if before.anchor.end_line == comment.span.line and before.trailing is None:
                before.trailing = comment
                continue
        (anchored[i] if i < len(anchored) else end_of_file).leading.append(comment)


# --------------------------------------------------------------------------------------------- render


def _codes(group: _Group) -> list[str]:
    cells = [line.cells for line in group.lines]
    if group.layout == "plain":
        return [c[0] for c in cells]
    if group.layout == "replace":
        width = max(len(c[0]) for c in cells)
        return [f"{c[0]:<{width}} => {c[1]}" for c in cells]
    if group.layout == "map":
        target = max(len(c[0]) for c in cells)
        # Modifiers line up after the longest expression that has one, not the longest of all.
        expr = max((len(c[1]) for c in cells if c[2]), default=0)
        return [f"{c[0]:<{target}} = {c[1]:<{expr}}  {c[2]}" if c[2] else f"{c[0]:<{target}} = {c[1]}"
                for c in cells]
    raise FormatError(f"unknown group layout {group.layout!r}")


def _render_lines(pairs: list[tuple[_Line, str]], indent: str, out: list[str]) -> None:
    """Lines that share one trailing-comment column: leading comments above, code, trailing comment."""
    commented = [len(code) for line, code in pairs if line.trailing is not None]
    column = max(commented, default=0) + _COMMENT_GAP
    for line, code in pairs:
        out.extend(indent + c.text for c in line.leading)
        if line.trailing is not None:
            code = f"{code:<{column}}{line.trailing.text}"
        out.append(indent + code)


def _render_block(block: _Block, depth: int, out: list[str]) -> None:
    indent, inner = INDENT * depth, INDENT * (depth + 1)
    header, closer = block.header, block.closer
    if not block.parts and not closer.leading and header.trailing is None:
        _render_lines([(header, header.cells[0] + "}")], indent, out)
        if closer.trailing is not None:
            out[-1] += " " * _COMMENT_GAP + closer.trailing.text
        return
    _render_lines([(header, header.cells[0])], indent, out)
    for n, part in enumerate(block.parts):
        if n:
            out.append("")
        if isinstance(part, _Block):
            _render_block(part, depth + 1, out)
        else:
            _render_lines(list(zip(part.lines, _codes(part), strict=True)), inner, out)
    out.extend(inner + c.text for c in closer.leading)
    _render_lines([(_Line(closer.cells, trailing=closer.trailing), "}")], indent, out)


def _render_top(line: _Line, first_line: int | None, out: list[str]) -> None:
    """Top-level comments keep one blank line where the source had one or more (file headers)."""
    previous: int | None = None
    for comment in line.leading:
        if previous is not None and comment.span.line > previous + 1:
            out.append("")
        out.append(comment.text)
        previous = comment.span.line
    if previous is not None and first_line is not None and first_line > previous + 1:
        out.append("")
    line.leading.clear()  # printed here, not again by the block


def format_module(
    module: ast.Module, comments: Sequence[ast.Comment] | None = None, *, source: str | None = None
) -> str:
    """The canonical text of ``module``. ``comments`` defaults to ``module.comments``.

    ``source`` is the text the module was parsed from; with it, comments written just before or
    after a flow's ``map { }`` block keep their place there (the AST has no span for that block).
    """
    comments = module.comments if comments is None else comments
    located = _Source.of(source, comments) if source is not None else None
    items = [_layout_decl(d, located) for d in module.decls]
    end_of_file = _Line(("",))
    _attach([ln for item in items for ln in _lines_of(item)], end_of_file, comments)

    out: list[str] = []
    previous: _Block | _Line | None = None
    for item in items:
        head = item.header if isinstance(item, _Block) else item
        both_imports = isinstance(item, _Line) and isinstance(previous, _Line)
        if previous is not None and not both_imports:
            out.append("")  # one blank line between declarations; imports stay together
        _render_top(head, head.anchor.line if head.anchor else None, out)
        if isinstance(item, _Block):
            _render_block(item, 0, out)
        else:
            _render_lines([(item, item.cells[0])], "", out)
        previous = item
    if end_of_file.leading:
        if out:
            out.append("")
        _render_top(end_of_file, None, out)
    return "\n".join(out) + "\n" if out else ""


def format_text(text: str, file: str = "<text>") -> str | None:
    """Parse and format ``text``; None when it does not parse (the diagnostics say why)."""
    result = parse(text, file)
    if not result.ok:
        return None
    return format_module(result.module, result.module.comments, source=text)
