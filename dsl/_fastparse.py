"""A hand-written parser for the common case: a mapping that is valid, parsed ~10x faster than lark.

``parse`` (dsl/parser.py) tries this first. It returns the very ``Module`` lark's LALR parser and the
transformer build — same nodes, same spans (lark's ``propagate_positions`` rules: a node spans its first
to its last token, a parenthesised expression keeps the span of what is inside), same comments — or
raises ``Bail`` the moment anything is unusual: a syntax error, a clause given twice, a bad escape or
date, a keyword where lark's contextual lexer might read it differently, deep nesting. Then the lark
path runs and produces the diagnostics; every message still comes from one place.

Why it exists: a language server re-parses and re-checks the whole file per keystroke, 50 ms for 1,000
lines. Lark alone takes most of that budget before building any node (`python -m bench.parse` measures
it) and cannot hand an inline transformer the positions the AST's spans need.

What is not written twice: the grammar (dsl/grammar.lark) stays the definition of the language. The
tokens, keywords and symbols are read from it (dsl/terminals.py), operator precedence comes from
dsl/operators.py, literals are read by dsl/literals.py. Only the productions are spelled out here, and
tests/dsl/test_fastparse.py checks that both parsers agree on every shipped mapping, on generated
modules and on mutated text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any

from mapsync.dsl import ast
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.literals import parse_datetime, unescape
from mapsync.dsl.operators import BINARY, INFIX_WORDS, MAX_DEPTH, Level
from mapsync.dsl.terminals import KEYWORDS, PATTERNS, SYMBOLS, uncaptured

__all__ = ["Bail", "TooDeep", "parse_fast"]


class Bail(Exception):  # not an error: "let lark do it"
    """Not a case for the fast path; the lark parser decides."""


class TooDeep(Exception):  # not an error of ours: the text is valid, one expression nests too deeply
    """The whole text parsed, but a huge expression is nested deeper than lark's limit: E005 at ``span``.

    Lark would say the same after building the whole tree, which takes minutes for megabytes of operators;
    only expressions of more than ``_HUGE_TOKENS`` tokens are judged here (smaller ones go to lark as before).
    """

    def __init__(self, span: ast.Span) -> None:
        super().__init__(span)
        self.span = span


# Every terminal of grammar.lark (dsl/terminals.py reads them from it), after optional white space; group
# numbers are token kinds below. Symbols: the longer ones first, then one character class.
_LONG_SYMBOLS = "|".join(re.escape(s) for s in SYMBOLS if len(s) > 1)
_SHORT_SYMBOLS = "".join(re.escape(s) for s in SYMBOLS if len(s) == 1)
_TOKEN = re.compile(
    r"[ \t\f\r\n]*(?:"
    f"({uncaptured(PATTERNS['COMMENT'])})"  # 1 comment
    f"|({uncaptured(PATTERNS['NAME'])})"  # 2 name
    f"|({uncaptured(PATTERNS['NUMBER'])})"  # 3 number
    f"|({uncaptured(PATTERNS['STRING'])})"  # 4 string (unrolled in the grammar: linear on megabytes of text)
    f"|({uncaptured(PATTERNS['DATETIME'])})"  # 5 datetime
    f"|({_LONG_SYMBOLS}|[{_SHORT_SYMBOLS}])"  # 6 symbol: its own text is its kind
    r")"
)
_WORD = re.compile(uncaptured(PATTERNS["WORD"]))
_NEWLINE = re.compile("\n")

_MODIFIERS = frozenset({"required", "keep", "once"})
# Deeper than this, lark judges (operators.MAX_DEPTH): lark's tree has more levels than ours (calls,
# statements), so stay well below its limit; Python's recursion stays shallow too.
_MAX_NESTING = 40
_SHALLOW_TOKENS = 60
_MAX_LARK_DEPTH = 150
_HUGE_TOKENS = 5000

# Token: (kind, text, start, end). Kinds: "N" name, "#" number, "S" string, "@" datetime, "$" end,
# otherwise the operator itself.
_KINDS = (None, "C", "N", "#", "S", "@")
Tok = tuple[str, str, int, int]

# Binding powers of the infix operators, from the one table (dsl/operators.py), as plain ints for speed.
_OR, _AND, _NOT, _CMP, _COALESCE, _UNARY = (int(v) for v in (Level.OR, Level.AND, Level.NOT, Level.CMP,
                                                             Level.COALESCE, Level.UNARY))
_INFIX = {op: int(level) for op, level in BINARY.items() if op not in INFIX_WORDS}
_INFIX_WORDS = {word: int(level) for word, level in INFIX_WORDS.items()}


def _tokenize(text: str) -> tuple[list[Tok], list[Tok]]:
    toks: list[Tok] = []
    comments: list[Tok] = []
    pos = 0
    kinds = _KINDS
    append = toks.append
    # Stop at the line break before the trailing blank lines: from each position of a blank run that no token
    # follows, the pattern would match the run to its end and fail again (quadratic in the run's length).
    # Blanked declarations after a syntax error (dsl/parser.py) leave such runs.
    end = len(text.rstrip(" \t\f\r\n"))
    line_end = text.find("\n", end)
    end = len(text) if line_end == -1 else line_end
    for m in _TOKEN.finditer(text, 0, end):
        if m.start() != pos:  # a character no terminal matches
            raise Bail
        pos = m.end()
        index = m.lastindex
        value = m.group(index)  # type: ignore[arg-type]
        if index == 6:
            append((value, value, pos - len(value), pos))
        elif index == 1:
            comments.append(("C", value, pos - len(value), pos))
        else:
            append((kinds[index], value, pos - len(value), pos))  # type: ignore[index]
    if text[pos:].strip(" \t\f\r\n"):
        raise Bail
    n = len(text)
    toks.append(("$", "", n, n))
    return toks, comments


def parse_fast(text: str, file: str, module_span: ast.Span) -> ast.Module:
    """The module of a valid mapping, exactly as the lark path builds it; raises ``Bail`` otherwise."""
    toks, comments = _tokenize(text)
    parser = _Parser(toks, file, text)
    try:
        decls = parser.module()
    except RecursionError:
        raise Bail from None
    if parser.too_deep is not None:
        raise TooDeep(parser.too_deep)
    return ast.Module(
        span=module_span,
        file=file,
        decls=tuple(decls),
        comments=tuple(ast.Comment(span=parser.tspan(c), text=c[1].rstrip()) for c in comments),
    )


def _span_maker() -> Any:
    """``Span(file, line, col, end_line, end_col, start, end)`` at half the cost of the frozen dataclass's
    ``__init__``: the same object, its slots filled through their descriptors (there are ~5 spans per line)."""
    new = object.__new__
    f, li, co, el, ec, st, en = (getattr(ast.Span, n).__set__
                                 for n in ("file", "line", "col", "end_line", "end_col", "start", "end"))

    def make(file: str, line: int, col: int, end_line: int, end_col: int, start: int, end: int) -> ast.Span:
        span = new(ast.Span)
        f(span, file)
        li(span, line)
        co(span, col)
        el(span, end_line)
        ec(span, end_col)
        st(span, start)
        en(span, end)
        return span

    return make


_Span = _span_maker()


class _Parser:
    def __init__(self, toks: list[Tok], file: str, text: str) -> None:
        self.toks = toks
        self.i = 0
        self.file = file
        self.text = text
        self.newlines = [m.start() for m in _NEWLINE.finditer(text)]
        self.depth = 0
        self.too_deep: ast.Span | None = None  # the first huge expression nested deeper than lark allows
        # A parenthesised expression keeps its own span, but its parent spans the parentheses too (lark's
        # "container" positions): id(node) -> span with its outermost parentheses.
        self.wrapped: dict[int, ast.Span] = {}

    # ---- tokens and spans (tokens never contain a newline: one line each)
    def _where(self, offset: int) -> tuple[int, int]:
        index = bisect_right(self.newlines, offset - 1)  # newlines before offset
        return index + 1, offset - (self.newlines[index - 1] + 1 if index else 0) + 1

    def tspan(self, t: Tok) -> ast.Span:
        start = t[2]
        newlines = self.newlines
        index = bisect_right(newlines, start - 1)  # _where, inlined: this runs for nearly every token
        col = start - (newlines[index - 1] if index else -1)
        return _Span(self.file, index + 1, col, index + 1, col + t[3] - start, start, t[3])

    def join(self, a: ast.Span, b: ast.Span) -> ast.Span:
        return _Span(self.file, a.line, a.col, b.end_line, b.end_col, a.start, b.end)

    def outer(self, node: ast.Expr) -> ast.Span:
        """The node's span including the parentheses around it, as its parent sees it."""
        return self.wrapped.get(id(node), node.span) if self.wrapped else node.span

    def tjoin(self, a: Tok, b: Tok) -> ast.Span:
        line, col = self._where(a[2])
        end_line, end_col = self._where(b[2])
        return _Span(self.file, line, col, end_line, end_col + b[3] - b[2], a[2], b[3])

    def expect(self, kind: str) -> Tok:
        t = self.toks[self.i]
        if t[0] != kind:
            raise Bail
        self.i += 1
        return t

    def word(self, value: str) -> Tok:
        t = self.toks[self.i]
        if t[0] != "N" or t[1] != value:
            raise Bail
        self.i += 1
        return t

    def name(self) -> Tok:
        """A NAME where only a name fits (lark's contextual lexer then reads keywords as names too)."""
        t = self.toks[self.i]
        if t[0] != "N":
            raise Bail
        self.i += 1
        return t

    # ---- declarations
    def module(self) -> list[ast.Decl]:
        decls: list[ast.Decl] = []
        toks = self.toks
        while toks[self.i][0] != "$":
            t = toks[self.i]
            if t[0] != "N":
                raise Bail
            if t[1] == "flow":
                decls.append(self.flow())
            elif t[1] == "replace":
                decls.append(self.replace())
            elif t[1] == "optout":
                decls.append(self.optout())
            elif t[1] == "import":
                self.i += 1
                s = self.expect("S")
                decls.append(ast.Import(span=self.tjoin(t, s), path=self.unescape(s)))
            else:
                raise Bail
        return decls

    def flow(self) -> ast.Flow:
        first = self.word("flow")
        name = self.name()
        self.expect("{")
        fields: dict[str, Any] = {}
        assignments: list[ast.Assignment] = []
        toks = self.toks
        while True:
            t = toks[self.i]
            if t[0] == "}":
                self.i += 1
                break
            if t[0] != "N":
                raise Bail
            kw = t[1]
            self.i += 1
            value: Any
            if kw == "map":
                self.expect("{")
                assignments.extend(self.assignments())
                self.expect("}")
                continue
            if kw == "from" or kw == "to":
                key, value = ("source" if kw == "from" else "target"), self.table_ref()
            elif kw == "key":
                source = self.path(self.name())
                self.expect("->")
                target = self.path(self.name())
                key, value = "key", ast.KeyClause(span=self.join(self.tspan(t), target.span), source=source,
                                                  target=target)
            elif kw == "mode":
                v = self.name()
                key, value = "mode", ast.Setting(span=self.tspan(v), value=v[1])
            elif kw == "where":
                key, value = "where", self.expr()
            elif kw == "on":
                which = self.name()
                self.expect(":")
                if which[1] == "filtered":
                    v = self.name()
                    key, value = "on_filtered", ast.Setting(span=self.tspan(v), value=v[1])
                elif which[1] == "delete":
                    key, value = "on_delete", self.on_delete(t)
                else:
                    raise Bail
            elif kw == "batch":
                v = self.expect("#")
                if "." in v[1]:
                    raise Bail
                key, value = "batch", ast.Setting(span=self.tspan(v), value=int(v[1]))
            elif kw == "max":
                self.word("deletes")
                v = self.expect("#")
                last, percent = v, toks[self.i][0] == "%"
                if percent:
                    last = toks[self.i]
                    self.i += 1
                key, value = "max_deletes", ast.MaxDeletes(span=self.tjoin(t, last), value=float(v[1]),
                                                           percent=percent)
            else:
                raise Bail
            if key in fields:  # E007: the lark path reports it
                raise Bail
            fields[key] = value
        return ast.Flow(span=self.tjoin(first, toks[self.i - 1]), name=name[1], name_span=self.tspan(name),
                        assignments=tuple(assignments), **fields)

    def table_ref(self) -> ast.TableRef:
        system = self.name()
        self.expect(".")
        parts = [self.name()]
        if self.toks[self.i][0] == ".":
            self.i += 1
            parts.append(self.name())
            if self.toks[self.i][0] == ".":
                raise Bail
        return ast.TableRef(span=self.tjoin(system, parts[-1]), system=system[1],
                            name=".".join(p[1] for p in parts))

    def on_delete(self, on: Tok) -> ast.OnDelete:
        v = self.name()
        if v[1] != "set":
            return ast.OnDelete(span=self.tspan(v), action=v[1])  # type: ignore[arg-type]
        self.expect("(")
        items: list[ast.Assignment] = []
        toks = self.toks
        while toks[self.i][0] != ")":
            items.append(self.assignment(self.name()))
            if toks[self.i][0] == ",":
                self.i += 1
            elif toks[self.i][0] != ")":
                raise Bail
        close = self.expect(")")
        return ast.OnDelete(span=self.tjoin(on, close), action="set", assignments=tuple(items))

    def assignments(self) -> list[ast.Assignment]:
        out: list[ast.Assignment] = []
        toks = self.toks
        while toks[self.i][0] != "}":
            t = self.name()
            if out and t[1] in KEYWORDS:
                raise Bail  # after an expression lark reads keywords as keywords: let it decide
            out.append(self.assignment(t))
        return out

    def assignment(self, first: Tok) -> ast.Assignment:
        target = self.path(first)
        self.expect("=")
        expr = self.expr()
        modifier = None
        end = self.outer(expr)
        t = self.toks[self.i]
        if t[0] == "N" and t[1] in _MODIFIERS:
            self.i += 1
            modifier, end = t[1], self.tspan(t)
        return ast.Assignment(span=self.join(target.span, end), target=target, expr=expr,
                              modifier=modifier)  # type: ignore[arg-type]

    def path(self, first: Tok) -> ast.Path:
        toks = self.toks
        if toks[self.i][0] != ".":
            return ast.Path(span=self.tspan(first), parts=(first[1],))
        parts = [first[1]]
        last = first
        while toks[self.i][0] == ".":
            self.i += 1
            last = self.name()
            parts.append(last[1])
        return ast.Path(span=self.tjoin(first, last), parts=tuple(parts))

    def replace(self) -> ast.Replace:
        first = self.word("replace")
        name = self.name()
        self.expect("{")
        cases: list[ast.ReplaceCase] = []
        default: ast.Expr | None = None
        toks = self.toks
        while True:
            t = toks[self.i]
            if t[0] == "}":
                self.i += 1
                break
            if default is not None:
                raise Bail
            if t[0] == "N" and t[1] == "else":
                self.i += 1
                self.expect("=>")
                default = self.expr()
                continue
            match = self.case_value()
            self.expect("=>")
            result = self.expr()
            cases.append(ast.ReplaceCase(span=self.join(match.span, self.outer(result)), match=match, result=result))
        return ast.Replace(span=self.tjoin(first, toks[self.i - 1]), name=name[1], name_span=self.tspan(name),
                           cases=tuple(cases), default=default)

    def case_value(self) -> ast.Literal:
        t = self.toks[self.i]
        if t[0] == "-":
            num = self.toks[self.i + 1]
            if num[0] != "#" or num[2] != t[3]:
                raise Bail
            self.i += 2
            span = self.tjoin(t, num)
            raw = "-" + num[1]
            if "." in raw:
                return ast.Literal(span=span, kind="number", value=float(raw))
            return ast.Literal(span=span, kind="int", value=int(raw))
        if t[0] == "N" and t[1] not in ("true", "false", "null"):
            raise Bail
        if t[0] not in ("N", "#", "S", "@"):
            raise Bail
        self.i += 1
        return self.literal(t)

    def optout(self) -> ast.OptOut:
        first = self.word("optout")
        name = self.name()
        self.expect("{")
        left = self.field_ref()
        self.expect("<->")
        right = self.field_ref()
        fields: dict[str, ast.Setting] = {}
        toks = self.toks
        while True:
            t = toks[self.i]
            if t[0] == "}":
                self.i += 1
                break
            if t[0] != "N" or t[1] not in ("direction", "conflict", "via") or t[1] in fields:
                raise Bail
            self.i += 1
            if t[1] == "via":
                v = self.name()
                fields["via"] = ast.Setting(span=self.tspan(v), value=v[1])
                continue
            fields[t[1]] = self.word_setting()
        return ast.OptOut(span=self.tjoin(first, toks[self.i - 1]), name=name[1], name_span=self.tspan(name),
                          d365=left, campaign=right, **fields)

    def word_setting(self) -> ast.Setting:
        """A WORD (``optout-wins``) read from the text: the tokens split it at each `-`."""
        t = self.toks[self.i]
        if t[0] != "N":
            raise Bail
        m = _WORD.match(self.text, t[2])
        if m is None:
            raise Bail
        end = m.end()
        toks = self.toks
        while toks[self.i][3] <= end and toks[self.i][0] != "$":
            self.i += 1
        if toks[self.i][2] < end:  # the word ends inside a token
            raise Bail
        value = m.group()
        line, col = self._where(t[2])
        return ast.Setting(span=_Span(self.file, line, col, line, col + len(value), t[2], end), value=value)

    def field_ref(self) -> ast.FieldRef:
        system = self.name()
        self.expect(".")
        table = self.name()
        self.expect(".")
        field = self.name()
        return ast.FieldRef(span=self.tjoin(system, field),
                            table=ast.TableRef(span=self.tjoin(system, table), system=system[1], name=table[1]),
                            field=field[1])

    # ---- expressions: precedence climbing over the binding powers above
    def expr(self, min_bp: int = 0) -> ast.Expr:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise Bail
        start = self.i
        toks = self.toks
        t = toks[self.i]
        kind = t[0]
        left: ast.Expr
        if kind == "N" and t[1] == "not":
            if min_bp >= _NOT:  # `a == not b`: lark reads that `not` as a name; let it decide
                raise Bail
            self.i += 1
            operand = self.expr(_AND)
            left = ast.Unary(span=self.join(self.tspan(t), self.outer(operand)), op="not", operand=operand)
        elif kind == "-":
            self.i += 1
            operand = self.expr(_UNARY)
            left = ast.Unary(span=self.join(self.tspan(t), self.outer(operand)), op="-", operand=operand)
        else:
            left = self.primary()
        while True:
            t = toks[self.i]
            kind = t[0]
            bp = _INFIX_WORDS.get(t[1]) if kind == "N" else _INFIX.get(kind)
            if bp is None or bp <= min_bp:
                break
            self.i += 1
            if bp == _CMP:
                left = self.comparison(t, left)
                nxt = toks[self.i]
                if (_INFIX_WORDS.get(nxt[1]) if nxt[0] == "N" else _INFIX.get(nxt[0])) == _CMP:
                    raise Bail  # comparisons do not chain
                continue
            if (kind == "-" and toks[self.i][0] == "#" and toks[self.i][2] == t[3]
                    and "\n" in self.text[toks[self.i - 2][3]:t[2]]):
                # A `-2` that starts a line is one negative literal for lark (the next case of a
                # replacement, or a syntax error); on the operand's own line it is subtraction, as here.
                raise Bail
            # `??` is right-associative: its right side takes further `??`s.
            right = self.expr(bp - 1 if bp == _COALESCE else bp)
            op = t[1] if kind == "N" else kind
            left = ast.Binary(span=self.join(self.outer(left), self.outer(right)), op=op, left=left,  # type: ignore[arg-type]
                              right=right)
        self.depth -= 1
        # A tree is never deeper than its token count: only long expressions need the real measure.
        if self.depth == 0 and self.i - start > _SHALLOW_TOKENS and _lark_depth(left) > _MAX_LARK_DEPTH:
            if self.i - start <= _HUGE_TOKENS or _levels(left) <= MAX_DEPTH:
                raise Bail
            self.too_deep = self.too_deep or self.outer(left)  # certainly too deep for lark too
        return left

    def comparison(self, op: Tok, left: ast.Expr) -> ast.Expr:
        if op[0] != "N":
            right = self.expr(_CMP)
            return ast.Binary(span=self.join(self.outer(left), self.outer(right)), op=op[0], left=left,  # type: ignore[arg-type]
                              right=right)
        word = op[1]
        if word == "is":
            toks = self.toks
            negated = toks[self.i][0] == "N" and toks[self.i][1] == "not"
            if negated:
                self.i += 1
            null = self.word("null")
            return ast.IsNull(span=self.join(self.outer(left), self.tspan(null)), operand=left, negated=negated)
        if word == "not":
            self.word("in")
        self.expect("(")
        items = self.expr_list()
        close = self.expect(")")
        return ast.InList(span=self.join(self.outer(left), self.tspan(close)), operand=left, items=items,
                          negated=word == "not")

    def expr_list(self) -> tuple[ast.Expr, ...]:
        items = [self.expr()]
        toks = self.toks
        while toks[self.i][0] == ",":
            self.i += 1
            if toks[self.i][0] == ")":
                break
            items.append(self.expr())
        return tuple(items)

    def primary(self) -> ast.Expr:
        toks = self.toks
        t = toks[self.i]
        kind = t[0]
        self.i += 1
        if kind == "N":
            value = t[1]
            if value == "true" or value == "false" or value == "null":
                return self.literal(t)
            if value == "not":
                raise Bail
            if toks[self.i][0] == "(":
                self.i += 1
                args: tuple[ast.Expr, ...] = ()
                if toks[self.i][0] != ")":
                    args = self.expr_list()
                close = self.expect(")")
                return ast.Call(span=self.tjoin(t, close), name=value, name_span=self.tspan(t), args=args)
            return self.path(t)
        if kind == "#" or kind == "S" or kind == "@":
            return self.literal(t)
        if kind == "(":
            inner = self.expr()
            close = self.expect(")")
            self.wrapped[id(inner)] = self.tjoin(t, close)
            return inner
        raise Bail

    # ---- literals
    def literal(self, t: Tok) -> ast.Literal:
        span = self.tspan(t)
        kind = t[0]
        if kind == "#":
            if "." in t[1]:
                return ast.Literal(span=span, kind="number", value=float(t[1]))
            return ast.Literal(span=span, kind="int", value=int(t[1]))
        if kind == "S":
            return ast.Literal(span=span, kind="text", value=self.unescape(t))
        if kind == "@":
            problems: list[Diagnostic] = []
            lit_kind, value = parse_datetime(t[1], span, problems)
            if problems:
                raise Bail
            return ast.Literal(span=span, kind=lit_kind, value=value)
        if t[1] == "true":
            return ast.Literal(span=span, kind="bool", value=True)
        if t[1] == "false":
            return ast.Literal(span=span, kind="bool", value=False)
        return ast.Literal(span=span, kind="null", value=None)

    def unescape(self, t: Tok) -> str:
        body = t[1][1:-1]
        if "\\" not in body:
            return body
        problems: list[Diagnostic] = []
        value = unescape(t[1], self.tspan(t), problems)
        if problems:
            raise Bail
        return value


def _lark_depth(expr: ast.Expr) -> int:
    """An upper bound of the depth lark's tree has for this expression (calls and lists add a level)."""
    best, stack = 0, [(expr, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if isinstance(node, ast.Binary):
            stack += ((node.left, d + 1), (node.right, d + 1))
        elif isinstance(node, ast.Unary | ast.IsNull):
            stack.append((node.operand, d + 1))
        elif isinstance(node, ast.Call):
            stack += ((a, d + 2) for a in node.args)
        elif isinstance(node, ast.InList):
            stack.append((node.operand, d + 1))
            stack += ((a, d + 2) for a in node.items)
    return best


def _levels(expr: ast.Expr) -> int:
    """A lower bound of the depth lark's tree has for this expression: each operator, call or list is a level."""
    best, stack = 0, [(expr, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if isinstance(node, ast.Binary):
            stack += ((node.left, d + 1), (node.right, d + 1))
        elif isinstance(node, ast.Unary | ast.IsNull):
            stack.append((node.operand, d + 1))
        elif isinstance(node, ast.Call):
            stack += ((a, d + 1) for a in node.args)
        elif isinstance(node, ast.InList):
            stack += ((a, d + 1) for a in (node.operand, *node.items))
    return best
