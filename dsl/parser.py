"""Text of a `.map` file -> ``Module`` (the frozen dataclass AST), or diagnostics that say what is wrong.

lark parses the grammar (dsl/grammar.lark: LALR with the contextual lexer) and builds the AST as it goes
(dsl/builder.py is its inline transformer, so no parse tree is made); its tables come from lark's cache
(``cache=True``) after the first run. That is the only parser: `python -m bench.parse` measures it against
an editor's budget of 50 ms for a 1,000-line mapping. The language server parses through
dsl/incremental.py, which calls ``parse_once`` on the declarations that changed (and ``parse`` on the
whole text when it cannot tell the result from theirs).

The parser never lets a lark exception out. Syntax errors become ``Diagnostic`` objects phrased for the
person who wrote the file ("expected `=` after target field `email`"), and after an error the parser
skips to the next top-level declaration and goes on, so one run reports every broken declaration.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lark import PostLex

from mapsync.dsl import ast
from mapsync.dsl.builder import Builder, too_deep
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.operators import MAX_DEPTH

__all__ = ["MAX_DEPTH", "FirstError", "ParseResult", "parse", "parse_file", "parse_once", "span_at"]

# After this many syntax errors in one file the rest is not worth reading.
MAX_SYNTAX_ERRORS = 20
_TOP_LEVEL = ("flow", "replace", "optout", "import")


@dataclass(frozen=True, slots=True)
class ParseResult:
    module: ast.Module
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


# Tokens that can end an operand: a `-` glued to a number after one of these on the same line is binary minus.
_OPERAND_ENDS = frozenset({"NAME", "NUMBER", "STRING", "DATETIME", "RPAR", "TRUE", "FALSE", "NULL"})


class _MinusAfterOperand(PostLex):
    """Read `a-2` and `a -2` as subtraction.

    The grammar needs `-1` as one token for a replacement case value (`1 => "a"` then `-1 => "b"` on the
    next line would otherwise read as `"a" - 1`), and LALR merges the states after an operand, so the lexer
    offers that token after every operand. A negative number on the same line as the operand before it is
    split back into `-` and the number; one at the start of a line stays a case value.
    """

    always_accept = ()

    def process(self, stream: Any) -> Any:
        previous: Token | None = None
        for tok in stream:
            if (tok.type == "NEG_NUMBER" and previous is not None and previous.type in _OPERAND_ENDS
                    and previous.end_line == tok.line):
                yield Token("ADD_OP", "-", start_pos=tok.start_pos, line=tok.line, column=tok.column,
                            end_line=tok.line, end_column=tok.column + 1, end_pos=tok.start_pos + 1)
                tok = Token("NUMBER", tok[1:], start_pos=tok.start_pos + 1, line=tok.line, column=tok.column + 1,
                            end_line=tok.end_line, end_column=tok.end_column, end_pos=tok.end_pos)
            yield tok
            previous = tok


_OPTIONS: dict[str, Any] = {"parser": "lalr", "lexer": "contextual", "maybe_placeholders": True, "cache": True}


@functools.cache
def _building() -> tuple[Lark, Builder, threading.Lock]:
    """The parser: lark with the AST builder inline, and the lock that gives the builder one parse at a time."""
    builder = Builder()
    lark = Lark.open_from_package(
        "mapsync.dsl", "grammar.lark", **_OPTIONS, keep_all_tokens=True, postlex=_MinusAfterOperand(),
        transformer=builder, lexer_callbacks={"COMMENT": builder.comment},
    )
    return lark, builder, threading.Lock()


@functools.cache
def _lark() -> Lark:
    """The same grammar building lark's own tree: read only to phrase a syntax error (``_described``)."""
    return Lark.open_from_package("mapsync.dsl", "grammar.lark", **_OPTIONS, postlex=_MinusAfterOperand())


def parse_file(path: str | FsPath, *, display_name: str | None = None) -> tuple[ParseResult, str]:
    """Read and parse a file; returns the result and the text (for rendering excerpts)."""
    name = display_name or str(path)
    try:
        raw = FsPath(path).read_bytes()
    except OSError as exc:
        diag = Diagnostic.error("E004", f"cannot read the file: {exc.strerror or exc}", ast.Span.unknown(name))
        return ParseResult(ast.Module(span=ast.Span.unknown(name), file=name), (diag,)), ""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        span = ast.Span(name, line, col, line, col + 1, exc.start, exc.start + 1)
        diag = Diagnostic.error("E004", "the file is not UTF-8 text", span, "save the mapping as UTF-8")
        return ParseResult(ast.Module(span=ast.Span.unknown(name), file=name), (diag,)), ""
    return parse(text, name), text


