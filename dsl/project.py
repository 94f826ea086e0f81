"""A set of `.map` files read together: parsed modules, their imports, and the names they declare.

Flows and opt-outs are project-wide: ``link(new_contactid, contacts)`` names a flow of another file.
Replacements are visible in the file that declares them and in every file that imports it (imports are
transitive: a shared file may itself import a base file). Every name is unique across the project,
so a replacement, a flow or an opt-out means the same thing wherever it is written.

    load_project(paths, root=None, overlays=None) -> (Project, diagnostics)

``overlays`` maps a file's resolved path to text that stands in for what is on disk (an editor's unsaved
buffer); such a file counts as existing even before it is first saved.

Imports resolve relative to the importing file and must stay inside ``root`` (default: the common
folder of the given paths): a mapping cannot read arbitrary files of the machine it is checked on.
Symbolic links are followed, then held to the same rule: a ``*.map`` link or an import that leads out
of the root is refused (E011) without being read, so no diagnostic can quote such a file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mapsync.dsl import ast
from mapsync.dsl.diagnostics import Diagnostic, did_you_mean
from mapsync.dsl.errors import DslError
from mapsync.dsl.graphs import back_edges
from mapsync.dsl.parser import ParseResult, parse, parse_file

__all__ = ["Project", "ProjectPathError", "display_name", "load_project"]


class ProjectPathError(DslError):
    """A path given on the command line does not exist (a usage error, not a finding in a mapping)."""


@dataclass(frozen=True, slots=True)
class _Declared:
    file: str
    span: ast.Span


@dataclass(frozen=True)
class Project:
    """Every module of a mapping project, with name tables built once for the checker and the compiler."""

    root: Path
    modules: tuple[ast.Module, ...]
    sources: dict[str, str]
    flows: dict[str, ast.Flow]
    optouts: dict[str, ast.OptOut]
    replaces: dict[str, ast.Replace]
    version: str
    # file -> the files whose replacements it sees (itself first, then its imports, transitively)
    visible: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _flow_files: dict[str, str] = field(default_factory=dict)
    _replace_files: dict[str, str] = field(default_factory=dict)
    _replaces_by_file: dict[str, Mapping[str, ast.Replace]] = field(default_factory=dict, compare=False, repr=False)

    def flow_file(self, name: str) -> str:
        """The display name of the file that declares flow ``name`` (KeyError when there is none)."""
        return self._flow_files[name]

    def replace_file(self, name: str) -> str:
        """The display name of the file that declares replacement ``name`` (KeyError when there is none)."""
        return self._replace_files[name]

    def replaces_for(self, file: str) -> Mapping[str, ast.Replace]:
        """The replacements a file may call: its own and those of the files it imports (read-only).

        Built once per file: every flow and replacement of a file asks, and building it is a pass over all
        replacements of the project — per caller, that made checking quadratic in the size of a mapping.
        """
        found = self._replaces_by_file.get(file)
        if found is None:
            files = set(self.visible.get(file, (file,)))
            found = MappingProxyType({n: r for n, r in self.replaces.items() if self._replace_files[n] in files})
            self._replaces_by_file[file] = found
        return found

    def module(self, file: str) -> ast.Module | None:
        for m in self.modules:
            if m.file == file:
                return m
        return None

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(m.file for m in self.modules)


def display_name(path: Path) -> str:
    """``mappings/contacts.map`` when the file is below the current directory, else the absolute path."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _expand(paths: Sequence[Path], root: Path, out: list[Diagnostic], overlays: Mapping[Path, str]) -> list[Path]:
    """Files as given, folders as every ``*.map`` below them (sorted), without duplicates, each resolved.

    A file that resolves outside ``root`` (a symbolic link leading out of the mapping folder) is not read:
    an E011 names the link, never the content of what it points at.
    """
    found_files: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists() and path.resolve() not in overlays:
            raise ProjectPathError(f"{path}: no such file or folder")
        found = sorted(p for p in path.rglob("*.map") if p.is_file()) if path.is_dir() else [path]
        for p in found:
            resolved = p.resolve()
            if not resolved.is_relative_to(root):
                shown = _lexical_name(p)
                out.append(Diagnostic.error(
                    "E011", f"`{shown}` is a link to a file outside the mapping folder `{display_name(root)}`; "
                    "it was not read", ast.Span.unknown(shown),
                    "mapping files must be inside the folder being validated; copy the file in instead of linking"))
                continue
            if resolved not in seen:
                seen.add(resolved)
                found_files.append(resolved)
    return found_files


