"""``mapsync init [DIR]``: a new integration project (configuration, starter mappings with their tests,
schema snapshots, CI workflow, .gitignore, README), never overwriting a file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mapsync.engine.commands._common import add_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "init", "start a new integration project in DIR (default: here)", run)
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR", help="folder of the new project (default: .)")
    return parser


def run(args: argparse.Namespace) -> int:
    from mapsync.engine.scaffold import write_project

    folder = Path(args.dir)
    written = write_project(folder)
    print(f"mapsync init: wrote {len(written)} files into {folder.resolve()}")
    where = "" if folder.resolve() == Path.cwd() else f"cd {args.dir} && "
    print(f"next: {where}mapsync validate && mapsync test && mapsync demo   (then see README.md)")
    return 0
