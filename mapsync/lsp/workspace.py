"""Open buffers over the disk, and the checked state of the project a file belongs to.

A file's project is the folder `mapsync validate FOLDER` would be given: starting at the file's folder,
go up while the parent folder holds `.map` files too (and stays inside the editor's workspace). Its schema
snapshots are those `mapsync validate` would use with the nearest `mapsync.yaml` at or above that folder
(``snapshots:`` of that file, else the project's own `schemas/snapshots`, else the built-in ones). Unsaved
buffers stand in for the files on disk (``load_project(overlays=...)``), so diagnostics, completion and
navigation see what the user is typing. A snapshot is computed once per change and reused by every
request until the next change. Buffers are parsed through a ``DeclarationCache``: a change re-parses only
the declarations whose text changed (the checker still checks the whole project).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mapsync.dsl import ast
from mapsync.dsl.checker import Analysis, analyze
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.errors import MapsyncError
from mapsync.dsl.incremental import DeclarationCache
from mapsync.dsl.project import Project, display_name, load_project
from mapsync.dsl.schema import Catalog, load_catalog
from mapsync.engine.config import snapshot_root

__all__ = ["Snapshot", "Workspace", "offset_of", "position_of"]


@dataclass(frozen=True)
class Snapshot:
    """One project checked as `mapsync validate` checks it: the same diagnostics, plus what the checker resolved."""

    folder: Path
    project: Project
    catalog: Catalog
    analysis: Analysis
    diagnostics: tuple[Diagnostic, ...]
    paths: dict[str, Path] = field(default_factory=dict)  # display name -> resolved path

    def file_of(self, path: Path) -> str | None:
        for name, p in self.paths.items():
            if p == path:
                return name
        return None

    def text_of(self, file: str) -> str:
        return self.project.sources.get(file, "")

    def diagnostics_by_path(self) -> dict[Path, list[Diagnostic]]:
        out: dict[Path, list[Diagnostic]] = {p: [] for p in self.paths.values()}
        for d in self.diagnostics:
            path = self.paths.get(d.span.file)
            if path is not None:
                out.setdefault(path, []).append(d)
        return out


class Workspace:
    """The buffers the editor has open and the snapshots of their projects (recomputed after each change)."""

    def __init__(self, roots: Iterable[Path] = (), *, config: Path | None = None) -> None:
        self.roots = tuple(r.resolve() for r in roots)
        self.config = config  # `mapsync lsp --config FILE`: that file for every project
        self.buffers: dict[Path, str] = {}
        self._snapshots: dict[Path, Snapshot] = {}
        self._parsed = DeclarationCache()  # the last parse of each buffer, declaration by declaration
        self.problems: list[str] = []  # configuration problems to tell the user (once each)

    def catalog_for(self, folder: Path) -> Catalog:
        """The snapshots `mapsync validate` would check this folder against."""
        config = self.config or self._nearest_config(folder)
        try:
            return load_catalog(snapshot_root(config))
        except MapsyncError as exc:  # a bad `snapshots:` setting or snapshot file: the built-in ones, and say so
            message = f"mapsync: {exc}; checking against the built-in snapshots"
            if message not in self.problems:
                self.problems.append(message)
            return load_catalog()

    def _nearest_config(self, folder: Path) -> Path:
        at = folder
        while True:
            if (at / "mapsync.yaml").is_file():
                return at / "mapsync.yaml"
            if at.parent == at or not self._inside_roots(at.parent):
                return Path("mapsync.yaml")  # as `mapsync validate` does: the current folder's, if any
            at = at.parent

    # ---- buffers
    def set_buffer(self, path: Path, text: str) -> None:
        self.buffers[path.resolve()] = text
        self._forget(path)

    def drop_buffer(self, path: Path) -> None:
        self.buffers.pop(path.resolve(), None)
        self._parsed.forget(display_name(path.resolve()))
        self._forget(path)

    def disk_changed(self, path: Path) -> None:
        self._forget(path)

    def _forget(self, path: Path) -> None:
        folder = self.folder_of(path)
        for key in list(self._snapshots):
            if key == folder or folder.is_relative_to(key) or key.is_relative_to(folder):
                del self._snapshots[key]

    # ---- projects
    def folder_of(self, path: Path) -> Path:
        """The mapping folder `mapsync validate` would be given for this file."""
        folder = path.resolve().parent
        while folder.parent != folder and self._inside_roots(folder.parent) and self._has_maps(folder.parent):
            folder = folder.parent
        return folder

    def _inside_roots(self, folder: Path) -> bool:
        return not self.roots or any(folder.is_relative_to(r) for r in self.roots)

    def _has_maps(self, folder: Path) -> bool:
        if any(p.parent == folder for p in self.buffers):
            return True
        try:
            return any(p.is_file() for p in folder.glob("*.map"))
        except OSError:
            return False

    def snapshot(self, path: Path) -> Snapshot:
        folder = self.folder_of(path)
        cached = self._snapshots.get(folder)
        if cached is None:
            cached = self._snapshots[folder] = self._check(folder)
        return cached

    def _check(self, folder: Path) -> Snapshot:
        overlays = {p: t for p, t in self.buffers.items() if p.is_relative_to(folder)}
        unsaved = [p for p in overlays if not p.exists()]  # a new buffer not saved yet is part of the project
        project, loaded = load_project([folder, *unsaved], root=folder, overlays=overlays,
                                       parse_overlay=self._parsed.parse)
        catalog = self.catalog_for(folder)
        analysis = analyze(project, catalog)
        cwd = Path.cwd()
        paths = {m.file: (cwd / m.file).resolve() for m in project.modules}
        return Snapshot(folder, project, catalog, analysis, (*loaded, *analysis.diagnostics), paths)

    def module(self, path: Path) -> tuple[Snapshot, ast.Module | None, str]:
        """The snapshot of ``path``'s project, the module parsed from it, and its text."""
        snap = self.snapshot(path)
        file = snap.file_of(path.resolve())
        if file is None:
            return snap, None, self.buffers.get(path.resolve(), "")
        return snap, snap.project.module(file), snap.text_of(file)


def offset_of(text: str, line: int, col: int) -> int:
    """Offset of a 0-based line and character column (clamped to the text)."""
    at = 0
    for _ in range(line):
        nl = text.find("\n", at)
        if nl == -1:
            return len(text)
        at = nl + 1
    end = text.find("\n", at)
    end = len(text) if end == -1 else end
    return min(at + max(col, 0), end)


def position_of(text: str, offset: int) -> tuple[int, int]:
    """0-based line and character column of an offset."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset)
    return line, offset - (text.rfind("\n", 0, offset) + 1)
