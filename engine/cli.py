"""The `mapsync` command line: parses arguments and hands each command to its module in `engine/commands/`.

Every command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. Exit codes: 0 ok,
1 findings (invalid mapping, failed test, dead letters), 2 usage or configuration error. Errors a user
can cause arrive here as ``MapsyncError`` and are printed as one message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from mapsync import __version__
from mapsync.dsl.errors import MapsyncError

# The order here is the order `mapsync --help` lists them in.
COMMANDS: tuple[str, ...] = (
    "init",
    "validate",
    "fmt",
    "test",
    "compile",
    "plan",
    "run",
    "status",
    "deadletters",
    "explain",
    "doctor",
    "schema",
    "emulate",
    "demo",
    "lsp",
)

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default exits 2 too; keep one style of message
        self.print_usage(sys.stderr)
        print(f"mapsync: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mapsync", description="Declarative sync between Dynamics 365 and Adobe Campaign.")
    parser.add_argument("--version", action="version", version=f"mapsync {__version__}")
    parser.add_argument("--config", default="mapsync.yaml", help="configuration file (default: ./mapsync.yaml)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"mapsync.engine.commands.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except MapsyncError as exc:
        from mapsync.engine.errors import ConfigError

        print(f"mapsync: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FINDINGS
    except KeyboardInterrupt:
        print("mapsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mapsync compile x | head`: the reader left, which is not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug of ours, not the user's: say so briefly, keep the traceback on request
        if os.environ.get("MAPSYNC_DEBUG"):
            raise
        print(f"mapsync: internal error: {type(exc).__name__}: {exc}\n"
              "  this is a bug in mapsync; run again with MAPSYNC_DEBUG=1 to see the traceback, and report it",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