@dataclass(frozen=True, slots=True)
class _Built:
    """What one successful pass of the parser built."""

    decls: list[ast.Decl]
    comments: list[Token]
    diagnostics: list[Diagnostic]  # E006, E007: found while building
    too_deep: ast.Span | None


def parse(text: str, file: str = "<text>") -> ParseResult:
    """Parse mapping text. Always returns; errors are in ``diagnostics``."""
    if "\x00" in text:
        # NUL never belongs in a mapping, and it defeats line-based recovery: report it once.
        offset = text.index("\x00")
        span = span_at(text, file, offset, offset + 1)
        return ParseResult(ast.Module(span=ast.Span.unknown(file), file=file), (
            Diagnostic.error("E004", "the file contains a NUL byte: it is binary, not a mapping", span),
        ))
    module_span = span_at(text, file, 0, len(text))
    diagnostics: list[Diagnostic] = []
    working = text
    while True:
        try:
            built = _build(working, file)
            break
        except UnexpectedInput as exc:
            diagnostics.append(_syntax_diagnostic(_described(exc, working), working, file))
            blanked = _blank_failed_decl(working, exc)
            if blanked is None or len(diagnostics) >= MAX_SYNTAX_ERRORS:
                return ParseResult(ast.Module(span=module_span, file=file), tuple(diagnostics))
            working = blanked
    if built.too_deep is not None:
        diagnostics.append(_too_deep_diagnostic(built.too_deep))
        return ParseResult(ast.Module(span=module_span, file=file), tuple(diagnostics))
    return ParseResult(_module(text, file, built), (*diagnostics, *built.diagnostics))


@dataclass(frozen=True, slots=True)
class FirstError:
    """The first syntax error in a text, as ``parse`` reports it."""

    diagnostic: Diagnostic
    at_end: bool  # lark stopped at the end of the text: more text after it could have mended it


def parse_once(text: str, file: str = "<text>") -> ParseResult | FirstError | None:
    """One pass over ``text``: what ``parse`` gives when it has no error, else its first syntax error.

    None for what only a whole parse reports right (a NUL byte, an expression nested too deeply). For
    dsl/incremental.py, which parses a file declaration by declaration and falls back to ``parse``.
    """
    if "\x00" in text:
        return None
    try:
        built = _build(text, file)
    except UnexpectedInput as exc:
        at_end = isinstance(exc, UnexpectedToken) and exc.token.type == "$END"
        return FirstError(_syntax_diagnostic(_described(exc, text), text, file), at_end)
    if built.too_deep is not None:
        return None
    return ParseResult(_module(text, file, built), tuple(built.diagnostics))


def _module(text: str, file: str, built: _Built) -> ast.Module:
    return ast.Module(
        span=span_at(text, file, 0, len(text)),
        file=file,
        decls=tuple(built.decls),
        comments=tuple(ast.Comment(span=_token_span(c, file), text=str(c).rstrip()) for c in built.comments),
    )


def _build(text: str, file: str) -> _Built:
    """One pass of lark over ``text``, building the AST; raises lark's ``UnexpectedInput`` on a syntax error."""
    lark, builder, lock = _building()
    with lock:
        builder.begin(file)
        try:
            decls = lark.parse(text)
            return _Built(decls, builder.comments, builder.diagnostics, too_deep(builder, text))
        finally:
            builder.begin(file)  # let go of what it built


def _described(exc: UnexpectedInput, text: str) -> UnexpectedInput:
    """The same syntax error as lark's own tree parser raises it, whose stack the messages read.

    The builder's stack holds AST nodes, not the tokens the phrasing looks back at (the target before a
    missing `=`, the token after which something was expected); the grammar and so the LALR states are the
    same, so the tree parser stops at the same token with the same expectations. It reads only the
    declaration that failed, the ones before it blanked (lines kept): a declaration is parsed in the same
    states wherever it starts, and the messages look back no further than its first token.
    """
    if not isinstance(exc, UnexpectedToken):
        return exc  # a character no terminal matches: the lexer says all there is to say
    start = _failed_decl_start(exc)
    if start:
        text = _BLANK.sub(lambda m: " " * len(m.group()), text[:start]) + text[start:]
    try:
        _lark().parse(text)
    except UnexpectedInput as again:
        return again
    return exc


_BLANK = re.compile(r"[^\n]+")


