"""``mapsync doctor --env E [--format text|json]``: the environment's setup checked against its live services.

One line per check, ✓ or ✗ (or ``-`` for a check skipped because one it depends on failed), what was found
and, for a ✗, the step that fixes it. ``--format json`` prints a list of ``{check, ok, detail, fix}`` (``ok``
is null for a skipped check). Exit 0 when every check passed, 1 otherwise, 2 for a configuration mapsync
cannot even load. The checks themselves are in ``mapsync.engine.doctor``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapsync.engine.commands._common import add_command

if TYPE_CHECKING:  # the checks are imported when the command runs, not at every `mapsync` start
    from mapsync.engine.doctor import Check


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "doctor", "check the environment's setup against the live services", run, env=True)
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")


def run(args: argparse.Namespace) -> int:
    from mapsync.engine.doctor import diagnose, needs_of
    from mapsync.engine.runner import load_job

    job = load_job(Path(args.config), args.env)  # the mappings must check first: it says so, naming validate
    env, catalog = job.env, job.catalog
    # Retries and the like would interleave with the checklist: the findings say what matters.
    logger = logging.getLogger("mapsync")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        checks = asyncio.run(diagnose(env, needs_of(job.flows, catalog), catalog=catalog))
    finally:
        logger.setLevel(level)
    if args.format == "json":
        print(json.dumps([c.as_dict() for c in checks], indent=2, ensure_ascii=False))
    else:
        print(render(checks, env.name, encoding=sys.stdout.encoding))
    return 0 if all(c.ok for c in checks) else 1


def render(checks: Sequence[Check], env_name: str, *, encoding: str | None = "utf-8") -> str:
    marks = {True: "✓", False: "✗", None: "-"}
    try:
        "✓✗→".encode(encoding or "utf-8")
    except (LookupError, UnicodeEncodeError):  # a terminal that cannot show them: plain words
        marks = {True: "ok", False: "FAIL", None: "-"}
    width = max((len(c.check) for c in checks), default=0)
    lines = [f"mapsync doctor — environment {env_name}"]
    for c in checks:
        line = f"{marks[c.ok]} {c.check.ljust(width)}  {c.detail}"
        if c.ok is False and c.fix:
            line += f" — fix: {c.fix}"
        lines.append(line)
    failed = sum(c.ok is False for c in checks)
    passed = sum(c.ok is True for c in checks)
    skipped = sum(c.ok is None for c in checks)
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    text = "\n".join(lines)
    if marks[True] == "ok":
        text = text.replace("→", "->").replace("—", "-")
        text = text.encode(encoding or "ascii", "replace").decode(encoding or "ascii")
    return text
