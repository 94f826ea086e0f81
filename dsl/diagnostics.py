"""Diagnostics: one problem in a mapping file, with a stable code, a span, and a way to show it.

Rendered for people as

    mappings/contacts.map:12:21: error[E103]: unknown field `emailadress1` on d365.contact
       |
    12 |     email = lower(emailadress1)
       |                   ^^^^^^^^^^^^
       = hint: did you mean `emailaddress1`?

and for machines (``--format json``) as a list of objects with the same content. Codes never change
meaning once released; tests assert on them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mapsync.dsl.ast import Span

__all__ = ["CODES", "Diagnostic", "Severity", "did_you_mean", "has_errors", "render_json", "render_text"]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


# code -> short title. Families: E0xx files and syntax, E1xx names, E2xx types, E3xx structure, W warnings.
CODES: dict[str, str] = {
    "E001": "syntax error",
    "E002": "unexpected character",
    "E003": "unexpected end of file",
    "E004": "file cannot be read as UTF-8 text",
    "E005": "nested too deeply",
    "E006": "invalid literal",
    "E007": "clause given twice",
    "E008": "missing clause",
    "E009": "imported file not found",
    "E010": "import cycle",
    "E011": "import outside the mapping folder",
    "E101": "unknown system",
    "E102": "unknown table or resource",
    "E103": "unknown source field",
    "E104": "unknown target field",
    "E105": "unknown function or replacement",
    "E106": "wrong number of arguments",
    "E107": "unknown flow",
    "E108": "link cycle",
    "E109": "name declared twice",
    "E110": "target field assigned twice",
    "E111": "unknown key field",
    "E112": "invalid clause value",
    "E113": "read-only target field",
    "E201": "type mismatch",
    "E202": "incompatible comparison",
    "E203": "operator on the wrong type",
    "E204": "label() needs an option-set field",
    "E205": "replacement values of mixed types",
    "E206": "value not allowed by the target field",
    "E301": "invalid flow direction",
    "E302": "invalid opt-out rule",
    "W101": "source may be longer than target",
    "W102": "replacement does not cover every option",
    "W103": "unused replacement",
    "W104": "value can never match",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span
    hint: str | None = None

    @staticmethod
    def error(code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
        return Diagnostic(code, Severity.ERROR, message, span, hint)

    @staticmethod
    def warning(code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
        return Diagnostic(code, Severity.WARNING, message, span, hint)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def headline(self) -> str:
        return f"{self.span.file}:{self.span.line}:{self.span.col}: {self.severity.value}[{self.code}]: {self.message}"

    def to_dict(self) -> dict[str, object]:
        s = self.span
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
            "file": s.file,
            "line": s.line,
            "column": s.col,
            "end_line": s.end_line,
            "end_column": s.end_col,
        }


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate as a hint, or None. Case-insensitive, so `EmailAddress1` finds `emailaddress1`."""
    pool = list(candidates)
    lowered = {c.lower(): c for c in pool}
    if name.lower() in lowered:
        return f"did you mean `{lowered[name.lower()]}`?"
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean `{lowered[match[0]]}`?" if match else None


def _sorted(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diagnostics, key=lambda d: (d.span.file, d.span.line, d.span.col, d.code))


def render_text(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> str:
    """Human rendering: headline, the source line, a caret run under the span, and the hint."""
    blocks: list[str] = []
    for diag in _sorted(diagnostics):
        lines = [diag.headline()]
        text = sources.get(diag.span.file)
        if text is not None:
            lines.extend(_excerpt(diag.span, text))
        if diag.hint:
            pad = " " * (len(str(diag.span.line)) + 1)
            lines.append(f"{pad}= hint: {diag.hint}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks) + ("\n" if blocks else "")


def _excerpt(span: Span, text: str) -> list[str]:
    source_lines = text.splitlines()
    if not 1 <= span.line <= len(source_lines):
        return []
    raw = source_lines[span.line - 1]
    shown = raw.expandtabs(4) if "\t" not in raw else raw.replace("\t", " ")
    if len(shown) > 200:  # a minified or garbage line: show the window around the column
        lo = max(0, span.col - 80)
        shown = shown[lo : lo + 160]
        col = span.col - lo
    else:
        col = span.col
    end = span.end_col if span.end_line == span.line and span.end_col > span.col else col + 1
    width = max(1, min(end - span.col, len(shown) - col + 1)) if span.end_line == span.line else max(1, len(shown) - col + 1)
    number = str(span.line)
    gutter = " " * len(number)
    printable = "".join(ch if ch.isprintable() else "\ufffd" for ch in shown)
    return [f"{gutter} |", f"{number} | {printable}", f"{gutter} | {' ' * (col - 1)}{'^' * width}"]


def render_json(diagnostics: Sequence[Diagnostic]) -> str:
    return json.dumps([d.to_dict() for d in _sorted(diagnostics)], indent=2, ensure_ascii=False)
