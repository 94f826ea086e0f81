"""`mapsync validate [PATHS] [--format text|json] [--env E]`: check mappings against the schemas.

Prints every diagnostic (with the source line and a caret, or as a JSON list) and a one-line summary.
Exit 0 when there is no error (warnings are printed), 1 on any error, 2 on a usage error (a path that
does not exist, no mapping files, unreadable snapshots).

``--env E`` checks against the live schema of an environment instead of the shipped snapshots, pulled by
``mapsync.engine.commands.schema.live_catalog`` (or the provider ``run`` is given);
``validate(paths, catalog=...)`` takes any ``Catalog`` directly.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from mapsync.dsl import check, load_project
from mapsync.dsl.diagnostics import Diagnostic, Severity, render_json, render_text
from mapsync.dsl.project import ProjectPathError
from mapsync.dsl.schema import Catalog, SchemaError, load_catalog
from mapsync.engine.commands._common import add_command, project_snapshots
from mapsync.engine.errors import ConfigError

__all__ = ["add_parser", "run", "summary", "validate"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
DEFAULT_PATHS = ("mappings/",)

CatalogProvider = Callable[[argparse.Namespace], Catalog]  # (args with .env, .config, .paths) -> live schema


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "validate", "check mapping files against the schemas of both systems", run)
    parser.add_argument("paths", nargs="*", metavar="PATHS",
                        help="mapping files or folders (default: mappings/)")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument("--env", metavar="E", default=None,
                        help="check against the live schema of this environment instead of the snapshots")
    return parser


def run(args: argparse.Namespace, *, live_catalog: CatalogProvider | None = None) -> int:
    catalog: Catalog | None = None
    if args.env is not None:
        if live_catalog is None:
            from mapsync.engine.commands.schema import live_catalog
        try:
            catalog = live_catalog(args)
        except ConfigError as exc:  # no such environment, no mapsync.yaml, bad credentials: the user's to fix
            print(f"mapsync validate: {exc}", file=sys.stderr)
            return EXIT_USAGE
    paths = [Path(p) for p in (args.paths or DEFAULT_PATHS)]
    if catalog is None:
        try:
            catalog = load_catalog(project_snapshots(args))
        except (ConfigError, SchemaError) as exc:
            print(f"mapsync validate: the schema snapshots cannot be read: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return validate(paths, catalog=catalog, fmt=args.format)


def summary(files: int, flows: int, diagnostics: Sequence[Diagnostic]) -> str:
    """``3 files, 6 flows: 0 errors, 1 warning``."""
    errors = sum(1 for d in diagnostics if d.severity is Severity.ERROR)
    warnings = len(diagnostics) - errors
    return (f"{_plural(files, 'file')}, {_plural(flows, 'flow')}: "
            f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def validate(paths: Sequence[Path], *, catalog: Catalog | None = None, fmt: str = "text",
             out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Load, check and report; returns the exit code. ``catalog`` defaults to the shipped snapshots."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        project, diagnostics = load_project(paths)
    except ProjectPathError as exc:
        print(f"mapsync validate: {exc}", file=err)
        return EXIT_USAGE
    if not project.modules:
        if diagnostics:  # e.g. the only file given is a link leading out of its folder
            print(render_text(diagnostics, project.sources), file=err)
        shown = ", ".join(str(p) for p in paths)
        print(f"mapsync validate: no .map files in {shown}", file=err)
        return EXIT_USAGE
    try:
        catalog = catalog if catalog is not None else load_catalog()
    except SchemaError as exc:
        print(f"mapsync validate: the schema snapshots cannot be read: {exc}", file=err)
        return EXIT_USAGE
    diagnostics = [*diagnostics, *check(project, catalog)]
    line = summary(len(project.modules), len(project.flows), diagnostics)
    if fmt == "json":
        out.write(render_json(diagnostics) + "\n")
        print(line, file=err)  # stdout stays one JSON document
    else:
        text = render_text(diagnostics, project.sources)
        if text:
            out.write(text + "\n")
        print(line, file=out)
    return EXIT_FINDINGS if any(d.is_error for d in diagnostics) else EXIT_OK
