"""Navigation and edits: definition, references, rename, whole-document formatting and code actions.

Positions here are character offsets into the project's texts; the server turns them into LSP ranges.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from mapsync.dsl import ast
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.errors import DslError
from mapsync.dsl.formatter import FormatError, format_module
from mapsync.dsl.functions import FUNCTIONS
from mapsync.dsl.parser import parse
from mapsync.engine.commands.fmt import _same_meaning as same_meaning
from mapsync.lsp.locate import Occurrence, at, occurrences
from mapsync.lsp.workspace import Snapshot

__all__ = ["Edit", "Fix", "RenameError", "definition", "fixes", "format_document", "references", "rename",
           "rename_target"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BACKTICKED = re.compile(r"`([^`]+)`")
_DID_YOU_MEAN = re.compile(r"\Adid you mean `([^`]+)`\?\Z")
_CONVERSION = re.compile(r"\Aconvert it with (text|number|date|datetime)\(\.\.\.\)\Z")


@dataclass(frozen=True, slots=True)
class Edit:
    """Replace ``text[start:end]`` of ``file`` (a display name of the project) with ``new``."""

    file: str
    start: int
    end: int
    new: str


@dataclass(frozen=True, slots=True)
class Fix:
    title: str
    diagnostic: Diagnostic
    edits: tuple[Edit, ...]


class RenameError(DslError):
    """A rename that cannot be done: said to the user as is."""


def _occurrence(snap: Snapshot, file: str, offset: int) -> Occurrence | None:
    module = snap.project.module(file)
    return at(module, offset, snap.project) if module is not None else None


def _all(snap: Snapshot) -> list[tuple[str, Occurrence]]:
    return [(m.file, occ) for m in snap.project.modules for occ in occurrences(m, snap.project)]


def definition(snap: Snapshot, file: str, offset: int) -> tuple[str | Path, ast.Span | None] | None:
    """(file, span of the name) of what the cursor names; (path, None) for an imported file."""
    occ = _occurrence(snap, file, offset)
    if occ is None:
        return None
    project = snap.project
    if occ.kind in ("flow", "flow-ref") and occ.name in project.flows:
        return project.flow_file(occ.name), project.flows[occ.name].name_span
    if occ.kind in ("replace", "replace-ref") and occ.name in project.replaces:
        return project.replace_file(occ.name), project.replaces[occ.name].name_span
    if occ.kind == "import":
        target = (snap.paths[file].parent / occ.name).resolve()
        return (target, None) if snap.file_of(target) is not None or target.is_file() else None
    return None


def _same(occ: Occurrence, other: Occurrence) -> bool:
    group = {"flow": "flow", "flow-ref": "flow", "replace": "replace", "replace-ref": "replace"}
    return group.get(occ.kind) is not None and group.get(occ.kind) == group.get(other.kind) and occ.name == other.name


def references(snap: Snapshot, file: str, offset: int, *, include_declaration: bool = True) -> list[tuple[str, ast.Span]]:
    occ = _occurrence(snap, file, offset)
    if occ is None:
        return []
    if occ.kind == "import":
        target = (snap.paths[file].parent / occ.name).resolve()
        return [(f, o.span) for f, o in _all(snap)
                if o.kind == "import" and (snap.paths[f].parent / o.name).resolve() == target]
    return [(f, o.span) for f, o in _all(snap) if _same(occ, o) and (include_declaration or not o.is_declaration)]


def rename_target(snap: Snapshot, file: str, offset: int) -> Occurrence | None:
    """The flow or replacement name under the cursor, when it is one that can be renamed."""
    occ = _occurrence(snap, file, offset)
    if occ is None or occ.kind not in ("flow", "flow-ref", "replace", "replace-ref"):
        return None
    known = snap.project.flows if occ.kind.startswith("flow") else snap.project.replaces
    return occ if occ.name in known else None


def rename(snap: Snapshot, file: str, offset: int, new_name: str) -> list[Edit]:
    occ = rename_target(snap, file, offset)
    if occ is None:
        raise RenameError("only a flow or a replacement can be renamed")
    if not _NAME.match(new_name) or parse(f"flow {new_name} {{}}").diagnostics:
        raise RenameError(f"`{new_name}` is not a valid name (letters, digits and _, not a keyword)")
    taken = {*snap.project.flows, *snap.project.replaces, *snap.project.optouts}
    if new_name in taken:
        raise RenameError(f"`{new_name}` is already declared in this project; names are unique across it")
    if occ.kind.startswith("replace") and new_name in FUNCTIONS:
        raise RenameError(f"`{new_name}` is a built-in function; a replacement cannot take its name")
    return [Edit(f, o.span.start, o.span.end, new_name) for f, o in _all(snap) if _same(occ, o)]


def format_document(text: str, file: str) -> str | None:
    """The document as `mapsync fmt` writes it; None when it does not parse (nothing to do then).

    As in `mapsync fmt`, the result must parse back to the same mapping with the same comments, or the
    buffer is left alone.
    """
    result = parse(text, file)
    if not result.ok:
        return None
    try:
        formatted = format_module(result.module, result.module.comments, source=text)
        same_meaning(result.module, formatted, file)
    except FormatError:
        return None
    return formatted


# ---------------------------------------------------------------------------------------------- code actions


def fixes(snap: Snapshot, diagnostic: Diagnostic) -> list[Fix]:
    """Edits for the checker's hints where the fix is unambiguous."""
    text = snap.text_of(diagnostic.span.file)
    out: list[Fix] = []
    hint = diagnostic.hint or ""
    suggestion = _DID_YOU_MEAN.match(hint)
    if suggestion:
        fix = _did_you_mean(diagnostic, text, suggestion.group(1))
        if fix is not None:
            out.append(fix)
    conversion = _CONVERSION.match(hint)
    if conversion:
        s = diagnostic.span
        written = text[s.start : s.end]
        func = conversion.group(1)
        out.append(Fix(f"Convert with {func}(…)", diagnostic, (Edit(s.file, s.start, s.end, f"{func}({written})"),)))
    if diagnostic.code == "W102":
        out.extend(_missing_cases(snap, diagnostic))
    return out