def _failed_decl_start(exc: UnexpectedToken) -> int | None:
    """Where the declaration lark was reading starts; None at the top level (between declarations)."""
    stack = getattr(getattr(exc.interactive_parser, "parser_state", None), "value_stack", None) or []
    for item in stack:
        if isinstance(item, Tree) and str(item.data).startswith("__start"):
            continue  # the declarations already read
        if isinstance(item, Token) and exc.token is not item:
            return item.start_pos  # the keyword that opens the declaration
        break
    return None


def _too_deep_diagnostic(span: ast.Span) -> Diagnostic:
    return Diagnostic.error("E005", f"this expression is nested more than {MAX_DEPTH} levels deep", span,
                            "split it into smaller expressions or replacements")


# --------------------------------------------------------------------------------------- syntax errors

_TOKEN_NAMES: dict[str, str] = {
    "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "EQUAL": "`=`", "COLON": "`:`",
    "COMMA": "`,`", "DOT": "`.`", "MORETHAN": "`>`", "NAME": "a name", "WORD": "a word", "STRING": "a text literal",
    "NUMBER": "a number", "INT": "a whole number", "NEG_NUMBER": "a number", "DATETIME": "a date",
    "CMP_OP": "a comparison", "ADD_OP": "`+` or `-`", "MUL_OP": "`*` or `/`", "PERCENT": "`%`",
    "REQUIRED": "`required`", "KEEP": "`keep`", "ONCE": "`once`", "$END": "the end of the file",
    "__ANON_0": "`->`",
}


def _describe_terminal(name: str) -> str:
    if name in _TOKEN_NAMES:
        return _TOKEN_NAMES[name]
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name.lower()
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return name.lower()


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    value = str(tok)
    if tok.type == "STRING":
        return f"the text {value[:40]}"
    if tok.type in {"NAME", "WORD"}:
        return f"`{value}`"
    return f"`{value[:40]}`"


_OPERATOR_WORDS = {"`&`", "`??`", "`+` or `-`", "`*` or `/`", "a comparison", "`and`", "`or`", "`in`", "`is`", "`not`"}


