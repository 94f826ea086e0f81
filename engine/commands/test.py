"""`mapsync test [PATHS]`: run the mapping tests (``*.test.yaml``) beside the mappings.

Prints each failed case as ``file:line: FAIL name`` with a field-level diff, a summary, and the mapping
lines no case exercised. Exit 0 when every case passes, 1 when one fails (or a test file is invalid),
2 when a path does not exist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mapsync.dsl.diagnostics import render_text
from mapsync.dsl.errors import CheckError
from mapsync.dsl.project import ProjectPathError
from mapsync.dsl.testing import find_test_files, render, run_tests
from mapsync.engine.commands._common import add_command

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
DEFAULT_PATHS = ("mappings/",)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "test", "run the mapping tests (*.test.yaml) and report line coverage", run)
    parser.add_argument("paths", nargs="*", metavar="PATHS", help="test files or folders (default: mappings/)")
    return parser


def run(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in (args.paths or DEFAULT_PATHS)]
    for p in paths:
        if not p.exists():
            print(f"mapsync test: {p}: no such file or folder", file=sys.stderr)
            return EXIT_USAGE
    if not find_test_files(paths):
        print(f"mapsync test: no *.test.yaml under {', '.join(map(str, paths))}", file=sys.stderr)
        return EXIT_FINDINGS
    try:
        report = run_tests(paths)
    except ProjectPathError as exc:
        print(f"mapsync test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CheckError as exc:
        # The mappings must check before their tests mean anything: show why they do not.
        print(render_text(exc.diagnostics, {}), file=sys.stderr, end="")
        print(f"mapsync test: {exc}", file=sys.stderr)
        return EXIT_FINDINGS
    sys.stdout.write(render(report))
    return EXIT_OK if report.ok else EXIT_FINDINGS
