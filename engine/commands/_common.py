"""What every command shares: how a subcommand is declared, and the options most of them take."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
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


def project_snapshots(args: argparse.Namespace) -> Path:
    """The snapshot folder of the project a command runs in: ``snapshots:`` of its ``mapsync.yaml``, else the
    ``schemas/snapshots`` beside that file, else the built-in snapshots."""
    from mapsync.engine.config import snapshot_root

    return snapshot_root(Path(getattr(args, "config", "mapsync.yaml")))


# The emulators' own packages (the `emulators` extra): a production install leaves them out.
EMULATOR_PACKAGES = {"starlette": "starlette", "uvicorn": "uvicorn", "trustme": "trustme",
                     "multipart": "python-multipart", "jwt": "PyJWT"}


def require_emulators(command: str) -> None:
    """Stop with the install command when the emulators' packages are missing, before anything is imported."""
    from mapsync.engine.errors import ConfigError

    missing = [dist for module, dist in EMULATOR_PACKAGES.items() if not _importable(module)]
    if missing:
        raise ConfigError(f"`mapsync {command}` needs the emulators, which are not installed (missing: "
                          f"{', '.join(missing)}); install them with: pip install 'mapsync[emulators]'",
                          setting="mapsync[emulators]")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:  # not installed, or installed broken: either way `pip install` is the fix
        return False
    return True
