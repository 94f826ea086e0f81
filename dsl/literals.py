"""Literal text of the mapping language, read and written in one place: string escapes and dates.

The parser (its AST builder, dsl/builder.py) reads literals with ``unescape`` and ``parse_datetime``;
the printer (dsl/formatter.py, which the compiler uses too) writes them with ``quote``. ``odata_quote``
writes a text value as an OData string literal for a ``$filter`` (dsl/pushdown.py, the connectors).
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from typing import TYPE_CHECKING

from mapsync.dsl.diagnostics import Diagnostic

if TYPE_CHECKING:
    from mapsync.dsl import ast

__all__ = ["odata_quote", "parse_datetime", "quote", "unescape"]

# The character after a backslash -> the character it stands for (plus \uXXXX).
_READ = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/"}
_WRITE = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
# Control characters, lone surrogates and line/paragraph separators are written as \uXXXX: they are
# invisible, break lines in editors, or cannot be stored as UTF-8. Every one of them is in the BMP.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_HEX = frozenset("0123456789abcdefABCDEF")


def quote(text: str) -> str:
    """``text`` as a mapping string literal that reads back as ``text``."""
    out = ['"']
    for ch in text:
        if ch in _WRITE:
            out.append(_WRITE[ch])
        elif unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def unescape(raw: str, span: ast.Span, diagnostics: list[Diagnostic]) -> str:
    """The value of string literal ``raw`` (quotes included); an unknown escape adds E006."""
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _READ:
            out.append(_READ[nxt])
            i += 2
        elif nxt == "u" and len(body) >= i + 6 and all(c in _HEX for c in body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            diagnostics.append(Diagnostic.error(
                "E006", f"unknown escape `\\{nxt}` in a text literal", span,
                'escapes are \\" \\\\ \\n \\t \\r and \\uXXXX'))
            out.append(nxt)
            i += 2
    return "".join(out)


def parse_datetime(
    raw: str, span: ast.Span, diagnostics: list[Diagnostic]
) -> tuple[ast.LiteralKind, dt.date | dt.datetime | None]:
    """The value of date literal ``raw`` (``@`` included); a date that does not exist adds E006."""
    body = raw[1:]
    try:
        if "T" not in body:
            return "date", dt.date.fromisoformat(body)
        value = dt.datetime.fromisoformat(body.replace("Z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return "datetime", value
    except ValueError:
        diagnostics.append(Diagnostic.error(
            "E006", f"`{raw}` is not a valid date", span, "dates are written @2024-01-31 or @2024-01-31T10:00:00Z"))
        return "null", None


def odata_quote(text: str) -> str:
    """``text`` as an OData string literal: single quotes, a quote inside doubled."""
    return "'" + text.replace("'", "''") + "'"
