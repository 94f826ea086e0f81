"""lark's reductions -> ``dsl.ast`` nodes, built while lark parses (its inline ``transformer=``): no parse tree.

lark calls one method per grammar rule as the LALR parser reduces it, with the rule's children: tokens and
what the methods returned for the sub-rules. The parser is built with ``keep_all_tokens=True``, so every
method sees its keywords and punctuation too and can give its node a span without lark's positions (an
inline transformer gets no ``meta``: "Meta args not supported for internal transformer"). The spans are
the ones ``propagate_positions`` gives a tree: a node spans its first to its last token, and a
parenthesised expression keeps the span of what is inside while its parent spans the parentheses too.

One ``Builder`` serves one lark parser; ``begin`` gives it the file of the next parse (dsl/parser.py
holds a lock around begin + parse). Checking is a separate pass; this only builds, and reports what is
wrong inside a well-formed declaration (a bad escape or date: E006, a clause given twice: E007).
"""

from __future__ import annotations

from typing import Any

from lark import Token

from mapsync.dsl import ast
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.literals import parse_datetime, unescape
from mapsync.dsl.operators import MAX_DEPTH

__all__ = ["Builder", "make_span", "too_deep"]

Children = list[Any]


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


_Span = make_span = _span_maker()

_CLAUSE_WORDS = {
    "source": "from", "target": "to", "key": "key", "mode": "mode", "on_delete": "on delete",
    "where": "where", "on_filtered": "on filtered", "batch": "batch", "max_deletes": "max deletes",
}