def _lexical_name(path: Path) -> str:
    """``path`` as written (symbolic links not followed), relative to the current folder when below it."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path(os.path.abspath(Path.cwd()))).as_posix()
    except ValueError:
        return absolute.as_posix()


def _default_root(paths: Sequence[Path]) -> Path:
    # The folder a file is in, not the folder its link points into: a link cannot widen the root.
    folders = [str(p.resolve() if p.is_dir() else Path(os.path.abspath(p)).parent.resolve()) for p in map(Path, paths)]
    return Path(os.path.commonpath(folders)) if folders else Path.cwd().resolve()


def load_project(paths: Sequence[Path], *, root: Path | None = None, overlays: Mapping[Path, str] | None = None,
                 parse_overlay: Callable[[str, str], ParseResult] = parse) -> tuple[Project, list[Diagnostic]]:
    """Parse the files (and everything they import) into a ``Project``.

    Returns every problem found on the way as diagnostics: syntax errors, imports that are missing
    (E009), circular (E010) or outside ``root`` (E011), names declared twice (E109). Raises
    ``ProjectPathError`` only when a given path does not exist. ``overlays`` (resolved path -> text) is
    read instead of the disk for those files, parsed by ``parse_overlay`` (the language server's
    ``DeclarationCache.parse``, which gives what ``parse`` does re-parsing only what changed).
    """
    root_dir = (root or _default_root(paths)).resolve()
    diagnostics: list[Diagnostic] = []
    overlays = overlays or {}
    files = _expand(paths, root_dir, diagnostics, overlays)
    modules: dict[Path, ast.Module] = {}
    sources: dict[str, str] = {}
    # file -> [(imported file, span of the import)]: only imports that resolved to a readable file
    edges: dict[Path, list[tuple[Path, ast.Span]]] = {}

    queue = list(files)
    while queue:
        path = queue.pop(0)
        if path in modules:
            continue
        name = display_name(path)
        if path in overlays:
            text = overlays[path]
            result = parse_overlay(text, name)
        else:
            result, text = parse_file(path, display_name=name)
        modules[path] = result.module
        sources[name] = text
        diagnostics.extend(result.diagnostics)
        edges[path] = []
        for decl in result.module.decls:
            if not isinstance(decl, ast.Import):
                continue
            target = _resolve_import(path, decl, root_dir, diagnostics, overlays)
            if target is None:
                continue
            edges[path].append((target, decl.span))
            if target not in modules:
                queue.append(target)

    diagnostics.extend(_cycles(edges, modules))
    ordered = tuple(modules.values())
    by_path = {p: m.file for p, m in modules.items()}
    visible = {by_path[p]: tuple(by_path[q] for q in _reachable(p, edges)) for p in modules}

    flows: dict[str, ast.Flow] = {}
    optouts: dict[str, ast.OptOut] = {}
    replaces: dict[str, ast.Replace] = {}
    declared: dict[str, _Declared] = {}
    flow_files: dict[str, str] = {}
    replace_files: dict[str, str] = {}
    for module in ordered:
        for decl in module.decls:
            if isinstance(decl, ast.Import) or not decl.name:
                continue
            first = declared.get(decl.name)
            if first is not None:
                diagnostics.append(Diagnostic.error(
                    "E109", f"`{decl.name}` is declared twice", decl.name_span,
                    f"the first declaration is at {first.span}; names are unique across the project"))
                continue
            declared[decl.name] = _Declared(module.file, decl.name_span)
            if isinstance(decl, ast.Flow):
                flows[decl.name] = decl
                flow_files[decl.name] = module.file
            elif isinstance(decl, ast.Replace):
                replaces[decl.name] = decl
                replace_files[decl.name] = module.file
            else:
                optouts[decl.name] = decl

    project = Project(
        root=root_dir,
        modules=ordered,
        sources=sources,
        flows=flows,
        optouts=optouts,
        replaces=replaces,
        version=_version(root_dir, modules, sources),
        visible=visible,
        _flow_files=flow_files,
        _replace_files=replace_files,
    )
    return project, diagnostics


def _resolve_import(importer: Path, decl: ast.Import, root: Path, out: list[Diagnostic],
                    overlays: Mapping[Path, str]) -> Path | None:
    if "\x00" in decl.path or not decl.path.strip():  # no file system takes these as a name
        out.append(Diagnostic.error("E009", f"`{decl.path!r}` is not a file name", decl.span,
                                    'write the path of a .map file, e.g. import "replacements.map"'))
        return None
    written = Path(os.path.normpath(importer.parent / decl.path))
    target = written.resolve()
    if not target.is_relative_to(root):
        how = "leads outside" if written.is_relative_to(root) else "is outside"
        out.append(Diagnostic.error(
            "E011", f"`{decl.path}` {how} the mapping folder `{display_name(root)}`", decl.span,
            "imports must stay inside the folder being validated; copy the file in or widen the root"))
        return None
    if target == importer:
        out.append(Diagnostic.error("E010", "this file imports itself", decl.span, "remove the import"))
        return None
    if target in overlays:  # an editor's buffer, saved or not
        return target
    if target.is_dir():
        out.append(Diagnostic.error("E009", f"`{decl.path}` is a folder, not a mapping file", decl.span,
                                    'import one .map file, e.g. import "shared/replacements.map"'))
        return None
    if target.exists() and not target.is_file():
        out.append(Diagnostic.error("E009", f"`{decl.path}` is not a regular file", decl.span,
                                    "import a .map file"))
        return None
    if not target.is_file():
        hint = None
        siblings = sorted(p.name for p in target.parent.glob("*.map")) if target.parent.is_dir() else []
        if siblings:
            hint = did_you_mean(target.name, siblings)
        out.append(Diagnostic.error("E009", f"imported file `{decl.path}` does not exist", decl.span, hint))
        return None
    return target


def _cycles(edges: Mapping[Path, list[tuple[Path, ast.Span]]], modules: Mapping[Path, ast.Module]) -> list[Diagnostic]:
    """One E010 per import that closes a cycle (a back edge of a depth-first walk in file order)."""
    return [Diagnostic.error("E010", "this import makes a cycle: " + " -> ".join(modules[p].file for p in cycle), span,
                             "move the shared replacements into a file that imports nothing")
            for cycle, _, span in back_edges(edges, lambda p: edges.get(p, []))]


def _reachable(start: Path, edges: Mapping[Path, list[tuple[Path, ast.Span]]]) -> list[Path]:
    out, seen, queue = [], {start}, [start]
    while queue:
        node = queue.pop(0)
        out.append(node)
        for child, _ in edges.get(node, []):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return out


def _version(root: Path, modules: Mapping[Path, ast.Module], sources: Mapping[str, str]) -> str:
    """sha256 over each file's path (relative to the root, so the checkout location does not matter) and text."""
    digest = hashlib.sha256()
    for path in sorted(modules):
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = path.as_posix()
        text = sources.get(modules[path].file, "")
        for part in (rel, text):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
    return digest.hexdigest()
