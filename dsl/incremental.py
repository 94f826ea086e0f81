"""Re-parse only the declarations that changed: what the language server does on each keystroke.

A file is cut before every line that starts a top-level declaration (`flow`, `replace`, `optout`, `import`
at the start of a line: the same cut the parser's error recovery makes). Each piece is parsed alone, or
taken from the last parse of the same file when its text is unchanged, moved to where it now starts.

When every piece parses alone without error, the file is their concatenation: the grammar is
``start: _decl*``, a piece starts at the top level where the lexer and parser are in the same state as at
the start of a file, and a cut falls at a line start, so no token, comment or `-` spans it. Anything else
(a syntax error, a NUL byte, an expression nested too deeply, or a cut inside a declaration, such as a
map line whose target is named `flow`, which leaves a piece that does not parse) is parsed again whole by
``parse``, so the result is always the one ``parse`` gives for the whole text.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from mapsync.dsl import ast
from mapsync.dsl.builder import make_span
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.parser import ParseResult, parse, parse_clean, span_at

__all__ = ["DeclarationCache", "pieces"]

_CUT = re.compile(r"^(?:flow|replace|optout|import)(?![^\W_])", re.MULTILINE)


def pieces(text: str) -> list[tuple[int, str]]:
    """``text`` cut before every line that starts a top-level declaration: (offset, text) of each piece."""
    cuts = [m.start() for m in _CUT.finditer(text)]
    if not cuts or cuts[0] != 0:
        cuts.insert(0, 0)
    cuts.append(len(text))
    return [(start, text[start:end]) for start, end in itertools.pairwise(cuts) if end > start]


@dataclass(frozen=True, slots=True)
class _Piece:
    """One piece as last parsed: where it started (1-based line, offset) and what it gave."""

    line: int
    offset: int
    result: ParseResult


class DeclarationCache:
    """``parse`` for a file that is parsed again and again with small changes (an editor buffer).

    It keeps each file's pieces from its last parse, keyed by their text; a later parse of the same file
    parses only the pieces whose text is new. After a text with an error the pieces of the last text
    without one are kept too, so the edit that mends the error finds them: at most two parses per file.
    """

    def __init__(self) -> None:
        self._last: dict[str, dict[str, _Piece]] = {}  # file -> its pieces, by text, to look up
        self._clean: dict[str, dict[str, _Piece]] = {}  # file -> the pieces of its last parse without error

    def parse(self, text: str, file: str = "<text>") -> ParseResult:
        """The same result as ``parse(text, file)``, spans included."""
        last = self._last.get(file, {})
        kept: dict[str, _Piece] = {}
        decls: list[ast.Decl] = []
        comments: list[ast.Comment] = []
        diagnostics: list[Diagnostic] = []
        line = 1
        for offset, chunk in pieces(text):
            piece = last.get(chunk) or kept.get(chunk)
            if piece is not None and (piece.line, piece.offset) != (line, offset):
                # A message may name a line ("the first one is on line 2"): a piece with one is parsed again.
                piece = None if piece.result.diagnostics else _Piece(
                    line, offset, _moved(piece.result, line - piece.line, offset - piece.offset))
            if piece is None:
                result = _parse_at(chunk, file, line, offset)
                if result is None:
                    # The edit that mends this text will find the pieces of both (and memory stays at two parses).
                    self._last[file] = {**self._clean.get(file, {}), **kept}
                    return parse(text, file)
                piece = _Piece(line, offset, result)
            kept[chunk] = piece
            decls.extend(piece.result.module.decls)
            comments.extend(piece.result.module.comments)
            diagnostics.extend(piece.result.diagnostics)
            line += chunk.count("\n")
        self._last[file] = self._clean[file] = kept
        module = ast.Module(span=span_at(text, file, 0, len(text)), file=file, decls=tuple(decls),
                            comments=tuple(comments))
        return ParseResult(module, tuple(diagnostics))

    def forget(self, file: str) -> None:
        self._last.pop(file, None)
        self._clean.pop(file, None)


def _parse_at(chunk: str, file: str, line: int, offset: int) -> ParseResult | None:
    """``parse_clean`` of a piece as if it started at ``line`` and ``offset``: blanks before it put it there
    (the lexer skips them as one token)."""
    return parse_clean(" " * (offset - line + 1) + "\n" * (line - 1) + chunk, file)


def _moved(result: ParseResult, lines: int, chars: int) -> ParseResult:
    move = _mover(lines, chars)
    module = result.module
    return ParseResult(
        ast.Module(span=module.span, file=module.file, decls=move(module.decls), comments=move(module.comments)),
        move(result.diagnostics),
    )


# Per node class, the setters of its fields: moving a tree copies every node (~10 per line of a mapping),
# so the copy skips ``__init__`` and fills the slots directly, as dsl/builder.py makes spans.
_SETTERS: dict[type, tuple[tuple[str, Callable[[Any, Any], None]], ...]] = {}
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _setters(cls: type) -> tuple[tuple[str, Callable[[Any, Any], None]], ...] | None:
    found = _SETTERS.get(cls)
    if found is None and is_dataclass(cls):
        found = _SETTERS[cls] = tuple((f.name, getattr(cls, f.name).__set__) for f in fields(cls))
    return found


def _mover(lines: int, chars: int) -> Callable[[Any], Any]:
    """A function that copies a tree (nodes, tuples, diagnostics) with every span ``lines`` lower and
    ``chars`` further on; columns stay, as a piece always starts at the start of a line."""
    new = object.__new__
    span_class = ast.Span
    span = make_span
    plain = _PLAIN

    def move(node: Any) -> Any:
        cls = type(node)
        if cls in plain:
            return node
        if cls is span_class:
            return span(node.file, node.line + lines, node.col, node.end_line + lines, node.end_col,
                        node.start + chars, node.end + chars)
        if cls is tuple:
            return tuple([move(item) for item in node])
        setters = _setters(cls)
        if setters is None:
            return node  # a date, a severity: nothing to move
        copy = new(cls)
        for name, put in setters:
            put(copy, move(getattr(node, name)))
        return copy

    return move
