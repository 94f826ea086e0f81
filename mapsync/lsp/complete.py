"""Completion: what may be written at the cursor, read from the text around it (it is usually mid-edit and
does not parse) and offered from the schema snapshots and the project.

The context is found from the text alone: the top-level declaration the cursor is in (a line starting with
``flow``, ``replace``, ``optout`` or ``import``, as the parser's own error recovery finds it), the braces
opened since, and the current line up to the cursor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lsprotocol import types as lsp

from mapsync.dsl import ast
from mapsync.dsl.checker import CLAUSE_VALUES
from mapsync.dsl.functions import FUNCTIONS, function_markdown
from mapsync.dsl.schema import Catalog, FieldSchema, TableSchema
from mapsync.lsp.describe import describe_field
from mapsync.lsp.workspace import Snapshot

__all__ = ["complete"]

_TOP_KEYWORDS = ("flow", "replace", "optout", "import")
_DECL_START = re.compile(r"^(flow|replace|optout|import)\b[ \t]*([A-Za-z_][A-Za-z0-9_]*)?", re.M)
_FLOW_CLAUSES = ("from", "to", "key", "mode", "on delete:", "where", "on filtered:", "map", "batch", "max deletes")
_OPTOUT_CLAUSES = ("direction", "conflict", "via")
_EXPR_KEYWORDS = ("and", "or", "not", "in", "is", "null", "true", "false")
_MODIFIERS = ("required", "keep", "once")
_WORD_END = re.compile(r"[A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class _Context:
    decl: str | None  # flow / replace / optout / import, or None at the top level
    name: str | None
    decl_start: int
    openers: tuple[str, ...]  # each unclosed "{" or "(" since the declaration started, with the word before it
    line: str  # the current line up to the cursor, comment-free
    word: str  # the identifier being typed


def _strip(text: str) -> str:
    """``text`` with strings and comments blanked (same length), so braces inside them do not count."""
    return re.sub(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*', lambda m: " " * len(m.group()), text)


def _context(text: str, offset: int) -> _Context | None:
    before = text[:offset]
    line_start = before.rfind("\n") + 1
    raw_line = before[line_start:]
    if _inside_string_or_comment(raw_line):
        return None
    plain_line = _strip(raw_line)
    starts = [m for m in _DECL_START.finditer(before) if m.start() < line_start or m.end() < offset]
    word = _WORD_END.search(plain_line).group()  # type: ignore[union-attr]
    if not starts:
        return _Context(None, None, 0, (), plain_line, word)
    m = starts[-1]
    body = _strip(before[m.start():])
    openers: list[str] = []
    for tok in re.finditer(r"[{}()]", body):
        if tok.group() in "{(":
            head = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*:?\s*$", body[: tok.start()])
            openers.append(tok.group() + (head.group(1) if head else ""))
        elif openers:
            openers.pop()
    if not openers and "{" in body:
        return _Context(None, None, 0, (), plain_line, word)  # after a closed declaration
    return _Context(m.group(1), m.group(2), m.start(), tuple(openers), plain_line, word)


def _inside_string_or_comment(line: str) -> bool:
    for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*', line):
        token = m.group()
        if m.end() == len(line) and (token.startswith("#") or len(token) == 1 or not token.endswith('"')):
            return True
    return False


def _item(label: str, kind: lsp.CompletionItemKind, *, detail: str | None = None, doc: str | None = None,
          sort: str = "5", insert: str | None = None) -> lsp.CompletionItem:
    return lsp.CompletionItem(
        label=label, kind=kind, detail=detail, sort_text=f"{sort}{label}", insert_text=insert,
        documentation=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=doc) if doc else None)


def _keywords(words: tuple[str, ...]) -> list[lsp.CompletionItem]:
    return [_item(w, lsp.CompletionItemKind.Keyword, sort="8") for w in words]


def _field_detail(f: FieldSchema) -> str:
    out = str(f.value_type) if f.type == str(f.value_type) else f"{f.type} ({f.value_type})"
    if f.max_length is not None:
        out += f", max {f.max_length}"
    if f.options:
        out += ": " + ", ".join(f"{v} {label}" for v, label in f.options[:6]) + (" …" if len(f.options) > 6 else "")
    return out


def _fields(catalog: Catalog, table: TableSchema | None, prefix: tuple[str, ...], *, first: set[str] | None = None,
            skip: set[str] | None = None) -> list[lsp.CompletionItem]:
    if table is None:
        return []
    if prefix:
        parent = table.resolve(prefix)
        fields = parent.fields if parent is not None else {}
    else:
        fields = table.fields
    out = []
    for name, f in fields.items():
        dotted = ".".join((*prefix, name))
        if skip is not None and dotted in skip and not f.fields:
            continue
        rank = "1" if first is None or dotted not in first else "3"
        out.append(_item(name, lsp.CompletionItemKind.Field, detail=_field_detail(f),
                         doc=describe_field(f, table, dotted, catalog), sort=rank))
    return out


def _flow_tables(snap: Snapshot, decl_text: str) -> tuple[TableSchema | None, TableSchema | None]:
    found: dict[str, TableSchema | None] = {"from": None, "to": None}
    for m in re.finditer(r"^\s*(from|to)\s+([A-Za-z_]\w*)\.([A-Za-z_][\w.]*)", _strip(decl_text), re.M):
        if found[m.group(1)] is None:
            found[m.group(1)] = snap.catalog.table(m.group(2), m.group(3))
    return found["from"], found["to"]


def _functions() -> list[lsp.CompletionItem]:
    return [_item(name, lsp.CompletionItemKind.Function, detail=spec.signature(), doc=function_markdown(spec),
                  sort="4", insert=f"{name}(") for name, spec in FUNCTIONS.items()]


def _replacements(snap: Snapshot, file: str | None) -> list[lsp.CompletionItem]:
    visible = snap.project.replaces_for(file) if file is not None else snap.project.replaces
    return [_item(name, lsp.CompletionItemKind.Variable, detail=f"replacement ({len(rep.cases)} cases)",
                  sort="3", insert=f"{name}(") for name, rep in visible.items()]


def _flows(snap: Snapshot) -> list[lsp.CompletionItem]:
    return [_item(name, lsp.CompletionItemKind.Module,
                  detail=f"{flow.source.dotted if flow.source else '?'} -> {flow.target.dotted if flow.target else '?'}",
                  sort="1") for name, flow in snap.project.flows.items()]


def _dotted_before(line: str, word: str) -> tuple[str, ...]:
    """``location.ci`` -> ("location",): the path parts written before the one being typed."""
    m = re.search(r"((?:[A-Za-z_]\w*\.)+)\Z", line[: len(line) - len(word)])
    return tuple(m.group(1).rstrip(".").split(".")) if m else ()


def _in_link_flow_arg(line: str) -> bool:
    depth, i = 0, len(line) - 1
    commas = 0
    while i >= 0:
        ch = line[i]
        if ch == ")":
            depth += 1
        elif ch == "(":
            if depth == 0:
                return commas == 1 and re.search(r"\blink\s*\Z", line[:i]) is not None
            depth -= 1
        elif ch == "," and depth == 0:
            commas += 1
        i -= 1
    return False


def _expression(snap: Snapshot, file: str | None, source: TableSchema | None, line: str,
                word: str, *, fields: bool = True) -> list[lsp.CompletionItem]:
    if _in_link_flow_arg(line):
        return _flows(snap)
    prefix = _dotted_before(line, word)
    if prefix:
        return _fields(snap.catalog, source, prefix) if fields else []
    out = _fields(snap.catalog, source, ()) if fields else []
    return out + _functions() + _replacements(snap, file) + _keywords(_EXPR_KEYWORDS)


def _assigned(decl_text: str) -> set[str]:
    """Target fields the flow already writes: its map lines and the target of its key."""
    plain = _strip(decl_text)
    found = {m.group(1) for m in re.finditer(r"^\s*([A-Za-z_][\w.]*)\s*=(?!=)", plain, re.M)}
    return found | set(re.findall(r"^\s*key\s+[\w.]+\s*->\s*([A-Za-z_][\w.]*)", plain, re.M))


def _replace_fields(snap: Snapshot, name: str) -> list[FieldSchema]:
    """The option-set fields a replacement is applied to anywhere in the project."""
    out: list[FieldSchema] = []
    for info in snap.analysis.flows.values():
        exprs = [a.expr for a in info.flow.assignments] + ([info.flow.where] if info.flow.where else [])
        for e in exprs:
            for node in ast.walk_expr(e):
                if (isinstance(node, ast.Call) and node.name == name and len(node.args) == 1
                        and isinstance(node.args[0], ast.Path) and info.source is not None):
                    f = info.source.resolve(node.args[0].parts)
                    if f is not None and f.options and f not in out:
                        out.append(f)
    return out


def _replace_cases(snap: Snapshot, name: str, decl_text: str) -> list[lsp.CompletionItem]:
    written = set(re.findall(r"^\s*(-?\d+)\s*=>", _strip(decl_text), re.M))
    out = []
    for f in _replace_fields(snap, name):
        for value, label in f.options:
            rank = "3" if str(value) in written else "1"
            out.append(_item(str(value), lsp.CompletionItemKind.EnumMember, detail=f"{label} ({f.name})",
                             sort=rank + f"{value:08d}" if value >= 0 else rank))
    return out + _keywords(("else",))


def complete(snap: Snapshot, file: str | None, text: str, offset: int) -> list[lsp.CompletionItem]:
    ctx = _context(text, offset)
    if ctx is None:
        return []
    line, word = ctx.line, ctx.word
    head = line[: len(line) - len(word)]
    table_ref = re.search(r"(?:^|\s)(?:from|to)\s+([A-Za-z_]\w*)\.((?:[A-Za-z_]\w*\.)*)\Z", head)
    if table_ref and ctx.decl == "flow":
        system, tail = table_ref.group(1), table_ref.group(2)
        return [_item(t.name[len(tail):], lsp.CompletionItemKind.Class, detail=t.display_name or t.dotted, sort="1")
                for t in snap.catalog.tables(system) if t.name.startswith(tail)]
    if ctx.decl == "flow" and re.fullmatch(r"\s*(from|to)\s+", head):
        return [_item(s, lsp.CompletionItemKind.Module, insert=f"{s}.", sort="1") for s in snap.catalog.systems()]
    if ctx.decl is None or ctx.decl == "import":
        return _keywords(_TOP_KEYWORDS) if not head.strip() else []
    decl_end = _DECL_START.search(text, ctx.decl_start + 1)
    decl_text = text[ctx.decl_start : decl_end.start() if decl_end else len(text)]
    if ctx.decl == "replace":
        if "=>" in head:
            return _expression(snap, file, None, line, word, fields=False)
        if ctx.openers and not head.strip():
            return _replace_cases(snap, ctx.name or "", decl_text)
        return []
    if ctx.decl == "optout":
        via = re.fullmatch(r"\s*via\s+", head)
        if via:
            return _flows(snap)
        for clause in ("direction", "conflict"):
            if re.fullmatch(rf"\s*{clause}\s+", head):
                return _keywords(CLAUSE_VALUES[clause])
        ref = re.search(r"([A-Za-z_]\w*)\.([A-Za-z_][\w.]*)\.\Z", head)
        if ref:
            return _fields(snap.catalog, snap.catalog.table(ref.group(1), ref.group(2)), ())
        return _keywords(_OPTOUT_CLAUSES) if not head.strip() and ctx.openers else []
    source, target = _flow_tables(snap, decl_text)
    inner = next((o[1:] for o in reversed(ctx.openers) if o[0] == "{" or o == "(set"), "")
    if inner in ("map", "set"):
        if "=" not in head.replace("==", "").replace("!=", "").replace("<=", "").replace(">=", "") \
                and not head.rstrip().endswith(","):
            prefix = _dotted_before(line, word)
            assigned = _assigned(decl_text)
            return _fields(snap.catalog, target, prefix, first=assigned)
        if re.search(r"[\w\")]\s+\Z", head) and not re.search(
                r"(?:=|\b(?:and|or|not|in|is)|\(|,|&|\?\?|[-+*/<>])\s*\Z", head):
            return _keywords((*_MODIFIERS, *_EXPR_KEYWORDS[:5]))  # after a complete expression
        after_eq = line[line.index("=") + 1 :] if "=" in head else line
        return _expression(snap, file, source, after_eq, word)
    stripped = head.strip()
    if not stripped:
        return _keywords(_FLOW_CLAUSES)
    key = re.fullmatch(r"\s*key\s+(.*)", head)
    if key:
        if "->" in key.group(1):
            return _fields(snap.catalog, target, _dotted_before(line, word))
        return _fields(snap.catalog, source, _dotted_before(line, word))
    mode = re.fullmatch(r"\s*mode\s+", head)
    if mode:
        return _keywords(CLAUSE_VALUES["mode"])
    if re.fullmatch(r"\s*on\s+delete\s*:\s*", head):
        return _keywords((*CLAUSE_VALUES["on delete"], "set"))
    if re.fullmatch(r"\s*on\s+filtered\s*:\s*", head):
        return _keywords(CLAUSE_VALUES["on filtered"])
    if re.fullmatch(r"\s*on\s+", head):
        return _keywords(("delete:", "filtered:"))
    if re.match(r"\s*where\b", head):
        return _expression(snap, file, source, line[line.index("where") + 5 :], word)
    return []