class Builder:
    """The inline transformer: one method per rule (or alias) of grammar.lark, children in grammar order."""

    def __init__(self) -> None:
        self.begin("<text>")

    def begin(self, file: str) -> None:
        """Start a parse of ``file``: what the last one built is forgotten."""
        self.file = file
        self.diagnostics: list[Diagnostic] = []
        self.comments: list[Token] = []
        # id(expr) -> (expr, its span with its outermost parentheses); the node is kept so its id stays its own.
        self.wrapped: dict[int, tuple[ast.Expr, ast.Span]] = {}
        # Expressions long enough to be nested too deeply, with the depth of lark's tree they start at.
        self.long: list[tuple[ast.Expr, int]] = []

    def comment(self, tok: Token) -> Token:
        """lark's lexer callback for the ignored COMMENT terminal: collected for the formatter."""
        self.comments.append(tok)
        return tok

    # ---- spans
    def tok(self, t: Token) -> ast.Span:
        return _Span(self.file, t.line, t.column, t.end_line, t.end_column, t.start_pos, t.end_pos)

    def tt(self, a: Token, b: Token) -> ast.Span:
        return _Span(self.file, a.line, a.column, b.end_line, b.end_column, a.start_pos, b.end_pos)

    def ts(self, a: Token, b: ast.Span) -> ast.Span:
        return _Span(self.file, a.line, a.column, b.end_line, b.end_col, a.start_pos, b.end)

    def st(self, a: ast.Span, b: Token) -> ast.Span:
        return _Span(self.file, a.line, a.col, b.end_line, b.end_column, a.start, b.end_pos)

    def ss(self, a: ast.Span, b: ast.Span) -> ast.Span:
        return _Span(self.file, a.line, a.col, b.end_line, b.end_col, a.start, b.end)

    def outer(self, node: ast.Expr) -> ast.Span:
        """The node's span including the parentheses around it, as its parent sees it."""
        if self.wrapped:
            found = self.wrapped.get(id(node))
            if found is not None:
                return found[1]
        return node.span

    def _root(self, expr: ast.Expr, depth: int) -> None:
        """Note an expression that starts at ``depth`` of lark's tree if it may be nested too deeply.

        Every level of the tree takes at least one character, so a short expression never is: only the
        long ones are measured after the parse (``too_deep``)."""
        span = self.outer(expr)
        if span.end - span.start + depth > MAX_DEPTH:
            self.long.append((expr, depth))

    # ---- top level
    def start(self, c: Children) -> list[ast.Decl]:
        return c

    def import_decl(self, c: Children) -> ast.Import:
        span = self.tt(c[0], c[1])
        return ast.Import(span=span, path=unescape(str(c[1]), self.tok(c[1]), self.diagnostics))

    # ---- flows
    def flow(self, c: Children) -> ast.Flow:
        name = c[1]
        fields: dict[str, Any] = {}
        assignments: list[ast.Assignment] = []
        seen: dict[str, ast.Span] = {}
        for kind, clause_span, value in c[3:-1]:
            if kind == "map":
                assignments.extend(value)
                continue
            if kind in seen:
                self.diagnostics.append(Diagnostic.error(
                    "E007", f"flow `{name}` has more than one `{_CLAUSE_WORDS[kind]}` clause", clause_span,
                    f"the first one is on line {seen[kind].line}; keep one"))
                continue
            seen[kind] = clause_span
            fields[kind] = value
        return ast.Flow(span=self.tt(c[0], c[-1]), name=str(name), name_span=self.tok(name),
                        assignments=tuple(assignments), **fields)

    def from_clause(self, c: Children) -> tuple[str, ast.Span, ast.TableRef]:
        return ("source", self.ts(c[0], c[1].span), c[1])

    def to_clause(self, c: Children) -> tuple[str, ast.Span, ast.TableRef]:
        return ("target", self.ts(c[0], c[1].span), c[1])

    def table_ref(self, c: Children) -> ast.TableRef:
        return ast.TableRef(span=self.tt(c[0], c[-1]), system=str(c[0]), name=".".join(str(n) for n in c[2::2]))

    def key_clause(self, c: Children) -> tuple[str, ast.Span, ast.KeyClause]:
        span = self.ts(c[0], c[3].span)
        return ("key", span, ast.KeyClause(span=span, source=c[1], target=c[3]))

    def mode_clause(self, c: Children) -> tuple[str, ast.Span, ast.Setting]:
        return ("mode", self.tt(c[0], c[1]), ast.Setting(span=self.tok(c[1]), value=str(c[1])))

    def where_clause(self, c: Children) -> tuple[str, ast.Span, ast.Expr]:
        self._root(c[1], 4)  # start > flow > where_clause > expression
        return ("where", self.ts(c[0], self.outer(c[1])), c[1])

    def on_filtered(self, c: Children) -> tuple[str, ast.Span, ast.Setting]:
        return ("on_filtered", self.tt(c[0], c[3]), ast.Setting(span=self.tok(c[3]), value=str(c[3])))

    def on_delete(self, c: Children) -> tuple[str, ast.Span, ast.OnDelete]:
        action = c[3]
        if isinstance(action, Token):
            return ("on_delete", self.tt(c[0], action), ast.OnDelete(span=self.tok(action), action=str(action)))  # type: ignore[arg-type]
        close, assignments = action
        span = self.tt(c[0], close)
        for a in assignments:
            self._root(a.expr, 6)  # start > flow > on_delete > set_action > assignment > expression
        return ("on_delete", span, ast.OnDelete(span=span, action="set", assignments=assignments))

    def set_action(self, c: Children) -> tuple[Token, tuple[ast.Assignment, ...]]:
        return c[-1], tuple(a for a in c[2:-1] if isinstance(a, ast.Assignment))

    def batch_clause(self, c: Children) -> tuple[str, ast.Span, ast.Setting]:
        return ("batch", self.tt(c[0], c[1]), ast.Setting(span=self.tok(c[1]), value=int(c[1])))

    def max_deletes(self, c: Children) -> tuple[str, ast.Span, ast.MaxDeletes]:
        percent = c[3]
        span = self.tt(c[0], percent if percent is not None else c[2])
        return ("max_deletes", span, ast.MaxDeletes(span=span, value=float(c[2]), percent=percent is not None))

    def map_block(self, c: Children) -> tuple[str, ast.Span, list[ast.Assignment]]:
        assignments = c[2:-1]
        for a in assignments:
            self._root(a.expr, 5)  # start > flow > map_block > assignment > expression
        return ("map", self.tt(c[0], c[-1]), assignments)

    def assignment(self, c: Children) -> ast.Assignment:
        target, expr, modifier = c[0], c[2], c[3]
        if modifier is None:
            span = self.ss(target.span, self.outer(expr))
        else:
            span = self.st(target.span, modifier)
            modifier = str(modifier)
        return ast.Assignment(span=span, target=target, expr=expr, modifier=modifier)

    def modifier(self, c: Children) -> Token:
        return c[0]  # the token: the assignment's span ends with it

    def target_path(self, c: Children) -> ast.Path:
        head = c[0]
        return ast.Path(span=self.tt(head, c[-1]), parts=(str(head), *(str(n) for n in c[2::2])))

    def target_head(self, c: Children) -> Token:
        return c[0]

    def path(self, c: Children) -> ast.Path:
        return ast.Path(span=self.tt(c[0], c[-1]), parts=tuple(str(n) for n in c[::2]))

    # ---- replacements
    def replace(self, c: Children) -> ast.Replace:
        name = c[1]
        cases = c[3:-1]
        default = None
        if cases and isinstance(cases[-1], tuple):
            default = cases.pop()[1]
        return ast.Replace(span=self.tt(c[0], c[-1]), name=str(name), name_span=self.tok(name),
                           cases=tuple(cases), default=default)

    def replace_case(self, c: Children) -> ast.ReplaceCase:
        match, result = c[0], c[2]
        self._root(result, 4)  # start > replace > replace_case > expression
        return ast.ReplaceCase(span=self.ss(match.span, self.outer(result)), match=match, result=result)

    def replace_else(self, c: Children) -> tuple[str, ast.Expr]:
        self._root(c[2], 4)
        return ("else", c[2])

    def case_value(self, c: Children) -> ast.Literal:
        value = c[0]
        if isinstance(value, Token):  # NEG_NUMBER
            return _number_literal(self.tok(value), str(value))
        return value

    # ---- opt-out
    def optout(self, c: Children) -> ast.OptOut:
        name = c[1]
        fields: dict[str, ast.Setting] = {}
        for kind, clause_span, setting in c[6:-1]:
            if kind in fields:
                self.diagnostics.append(Diagnostic.error(
                    "E007", f"opt-out `{name}` has more than one `{kind}` clause", clause_span,
                    f"the first one is on line {fields[kind].span.line}; keep one"))
                continue
            fields[kind] = setting
        return ast.OptOut(span=self.tt(c[0], c[-1]), name=str(name), name_span=self.tok(name),
                          d365=c[3], campaign=c[5], **fields)

    def field_ref(self, c: Children) -> ast.FieldRef:
        system, table, field = c[0], c[2], c[4]
        return ast.FieldRef(span=self.tt(system, field),
                            table=ast.TableRef(span=self.tt(system, table), system=str(system), name=str(table)),
                            field=str(field))

    def direction_clause(self, c: Children) -> tuple[str, ast.Span, ast.Setting]:
        return ("direction", self.tt(c[0], c[1]), ast.Setting(span=self.tok(c[1]), value=str(c[1])))

    def conflict_clause(self, c: Children) -> tuple[str, ast.Span, ast.Setting]:
        return ("conflict", self.tt(c[0], c[1]), ast.Setting(span=self.tok(c[1]), value=str(c[1])))

    def via_clause(self, c: Children) -> tuple[str, ast.Span, ast.Setting]:
        return ("via", self.tt(c[0], c[1]), ast.Setting(span=self.tok(c[1]), value=str(c[1])))

    # ---- expressions
    def _binary(self, op: str, left: ast.Expr, right: ast.Expr) -> ast.Binary:
        return ast.Binary(span=self.ss(self.outer(left), self.outer(right)), op=op, left=left, right=right)  # type: ignore[arg-type]

    def or_op(self, c: Children) -> ast.Binary:
        return self._binary("or", c[0], c[2])

    def and_op(self, c: Children) -> ast.Binary:
        return self._binary("and", c[0], c[2])

    def concat_op(self, c: Children) -> ast.Binary:
        return self._binary("&", c[0], c[2])

    def coalesce_op(self, c: Children) -> ast.Binary:
        return self._binary("??", c[0], c[2])

    def compare(self, c: Children) -> ast.Binary:
        return self._binary(str(c[1]), c[0], c[2])

    def arith(self, c: Children) -> ast.Binary:
        return self._binary(str(c[1]), c[0], c[2])

    def not_op(self, c: Children) -> ast.Unary:
        return ast.Unary(span=self.ts(c[0], self.outer(c[1])), op="not", operand=c[1])

    def neg(self, c: Children) -> ast.Unary:
        return ast.Unary(span=self.ts(c[0], self.outer(c[1])), op="-", operand=c[1])

    def in_list(self, c: Children) -> ast.InList:
        return ast.InList(span=self.st(self.outer(c[0]), c[-1]), operand=c[0], items=c[3], negated=False)

    def not_in_list(self, c: Children) -> ast.InList:
        return ast.InList(span=self.st(self.outer(c[0]), c[-1]), operand=c[0], items=c[4], negated=True)

    def is_null(self, c: Children) -> ast.IsNull:
        return ast.IsNull(span=self.st(self.outer(c[0]), c[-1]), operand=c[0], negated=False)

    def is_not_null(self, c: Children) -> ast.IsNull:
        return ast.IsNull(span=self.st(self.outer(c[0]), c[-1]), operand=c[0], negated=True)

    def call(self, c: Children) -> ast.Call:
        name = c[0]
        return ast.Call(span=self.tt(name, c[-1]), name=str(name), name_span=self.tok(name), args=c[2] or ())

    def expr_list(self, c: Children) -> tuple[ast.Expr, ...]:
        return tuple(c[::2])  # expr ("," expr)* ","?

    def primary(self, c: Children) -> ast.Expr:
        """``( expr )``, the only alternative of ``?primary`` with more than one child: the node stays what
        is inside, and its parent will span the parentheses (the outermost pair, when there are several)."""
        inner = c[1]
        self.wrapped[id(inner)] = (inner, self.tt(c[0], c[2]))
        return inner

    # ---- literals
    def string(self, c: Children) -> ast.Literal:
        span = self.tok(c[0])
        return ast.Literal(span=span, kind="text", value=unescape(str(c[0]), span, self.diagnostics))

    def number(self, c: Children) -> ast.Literal:
        return _number_literal(self.tok(c[0]), str(c[0]))

    def true(self, c: Children) -> ast.Literal:
        return ast.Literal(span=self.tok(c[0]), kind="bool", value=True)

    def false(self, c: Children) -> ast.Literal:
        return ast.Literal(span=self.tok(c[0]), kind="bool", value=False)

    def null(self, c: Children) -> ast.Literal:
        return ast.Literal(span=self.tok(c[0]), kind="null", value=None)

    def datetime(self, c: Children) -> ast.Literal:
        span = self.tok(c[0])
        kind, value = parse_datetime(str(c[0]), span, self.diagnostics)
        return ast.Literal(span=span, kind=kind, value=value)


