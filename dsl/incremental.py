"""Re-parse only the declarations that changed: what the language server does on each keystroke.

A file is cut before every line that starts a top-level declaration (`flow`, `replace`, `optout`, `import`
at the start of a line: the same cut the parser's error recovery makes). Each piece is parsed alone, or
taken from the last parse of the same file when its text is unchanged, moved to where it now starts.

A piece is parsed preceded by blanks that put it where it is in the file, so its spans and messages are
those of the whole parse. When every piece parses, the file is their concatenation: the grammar is
``start: _decl*``, a piece starts at the top level where the lexer and parser are in the same state as at
the start of a file, and a cut falls at a line start, so no token, comment or `-` spans it. A piece with
a syntax error is reported as the whole parse reports it: that parse meets the piece at the top level,
stops at the same token, and its recovery blanks from this cut to the next. What the pieces cannot tell
(lark stopping at the end of a piece that is not the last, as when a map line's target is named `flow`
and so cuts a declaration; a NUL byte; an expression nested too deeply; more errors than ``parse``
reports) is parsed again whole by ``parse``. The result is always the one ``parse`` gives for the text.
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
from mapsync.dsl.parser import MAX_SYNTAX_ERRORS, FirstError, ParseResult, parse, parse_once, span_at

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
        if "\x00" in text:
            return parse(text, file)
        last = self._last.get(file, {})
        kept: dict[str, _Piece] = {}
        decls: list[ast.Decl] = []
        comments: list[ast.Comment] = []
        built: list[Diagnostic] = []  # found while building a declaration that parses (E006, E007)
        syntax: list[Diagnostic] = []  # one per piece that does not parse
        line = 1
        cut = pieces(text)
        for index, (offset, chunk) in enumerate(cut):
            piece = last.get(chunk) or kept.get(chunk)
            if piece is not None and (piece.line, piece.offset) != (line, offset):
                # A message may name a line ("the first one is on line 2"): a piece with one is parsed again.
                piece = None if piece.result.diagnostics else _Piece(
                    line, offset, _moved(piece.result, line - piece.line, offset - piece.offset))
            if piece is None:
                result = parse_once(_placed(chunk, line, offset), file)
                if isinstance(result, FirstError) and _as_in_whole(result, index == len(cut) - 1, len(syntax)):
                    syntax.append(result.diagnostic)
                    line += chunk.count("\n")
                    continue
                if not isinstance(result, ParseResult):
                    self._keep(file, kept, clean=False)
                    return parse(text, file)
                piece = _Piece(line, offset, result)
            kept[chunk] = piece
            decls.extend(piece.result.module.decls)
            comments.extend(piece.result.module.comments)
            built.extend(piece.result.diagnostics)
            line += chunk.count("\n")
        self._keep(file, kept, clean=not syntax)
        module = ast.Module(span=span_at(text, file, 0, len(text)), file=file, decls=tuple(decls),
                            comments=tuple(comments))
        return ParseResult(module, (*syntax, *built))

    def _keep(self, file: str, kept: dict[str, _Piece], *, clean: bool) -> None:
        if clean:
            self._last[file] = self._clean[file] = kept
        else:  # the edit that mends this text will find the pieces of both (and memory stays at two parses)
            self._last[file] = {**self._clean.get(file, {}), **kept}

    def forget(self, file: str) -> None:
        self._last.pop(file, None)
        self._clean.pop(file, None)


def _placed(chunk: str, line: int, offset: int) -> str:
    """A piece preceded by blanks that put it at ``line`` and ``offset`` (the lexer skips them as one token),
    so what it parses to has the spans and messages it has in the whole text."""
    return " " * (offset - line + 1) + "\n" * (line - 1) + chunk


def _as_in_whole(error: FirstError, last_piece: bool, errors_before: int) -> bool:
    """Whether the whole text's parse reports this piece's first error as it is, and recovers after it.

    The whole parse meets the piece at the top level (the pieces before it parse, or were blanked by the
    recovery), so it stops at the same token and phrases it the same way; its recovery then blanks from
    the line that starts the piece to the next such line: the piece, no more. Not so when lark stopped at
    the end of a piece that is not the last (the next one might have mended it), or when this error is
    the one after which ``parse`` gives up.
    """
    return (last_piece or not error.at_end) and errors_before + 1 < MAX_SYNTAX_ERRORS


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
