"""Text of a `.map` file -> ``Module`` (the frozen dataclass AST), or diagnostics that say what is wrong.

The parser never lets a lark exception out. Syntax errors become ``Diagnostic`` objects phrased for the
person who wrote the file ("expected `=` after target field `email`"), and after an error the parser
skips to the next top-level declaration and goes on, so one run reports every broken declaration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lark import PostLex

from mapsync.dsl import ast
from mapsync.dsl._fastparse import Bail, TooDeep, parse_fast
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.literals import parse_datetime, unescape
from mapsync.dsl.operators import MAX_DEPTH

__all__ = ["MAX_DEPTH", "ParseResult", "parse", "parse_file"]

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


@functools.cache
def _lark() -> Lark:
    return Lark.open_from_package(
        "mapsync.dsl", "grammar.lark", parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True,
        postlex=_MinusAfterOperand(),
    )


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


def parse(text: str, file: str = "<text>", *, fast: bool = True) -> ParseResult:
    """Parse mapping text. Always returns; errors are in ``diagnostics``.

    ``fast=False`` skips the hand-written fast path and always uses lark (the tests compare the two).
    """
    if "\x00" in text:
        # NUL never belongs in a mapping, and it defeats line-based recovery: report it once.
        offset = text.index("\x00")
        span = _span_at(text, file, offset, offset + 1)
        return ParseResult(ast.Module(span=ast.Span.unknown(file), file=file), (
            Diagnostic.error("E004", "the file contains a NUL byte: it is binary, not a mapping", span),
        ))
    module_span = _span_at(text, file, 0, len(text))
    if fast:
        try:  # the common case, a valid file, without lark: same tree, ~10x faster (see dsl/_fastparse.py)
            return ParseResult(parse_fast(text, file, module_span), ())
        except Bail:
            pass
        except TooDeep as deep:  # valid text, but a huge expression lark would take minutes to reject
            return ParseResult(ast.Module(span=module_span, file=file), (_too_deep_diagnostic(deep.span),))
    diagnostics: list[Diagnostic] = []
    comments: list[Token] = []
    working = text
    tree: Tree | None = None
    for attempt in range(MAX_SYNTAX_ERRORS + 1):
        comments.clear()
        if attempt and fast:
            # The broken declarations are blanked now; when the rest is plain, the fast path builds the same
            # tree lark would (spans and comments included), without a second lark pass over the whole text.
            try:
                return ParseResult(parse_fast(working, file, module_span), tuple(diagnostics))
            except Bail:
                pass
        try:
            tree = _parse_collecting(working, comments)
            break
        except UnexpectedInput as exc:
            diagnostics.append(_syntax_diagnostic(exc, working, file))
            blanked = _blank_failed_decl(working, exc)
            if blanked is None or len(diagnostics) >= MAX_SYNTAX_ERRORS:
                tree = None
                break
            working = blanked
    if tree is None:
        return ParseResult(ast.Module(span=module_span, file=file), tuple(diagnostics))
    depth_problem = _too_deep(tree)
    if depth_problem is not None:
        span = _meta_span(depth_problem, file) if hasattr(depth_problem, "meta") else module_span
        diagnostics.append(_too_deep_diagnostic(span))
        return ParseResult(ast.Module(span=module_span, file=file), tuple(diagnostics))
    try:
        decls = _ToAst(file, diagnostics).transform(tree)
    except VisitError as exc:  # a bug in a callback, not in the user's text: show the real cause
        raise exc.orig_exc from exc
    module = ast.Module(
        span=module_span,
        file=file,
        decls=tuple(decls),
        comments=tuple(ast.Comment(span=_token_span(c, file), text=str(c)) for c in comments),
    )
    return ParseResult(module, tuple(diagnostics))


def _too_deep_diagnostic(span: ast.Span) -> Diagnostic:
    return Diagnostic.error("E005", f"this expression is nested more than {MAX_DEPTH} levels deep", span,
                            "split it into smaller expressions or replacements")


def _parse_collecting(text: str, comments: list[Token]) -> Tree:
    # The grammar ignores comments; one cheap scan after a successful parse recovers them for the formatter.
    result = _lark().parse(text)
    comments.extend(_scan_comments(text))
    return result


def _scan_comments(text: str) -> list[Token]:
    """Find `# ...` comments outside string literals, as lark tokens with positions."""
    found: list[Token] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line, line_start = line + 1, i + 1
        elif ch == '"':
            i += 1
            while i < n and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif ch == "#":
            end = text.find("\n", i)
            end = n if end == -1 else end
            tok = Token("COMMENT", text[i:end].rstrip(), start_pos=i, line=line, column=i - line_start + 1,
                        end_line=line, end_column=end - line_start + 1, end_pos=end)
            found.append(tok)
            i = end
            continue
        i += 1
    return found


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
        span = _span_at(text, file, exc.pos_in_stream, exc.pos_in_stream + 1)
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
            span = _span_at(text, file, max(0, end - 1), end)
            return Diagnostic.error("E003", f"the file ends too early: expected {_expected_phrase(expected)}{where}", span)
        span = _token_span(tok, file)
        if str(tok) == "=" and "CMP_OP" in expected:
            return Diagnostic.error("E001", f"`=` is not a comparison{where}", span,
                                    "compare with `==`; `=` assigns a target field inside `map { }`")
        message = f"expected {_expected_phrase(expected)}{where}, found {_describe_token(tok)}"
        return Diagnostic.error("E001", message, span, _hint_for(expected, tok, previous))
    span = _span_at(text, file, 0, 0)
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


# ----------------------------------------------------------------------------------------- depth guard


def _too_deep(tree: Tree) -> Tree | None:
    """Return the first subtree deeper than MAX_DEPTH, found without recursion."""
    stack: list[tuple[Tree, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return node
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return None


# ------------------------------------------------------------------------------------------ spans


def _span_at(text: str, file: str, start: int, end: int) -> ast.Span:
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = line + text.count("\n", start, end)
    end_col = end - (text.rfind("\n", 0, end) + 1) + 1
    return ast.Span(file, line, col, end_line, end_col, start, end)


def _token_span(tok: Token, file: str) -> ast.Span:
    return ast.Span(file, tok.line or 1, tok.column or 1, tok.end_line or tok.line or 1,
                    tok.end_column or (tok.column or 1), tok.start_pos or 0, tok.end_pos or 0)


def _meta_span(node: Tree, file: str) -> ast.Span:
    m = node.meta
    if getattr(m, "empty", True):
        return ast.Span.unknown(file)
    return ast.Span(file, m.line, m.column, m.end_line, m.end_column, m.start_pos, m.end_pos)


# --------------------------------------------------------------------------------------- tree -> AST


def _spanned(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a transformer callback the node's span as first argument."""

    @functools.wraps(fn)
    def wrapper(self: _ToAst, meta: Any, children: list[Any]) -> Any:
        return fn(self, self._span(meta), *children)

    return v_args(meta=True)(wrapper)