def _number_literal(span: ast.Span, raw: str) -> ast.Literal:
    if "." in raw:
        return ast.Literal(span=span, kind="number", value=float(raw))
    return ast.Literal(span=span, kind="int", value=int(raw))


# ----------------------------------------------------------------------------------------- depth guard


def too_deep(builder: Builder, text: str) -> ast.Span | None:
    """Where E005 goes when an expression of the last parse nests more than ``MAX_DEPTH`` levels, else None.

    The measure is the depth of lark's parse tree (the root is level 1; a call or an `in` list adds a level
    for its argument list, parentheses add none), and the place is the first node below that depth met
    walking the tree from its last child backwards: what the depth guard found when lark still built the
    tree. Only the expressions ``Builder._root`` noted as long can be that deep.
    """
    for expr, depth in sorted(builder.long, key=lambda e: builder.outer(e[0]).start, reverse=True):
        stack: list[tuple[Any, int]] = [(expr, depth)]
        while stack:
            node, d = stack.pop()
            if d > MAX_DEPTH:
                return _list_span(builder, node, text) if isinstance(node, tuple) else node.span
            d += 1
            if isinstance(node, ast.Binary):
                stack += ((node.left, d), (node.right, d))
            elif isinstance(node, ast.Unary | ast.IsNull):
                stack.append((node.operand, d))
            elif isinstance(node, ast.InList):
                stack += ((node.operand, d), (node.items, d))
            elif isinstance(node, ast.Call):
                if node.args:
                    stack.append((node.args, d))
            elif isinstance(node, tuple):  # the argument list of a call or an `in`
                stack += ((item, d) for item in node)
    return None


def _list_span(builder: Builder, items: tuple[ast.Expr, ...], text: str) -> ast.Span:
    """An argument list spans its first to its last item, or to its trailing comma when there is one."""
    first, last = builder.outer(items[0]), builder.outer(items[-1])
    at = last.end
    while at < len(text):
        if text[at] == "#":
            at = text.find("\n", at)
            at = len(text) if at == -1 else at
        elif text[at] in " \t\f\r\n":
            at += 1
        else:
            break
    if at < len(text) and text[at] == ",":
        end = at + 1
        line = text.count("\n", 0, end) + 1
        col = end - (text.rfind("\n", 0, end) + 1) + 1
        return _Span(builder.file, first.line, first.col, line, col, first.start, end)
    return builder.ss(first, last)