def _did_you_mean(d: Diagnostic, text: str, suggestion: str) -> Fix | None:
    s = d.span
    written = text[s.start : s.end]
    named = _BACKTICKED.search(d.message)
    if named is None:
        return None
    bad = named.group(1)
    if bad.count(".") > suggestion.count("."):  # `locaton.city` -> `location`: keep the rest of the path
        suggestion = ".".join([*suggestion.split("."), *bad.split(".")[suggestion.count(".") + 1 :]])
    if d.code == "E009" and "/" in bad:
        suggestion = posixpath.join(posixpath.dirname(bad), suggestion)
    if written.count(bad) != 1:
        return None
    at_ = s.start + written.rindex(bad)
    return Fix(f"Change to `{suggestion}`", d, (Edit(s.file, at_, at_ + len(bad), suggestion),))


def _missing_cases(snap: Snapshot, d: Diagnostic) -> list[Fix]:
    """W102 at ``genders(gendercode)``: add the options the replacement has no case for (or an `else`)."""
    module = snap.project.module(d.span.file)
    if module is None:
        return []
    call = next((o for o in occurrences(module, snap.project)
                 if o.kind == "replace-ref" and o.span.start >= d.span.start and o.span.end <= d.span.end), None)
    if call is None or not isinstance(call.owner, ast.Flow) or not isinstance(call.node, ast.Call):
        return []
    info = snap.analysis.flows.get(call.owner.name)
    arg = call.node.args[0] if len(call.node.args) == 1 else None
    if info is None or info.source is None or not isinstance(arg, ast.Path):
        return []
    f = info.source.resolve(arg.parts)
    rep = snap.project.replaces.get(call.name)
    if f is None or rep is None or rep.default is not None:
        return []
    covered = {c.match.value for c in rep.cases}
    missing = [(v, label) for v, label in f.options if v not in covered]
    if not missing:
        return []
    file = snap.project.replace_file(rep.name)
    text = snap.text_of(file)
    close = rep.span.end - 1  # the closing brace
    line_start = text.rfind("\n", 0, close) + 1
    indent = "  "
    if rep.cases:
        first = rep.cases[0].span
        indent = text[text.rfind("\n", 0, first.start) + 1 : first.start]
        indent = indent if not indent.strip() else "  "
    alone = not text[line_start:close].strip()
    at_ = line_start if alone else close
    lead = "" if alone else "\n"

    def block(lines: list[str]) -> str:
        return lead + "".join(f"{indent}{ln}\n" for ln in lines)

    cases = [f"{v} => null  # {label}: TODO" for v, label in missing]
    return [
        Fix(f"Add the missing cases of `{rep.name}` ({', '.join(str(v) for v, _ in missing)})", d,
            (Edit(file, at_, at_, block(cases)),)),
        Fix(f"Add `else => null` to `{rep.name}`", d, (Edit(file, at_, at_, block(["else => null  # TODO"])),)),
    ]