class _ToAst(Transformer):
    """lark tree -> dsl.ast nodes. Only builds nodes; checking is a separate pass."""

    def __init__(self, file: str, diagnostics: list[Diagnostic]) -> None:
        super().__init__()
        self.file = file
        self.diagnostics = diagnostics

    def _span(self, meta: Any) -> ast.Span:
        if getattr(meta, "empty", True):
            return ast.Span.unknown(self.file)
        return ast.Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)

    def _tok(self, tok: Token) -> ast.Span:
        return _token_span(tok, self.file)

    # ---- top level
    def start(self, children: list[Any]) -> list[ast.Decl]:
        return list(children)

    @_spanned
    def import_decl(self, span: ast.Span, path: Token) -> ast.Import:
        return ast.Import(span=span, path=unescape(str(path), self._tok(path), self.diagnostics))

    # ---- flows
    @v_args(meta=True)
    def flow(self, meta: Any, children: list[Any]) -> ast.Flow:
        name, *clauses = children
        fields: dict[str, Any] = {}
        assignments: list[ast.Assignment] = []
        seen: dict[str, ast.Span] = {}
        for kind, clause_span, value in clauses:
            if kind == "map":
                assignments.extend(value)
            if kind in seen and kind != "map":
                self.diagnostics.append(Diagnostic.error(
                    "E007", f"flow `{name}` has more than one `{_CLAUSE_WORDS[kind]}` clause", clause_span,
                    f"the first one is on line {seen[kind].line}; keep one"))
                continue
            seen.setdefault(kind, clause_span)
            if kind != "map":
                fields[kind] = value
        return ast.Flow(span=self._span(meta), name=str(name), name_span=self._tok(name),
                        assignments=tuple(assignments), **fields)

    @_spanned
    def from_clause(self, span: ast.Span, ref: ast.TableRef) -> tuple[str, ast.Span, ast.TableRef]:
        return ("source", span, ref)

    @_spanned
    def to_clause(self, span: ast.Span, ref: ast.TableRef) -> tuple[str, ast.Span, ast.TableRef]:
        return ("target", span, ref)

    @_spanned
    def table_ref(self, span: ast.Span, system: Token, *names: Token) -> ast.TableRef:
        return ast.TableRef(span=span, system=str(system), name=".".join(str(n) for n in names))

    @_spanned
    def key_clause(self, span: ast.Span, source: ast.Path, target: ast.Path) -> tuple[str, ast.Span, ast.KeyClause]:
        return ("key", span, ast.KeyClause(span=span, source=source, target=target))

    @_spanned
    def mode_clause(self, span: ast.Span, value: Token) -> tuple[str, ast.Span, ast.Setting]:
        return ("mode", span, ast.Setting(span=self._tok(value), value=str(value)))

    @_spanned
    def where_clause(self, span: ast.Span, expr: ast.Expr) -> tuple[str, ast.Span, ast.Expr]:
        return ("where", span, expr)

    @_spanned
    def on_filtered(self, span: ast.Span, value: Token) -> tuple[str, ast.Span, ast.Setting]:
        return ("on_filtered", span, ast.Setting(span=self._tok(value), value=str(value)))

    @_spanned
    def on_delete(self, span: ast.Span, action: Token | tuple[ast.Assignment, ...]) -> tuple[str, ast.Span, ast.OnDelete]:
        if isinstance(action, Token):
            return ("on_delete", span, ast.OnDelete(span=self._tok(action), action=str(action)))  # type: ignore[arg-type]
        return ("on_delete", span, ast.OnDelete(span=span, action="set", assignments=action))

    @_spanned
    def set_action(self, span: ast.Span, *assignments: ast.Assignment | None) -> tuple[ast.Assignment, ...]:
        return tuple(a for a in assignments if a is not None)

    @_spanned
    def batch_clause(self, span: ast.Span, value: Token) -> tuple[str, ast.Span, ast.Setting]:
        return ("batch", span, ast.Setting(span=self._tok(value), value=int(value)))

    @_spanned
    def max_deletes(self, span: ast.Span, value: Token, percent: Token | None) -> tuple[str, ast.Span, ast.MaxDeletes]:
        number = float(value)
        return ("max_deletes", span, ast.MaxDeletes(span=span, value=number, percent=percent is not None))

    @_spanned
    def map_block(self, span: ast.Span, *assignments: ast.Assignment) -> tuple[str, ast.Span, tuple[ast.Assignment, ...]]:
        return ("map", span, tuple(assignments))

    @_spanned
    def assignment(self, span: ast.Span, target: ast.Path, expr: ast.Expr, modifier: str | None) -> ast.Assignment:
        return ast.Assignment(span=span, target=target, expr=expr, modifier=modifier)  # type: ignore[arg-type]

    def modifier(self, children: list[Token]) -> str:
        return str(children[0])

    # ---- replacements
    @v_args(meta=True)
    def replace(self, meta: Any, children: list[Any]) -> ast.Replace:
        name, *rest = children
        default = None
        if rest and isinstance(rest[-1], tuple) and rest[-1][0] == "else":
            default = rest.pop()[1]
        return ast.Replace(span=self._span(meta), name=str(name), name_span=self._tok(name),
                           cases=tuple(rest), default=default)

    @_spanned
    def replace_case(self, span: ast.Span, match: ast.Literal, result: ast.Expr) -> ast.ReplaceCase:
        return ast.ReplaceCase(span=span, match=match, result=result)

    @_spanned
    def replace_else(self, span: ast.Span, result: ast.Expr) -> tuple[str, ast.Expr]:
        return ("else", result)

    @_spanned
    def case_value(self, span: ast.Span, value: ast.Literal | Token) -> ast.Literal:
        if isinstance(value, Token):  # NEG_NUMBER
            return _number_literal(span, str(value))
        return value

    # ---- opt-out
    @v_args(meta=True)
    def optout(self, meta: Any, children: list[Any]) -> ast.OptOut:
        name, left, right, *clauses = children
        fields: dict[str, ast.Setting] = {}
        for kind, clause_span, setting in clauses:
            if kind in fields:
                self.diagnostics.append(Diagnostic.error(
                    "E007", f"opt-out `{name}` has more than one `{kind}` clause", clause_span,
                    f"the first one is on line {fields[kind].span.line}; keep one"))
                continue
            fields[kind] = setting
        return ast.OptOut(span=self._span(meta), name=str(name), name_span=self._tok(name),
                          d365=left, campaign=right, **fields)

    @_spanned
    def field_ref(self, span: ast.Span, system: Token, table: Token, field: Token) -> ast.FieldRef:
        table_span = ast.Span(self.file, system.line or 1, system.column or 1, table.end_line or 1,
                              table.end_column or 1, system.start_pos or 0, table.end_pos or 0)
        return ast.FieldRef(span=span, table=ast.TableRef(span=table_span, system=str(system), name=str(table)),
                            field=str(field))

    @_spanned
    def direction_clause(self, span: ast.Span, value: Token) -> tuple[str, ast.Span, ast.Setting]:
        return ("direction", span, ast.Setting(span=self._tok(value), value=str(value)))

    @_spanned
    def conflict_clause(self, span: ast.Span, value: Token) -> tuple[str, ast.Span, ast.Setting]:
        return ("conflict", span, ast.Setting(span=self._tok(value), value=str(value)))

    @_spanned
    def via_clause(self, span: ast.Span, value: Token) -> tuple[str, ast.Span, ast.Setting]:
        return ("via", span, ast.Setting(span=self._tok(value), value=str(value)))

    # ---- expressions
    @_spanned
    def or_op(self, span: ast.Span, left: ast.Expr, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=span, op="or", left=left, right=right)

    @_spanned
    def and_op(self, span: ast.Span, left: ast.Expr, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=span, op="and", left=left, right=right)

    @_spanned
    def not_op(self, span: ast.Span, operand: ast.Expr) -> ast.Unary:
        return ast.Unary(span=span, op="not", operand=operand)

    @_spanned
    def neg(self, span: ast.Span, operand: ast.Expr) -> ast.Expr:
        return ast.Unary(span=span, op="-", operand=operand)

    @_spanned
    def compare(self, span: ast.Span, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=span, op=str(op), left=left, right=right)  # type: ignore[arg-type]

    @_spanned
    def arith(self, span: ast.Span, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=span, op=str(op), left=left, right=right)  # type: ignore[arg-type]

    @_spanned
    def concat_op(self, span: ast.Span, left: ast.Expr, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=span, op="&", left=left, right=right)

    @_spanned
    def coalesce_op(self, span: ast.Span, left: ast.Expr, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=span, op="??", left=left, right=right)

    @_spanned
    def in_list(self, span: ast.Span, operand: ast.Expr, items: tuple[ast.Expr, ...]) -> ast.InList:
        return ast.InList(span=span, operand=operand, items=items, negated=False)

    @_spanned
    def not_in_list(self, span: ast.Span, operand: ast.Expr, items: tuple[ast.Expr, ...]) -> ast.InList:
        return ast.InList(span=span, operand=operand, items=items, negated=True)

    @_spanned
    def is_null(self, span: ast.Span, operand: ast.Expr) -> ast.IsNull:
        return ast.IsNull(span=span, operand=operand, negated=False)

    @_spanned
    def is_not_null(self, span: ast.Span, operand: ast.Expr) -> ast.IsNull:
        return ast.IsNull(span=span, operand=operand, negated=True)

    @_spanned
    def call(self, span: ast.Span, name: Token, args: tuple[ast.Expr, ...] | None) -> ast.Call:
        return ast.Call(span=span, name=str(name), name_span=self._tok(name), args=args or ())

    @_spanned
    def expr_list(self, span: ast.Span, *items: ast.Expr) -> tuple[ast.Expr, ...]:
        return tuple(items)

    @_spanned
    def target_path(self, span: ast.Span, head: str, *names: Token) -> ast.Path:
        return ast.Path(span=span, parts=(head, *(str(n) for n in names)))

    def target_head(self, children: list[Token]) -> str:
        return str(children[0])

    @_spanned
    def path(self, span: ast.Span, *names: Token) -> ast.Path:
        return ast.Path(span=span, parts=tuple(str(n) for n in names))

    # ---- literals
    @_spanned
    def string(self, span: ast.Span, tok: Token) -> ast.Literal:
        return ast.Literal(span=span, kind="text", value=unescape(str(tok), span, self.diagnostics))

    @_spanned
    def number(self, span: ast.Span, tok: Token) -> ast.Literal:
        return _number_literal(span, str(tok))

    @_spanned
    def true(self, span: ast.Span) -> ast.Literal:
        return ast.Literal(span=span, kind="bool", value=True)

    @_spanned
    def false(self, span: ast.Span) -> ast.Literal:
        return ast.Literal(span=span, kind="bool", value=False)

    @_spanned
    def null(self, span: ast.Span) -> ast.Literal:
        return ast.Literal(span=span, kind="null", value=None)

    @_spanned
    def datetime(self, span: ast.Span, tok: Token) -> ast.Literal:
        kind, value = parse_datetime(str(tok), span, self.diagnostics)
        return ast.Literal(span=span, kind=kind, value=value)


def _number_literal(span: ast.Span, raw: str) -> ast.Literal:
    if "." in raw:
        return ast.Literal(span=span, kind="number", value=float(raw))
    return ast.Literal(span=span, kind="int", value=int(raw))


_CLAUSE_WORDS = {
    "source": "from", "target": "to", "key": "key", "mode": "mode", "on_delete": "on delete",
    "where": "where", "on_filtered": "on filtered", "batch": "batch", "max_deletes": "max deletes",
}
