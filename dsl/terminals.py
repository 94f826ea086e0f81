"""The lexical tables of grammar.lark, read from the grammar itself when this module is imported.

The hand-written fast path (dsl/_fastparse.py) tokenizes with these, so its tokens are the grammar's by
construction: the patterns of NAME, WORD, NUMBER, STRING, DATETIME and COMMENT, every keyword (a quoted
word anywhere in the grammar) and every symbol (a quoted punctuation string, including the alternatives
of CMP_OP, ADD_OP, MUL_OP and PERCENT). Only the grammar's text is read, not lark's analysis of it, so
importing this costs a file read and a few regular expressions.
"""

from __future__ import annotations

import re
from importlib.resources import files

__all__ = ["KEYWORDS", "PATTERNS", "SYMBOLS", "grammar_text", "uncaptured"]


def grammar_text() -> str:
    return files("mapsync.dsl").joinpath("grammar.lark").read_text(encoding="utf-8")


def _without_comments(text: str) -> str:
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


_TERMINAL_PATTERN = re.compile(r"^([A-Z_]+):\s*/(.*)/\s*$", re.MULTILINE)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)+)"')
# A group that captures: `(` not escaped, not inside a character class is assumed (the grammar has none
# there), not already `(?`.
_CAPTURING = re.compile(r"(?<!\\)\((?!\?)")


def uncaptured(pattern: str) -> str:
    """``pattern`` with its groups made non-capturing, so it can sit inside a larger numbered pattern."""
    return _CAPTURING.sub("(?:", pattern)


_RULES = _without_comments(grammar_text())
PATTERNS: dict[str, str] = dict(_TERMINAL_PATTERN.findall(_RULES))
_QUOTED_STRINGS = {bytes(s, "utf-8").decode("unicode_escape") for s in _QUOTED.findall(_TERMINAL_PATTERN.sub("", _RULES))}
KEYWORDS: frozenset[str] = frozenset(s for s in _QUOTED_STRINGS if s.isidentifier())
SYMBOLS: tuple[str, ...] = tuple(sorted((s for s in _QUOTED_STRINGS if not s.isidentifier()), key=lambda s: (-len(s), s)))
