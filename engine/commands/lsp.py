"""`mapsync lsp`: the language server for `.map` files, over stdio (editor set-up: docs/editors.md).

It needs the ``lsp`` extra (``pip install 'mapsync[lsp]'``: pygls and lsprotocol); without it the command
says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mapsync.engine.commands._common import add_command

__all__ = ["add_parser", "run"]

EXIT_USAGE = 2
DEFAULT_CONFIG = "mapsync.yaml"  # not given: each mapping folder uses the nearest mapsync.yaml at or above it


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "lsp", "language server for .map files over stdio (for editors)", run)
    parser.add_argument("--stdio", action="store_true", help="speak LSP over stdin/stdout (the default and only transport)")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        from mapsync.lsp.server import main
    except ImportError as exc:
        if exc.name not in ("pygls", "lsprotocol") and not str(exc.name or "").startswith(("pygls.", "lsprotocol.")):
            raise
        print("mapsync lsp: the language server needs pygls; install it with: pip install 'mapsync[lsp]'",
              file=sys.stderr)
        return EXIT_USAGE
    config = getattr(args, "config", DEFAULT_CONFIG)
    main(None if config == DEFAULT_CONFIG else Path(config))
    return 0
