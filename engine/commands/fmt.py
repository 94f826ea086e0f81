"""`mapsync fmt [--check] [PATHS]`: rewrite mapping files in the canonical layout (docs/formatting.md).

Without ``--check`` each file that is not canonical is rewritten in place, atomically (a temporary file
in the same folder, then a rename), so an interrupted run never leaves half a mapping behind. With
``--check`` nothing is written: each file that would change is named with a unified diff.

A file that does not parse is left untouched and its diagnostics are printed. Before writing, the new
text is parsed again and must say exactly what the old one said (same tree, same comments): the
formatter must never change a mapping's meaning, so if it ever would, the file is left alone and the
run fails with an internal-error message instead.

Exit codes: 0 all files canonical (or rewritten), 1 ``--check`` found files to change or a file does
not parse, 2 usage errors (a path that does not exist).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mapsync.dsl.diagnostics import render_text
from mapsync.dsl.formatter import FormatError, format_module
from mapsync.dsl.parser import parse, parse_file
from mapsync.dsl.project import display_name
from mapsync.engine.commands._common import add_command

__all__ = ["add_parser", "fmt", "run"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
DEFAULT_PATHS = ("mappings/",)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "fmt", "rewrite mapping files in the canonical layout", run)
    parser.add_argument("paths", nargs="*", metavar="PATHS", help="mapping files or folders (default: mappings/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list the files that would change, with a diff, and exit 1")
    return parser


def run(args: argparse.Namespace) -> int:
    return fmt([Path(p) for p in (args.paths or DEFAULT_PATHS)], check=args.check)


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str  # "unchanged" | "changed" | "invalid"
    original: str = ""
    formatted: str = ""


def fmt(paths: Sequence[Path], *, check: bool = False, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Format (or with ``check`` only compare) every mapping file under ``paths``; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    missing = [p for p in paths if not p.exists()]
    if missing:
        for p in missing:
            print(f"mapsync fmt: {p}: no such file or folder", file=err)
        return EXIT_USAGE
    files = _files(paths)
    if not files:
        print(f"mapsync fmt: no .map files in {', '.join(str(p) for p in paths)}", file=err)
        return EXIT_USAGE
    counts: Counter[str] = Counter()
    for path in files:
        name = display_name(path)
        outcome = _format_file(path, name, err)
        counts[outcome.status] += 1
        if outcome.status != "changed":
            continue
        if check:
            print(f"would reformat {name}", file=out)
            out.writelines(difflib.unified_diff(
                outcome.original.splitlines(keepends=True), outcome.formatted.splitlines(keepends=True),
                fromfile=name, tofile=f"{name} (formatted)"))
            continue
        try:
            _write_atomically(path, outcome.formatted)
        except OSError as exc:
            print(f"mapsync fmt: {name}: cannot write the file: {exc.strerror or exc}", file=err)
            counts["invalid"] += 1
            continue
        print(f"reformatted {name}", file=out)
    print(_summary(counts, check), file=err)
    if counts["invalid"] or (check and counts["changed"]):
        return EXIT_FINDINGS
    return EXIT_OK


def _files(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders as every ``*.map`` below them (sorted), each once."""
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for p in sorted(q for q in path.rglob("*.map") if q.is_file()) if path.is_dir() else [path]:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append(p)
    return found


def _format_file(path: Path, name: str, err: TextIO) -> _Outcome:
    result, text = parse_file(path, display_name=name)
    if not result.ok:
        err.write(render_text(result.diagnostics, {name: text}))
        return _Outcome("invalid")
    try:
        formatted = format_module(result.module, result.module.comments, source=text)
        _same_meaning(result.module, formatted, name)
    except FormatError as exc:
        print(f"mapsync fmt: {name}: internal error, the file is left as it is: {exc}", file=err)
        return _Outcome("invalid")
    if formatted == text:
        return _Outcome("unchanged")
    return _Outcome("changed", text, formatted)


def _same_meaning(module: Any, formatted: str, name: str) -> None:
    again = parse(formatted, name)
    if not again.ok or again.module != module:
        raise FormatError("the formatted text would not parse to the same mapping")
    if sorted(c.text for c in again.module.comments) != sorted(c.text for c in module.comments):
        raise FormatError("the formatted text would lose or change a comment")


def _write_atomically(path: Path, text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, path.stat().st_mode & 0o7777)  # keep the file's permissions, not mkstemp's 0600
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _summary(counts: Counter[str], check: bool) -> str:
    changed = counts["changed"]
    verb = "would be reformatted" if check else "reformatted"
    parts = [f"{changed} file{'' if changed == 1 else 's'} {verb}", f"{counts['unchanged']} unchanged"]
    if counts["invalid"]:
        parts.append(f"{counts['invalid']} with errors")
    return "mapsync fmt: " + ", ".join(parts)
