"""What every command shares: how a subcommand is declared, and the options most of them take."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def add_command(subparsers: Any, name: str, summary: str, handler: Handler, *, env: bool = False) -> argparse.ArgumentParser:
    """Declare ``mapsync NAME``; ``env=True`` adds ``--env E`` for commands that talk to a configured environment."""
    parser = subparsers.add_parser(name, help=summary, description=summary)
    # SUPPRESS keeps the top-level default when the option is not repeated after the command.
    parser.add_argument("--config", default=argparse.SUPPRESS, help="configuration file (default: ./mapsync.yaml)")
    if env:
        parser.add_argument("--env", required=True, metavar="E", help="environment name in mapsync.yaml (e.g. stage)")
    parser.set_defaults(handler=handler)
    return parser