def _expected_phrase(expected: set[str]) -> str:
    names = {_describe_terminal(e) for e in expected if not e.startswith("__IGNORE")}
    if len(names & _OPERATOR_WORDS) >= 3:  # "an operator" reads better than eight symbols
        names = (names - _OPERATOR_WORDS) | {"an operator"}
    names = sorted(names)
    if not names:
        return "something else"
    if len(names) > 6:
        return "one of " + ", ".join(names[:6]) + ", ..."
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _syntax_diagnostic(exc: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        span = span_at(text, file, exc.pos_in_stream, exc.pos_in_stream + 1)
        char = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        shown = repr(char)[1:-1] if not char.isprintable() else char
        hint = None
        if char == "'":
            hint = 'text literals use double quotes: "like this"'
        elif char == "=" and text[exc.pos_in_stream: exc.pos_in_stream + 2] == "=>":
            hint = "`=>` belongs inside a `replace` block"
        return Diagnostic.error("E002", f"unexpected character `{shown}`", span, hint)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = _acceptable(exc)
        previous = _previous_token(exc)
        where = f" after {_context(previous)}" if previous is not None else ""
        if previous is not None and previous.type == "NAME" and "EQUAL" in expected:
            # Only an assignment target is followed by `=`: say exactly that, with the whole dotted target.
            target = _dotted_tail(exc) or str(previous)
            expected, where = {"EQUAL"}, f" after target field `{target}`"
            if tok.type != "$END":
                return Diagnostic.error("E001", f"expected `=`{where}", _token_span(tok, file),
                                        "each line of a `map` block is `target = expression`")
        if tok.type == "$END":
            end = len(text)
            span = span_at(text, file, max(0, end - 1), end)
            return Diagnostic.error("E003", f"the file ends too early: expected {_expected_phrase(expected)}{where}", span)
        span = _token_span(tok, file)
        if str(tok) == "=" and "CMP_OP" in expected:
            return Diagnostic.error("E001", f"`=` is not a comparison{where}", span,
                                    "compare with `==`; `=` assigns a target field inside `map { }`")
        message = f"expected {_expected_phrase(expected)}{where}, found {_describe_token(tok)}"
        return Diagnostic.error("E001", message, span, _hint_for(expected, tok, previous))
    span = span_at(text, file, 0, 0)
    return Diagnostic.error("E001", "the mapping does not parse here", span)


def _acceptable(exc: UnexpectedToken) -> set[str]:
    # LALR merges states, so exc.expected over-approximates; simulating each terminal is exact.
    ip = getattr(exc, "interactive_parser", None)
    if ip is not None:
        try:
            return set(ip.accepts())
        except Exception:  # lark internals: fall back to the approximate set rather than fail the report
            pass
    return set(exc.expected or ())


def _previous_token(exc: UnexpectedToken) -> Token | None:
    ip = getattr(exc, "interactive_parser", None)
    stack = getattr(getattr(ip, "parser_state", None), "value_stack", None)
    if not stack:
        return None
    last = stack[-1]
    while isinstance(last, Tree) and last.children:
        last = last.children[-1]
    return last if isinstance(last, Token) else None


def _dotted_tail(exc: UnexpectedToken) -> str | None:
    """The dotted path at the top of the parser stack (`location.city`), read back from its tokens."""
    ip = getattr(exc, "interactive_parser", None)
    stack = getattr(getattr(ip, "parser_state", None), "value_stack", None)
    if not stack:
        return None
    names: list[str] = []
    for item in reversed(stack):  # NAME (. NAME)*, possibly with its head already reduced to a tree
        if (isinstance(item, Tree) and str(item.data).startswith("__")  # lark's repetition of `. NAME`, not of
                and all(isinstance(c, Token) or c.data == item.data for c in item.children)):  # whole map lines
            names[:0] = [str(t) for t in item.scan_values(lambda v: isinstance(v, Token) and v.type == "NAME")]
            continue
        if isinstance(item, Tree) and item.data in ("path", "target_path", "target_head"):
            names[:0] = [str(t) for t in item.scan_values(lambda v: isinstance(v, Token) and v.type != "DOT")]
            break
        if isinstance(item, Token) and item.type == "DOT":
            continue
        if isinstance(item, Token) and (item.type == "NAME" or not names):
            names.insert(0, str(item))
            continue
        break
    return ".".join(names) or None


def _context(tok: Token) -> str:
    if tok.type == "NAME":
        return f"`{tok}`"
    return _describe_token(tok)


def _hint_for(expected: set[str], tok: Token, previous: Token | None) -> str | None:
    if tok.type == "NEG_NUMBER":
        return f"a `{tok}` that starts a line is a negative number; to subtract, write `- {str(tok)[1:]}`"
    if str(tok) == "=>" and previous is not None and previous.type == "NUMBER":
        return "start each replacement case on its own line: after a value on the same line, `-1` subtracts"
    if tok.type == "NAME" and previous is not None and "EQUAL" in expected:
        return "each line of a `map` block is `target = expression`"
    if str(tok) == "=" and "CMP_OP" in expected:
        return "compare with `==`; `=` assigns a target field inside `map { }`"
    if str(tok) in {"&&", "||"} or (previous is not None and str(previous) in {"&", "|"} and str(tok) in {"&", "|"}):
        return "use `and` / `or`"
    return None


def _blank_failed_decl(text: str, exc: UnexpectedInput) -> str | None:
    """Blank out the declaration holding the error (keeping line/column positions) so parsing can go on."""
    pos = getattr(exc, "pos_in_stream", None)
    if pos is None:
        tok = getattr(exc, "token", None)
        pos = getattr(tok, "start_pos", None)
    if pos is None or pos >= len(text):
        return None
    start = _decl_start_before(text, pos)
    end = _decl_start_after(text, pos)
    if end is None:
        end = len(text)
    if start is None or end <= start:
        return None
    chunk = "".join(ch if ch == "\n" else " " for ch in text[start:end])
    return text[:start] + chunk + text[end:]


def _line_starts_decl(text: str, at: int) -> bool:
    return any(text.startswith(k, at) and (at + len(k) == len(text) or not text[at + len(k)].isalnum())
               for k in _TOP_LEVEL)


def _decl_start_before(text: str, pos: int) -> int | None:
    at = text.rfind("\n", 0, pos) + 1
    while True:
        if _line_starts_decl(text, at):
            return at
        if at == 0:
            return 0
        at = text.rfind("\n", 0, at - 1) + 1


def _decl_start_after(text: str, pos: int) -> int | None:
    at = text.find("\n", pos)
    while at != -1:
        if _line_starts_decl(text, at + 1):
            return at + 1
        at = text.find("\n", at + 1)
    return None


# ------------------------------------------------------------------------------------------ spans


def span_at(text: str, file: str, start: int, end: int) -> ast.Span:
    """The span of ``text[start:end]``."""
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = line + text.count("\n", start, end)
    end_col = end - (text.rfind("\n", 0, end) + 1) + 1
    return ast.Span(file, line, col, end_line, end_col, start, end)


def _token_span(tok: Token, file: str) -> ast.Span:
    return ast.Span(file, tok.line or 1, tok.column or 1, tok.end_line or tok.line or 1,
                    tok.end_column or (tok.column or 1), tok.start_pos or 0, tok.end_pos or 0)
