"""`mapsync demo`: run every flow against the built-in emulators, change both systems, run again, verify."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mapsync.engine.commands._common import add_command
from mapsync.engine.progress import configure_logging


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "demo", "the whole sync end to end on the built-in emulators, verified", run)
    p.add_argument("--contacts", type=int, default=500, help="seeded contacts (default 500)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--faults", default="none", choices=("none", "flaky", "hostile"),
                   help="fault profile of the emulators (default none)")
    p.add_argument("--project", type=Path, default=Path("."), help="folder holding mappings/ (default: .)")


def run(args: argparse.Namespace) -> int:
    from mapsync.engine.demo import run_demo

    configure_logging(quiet=True)
    result = run_demo(args.project.resolve(), contacts=args.contacts, seed=args.seed, faults=args.faults)
    return 0 if result.ok else 1
