"""``mapsync schema pull --env E``: fresh schema snapshots from the live services, for the tables the mappings use.

The files are written in the exact text ``dsl.schema.render_table`` gives, so a pull against an unchanged
service leaves git clean, and a changed column shows up as a reviewable diff. Event feeds
(``campaign.events.*``) are not pulled: the journal publishes no metadata, their snapshots are ours.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.commands._common import add_command
from engine.errors import ConfigError

__all__ = ["add_parser", "pull", "run", "tables_used_by_mappings"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("schema", help="schema snapshots of the connected systems",
                                   description="Schema snapshots of the connected systems.")
    actions = parser.add_subparsers(dest="schema_action", metavar="ACTION")
    actions.required = True
    pull_parser = add_command(actions, "pull", "write fresh snapshots of the tables the mappings use", run, env=True)
    pull_parser.add_argument("--out", default=None, metavar="DIR",
                             help="snapshot folder (default: schemas/snapshots of the project)")
    pull_parser.add_argument("--table", action="append", default=[], metavar="SYSTEM.NAME",
                             help="pull this table (e.g. d365.contact, campaign.profile); repeatable; "
                                  "default: every table the mappings use")


def tables_used_by_mappings(paths: Iterable[Path]) -> list[str]:
    """``system.name`` of every table a flow or opt-out rule of these mapping files reads or writes."""
    from dsl import ast
    from dsl.parser import parse_file
    from engine.errors import SyncError

    found: set[str] = set()
    for path in paths:
        result, _text = parse_file(path)
        if not result.ok:
            raise SyncError(f"{path}: the mapping does not parse; run `mapsync validate` first")
        for decl in result.module.decls:
            refs: list[ast.TableRef | None] = []
            if isinstance(decl, ast.Flow):
                refs = [decl.source, decl.target]
            elif isinstance(decl, ast.OptOut):
                refs = [decl.d365.table, decl.campaign.table]
            found.update(r.dotted for r in refs if r is not None)
    return sorted(found)


def _split(tables: Sequence[str]) -> tuple[list[str], list[str]]:
    d365, campaign = [], []
    for dotted in tables:
        system, _, name = dotted.partition(".")
        if system == "d365" and name:
            d365.append(name)
        elif system == "campaign" and name and not name.startswith("events."):
            campaign.append(name)
        elif not (system == "campaign" and name.startswith("events.")):
            raise ConfigError(f"--table {dotted}: expected d365.<table> or campaign.<resource>", setting="--table")
    return d365, campaign


async def pull(env: Any, tables: Sequence[str], out: Path | None, *, transport: Any = None,
               msal_http_client: Any = None) -> list[Path]:
    """Fetch ``tables`` (``system.name``) from ``env`` and write their snapshots under ``out``."""
    from dsl.schema import write_table
    from engine.connectors import build_connectors

    d365_names, campaign_names = _split(tables)
    connectors = build_connectors(env, transport=transport, msal_http_client=msal_http_client)
    written: list[Path] = []
    try:
        if d365_names:
            if connectors.d365 is None:
                raise ConfigError(f"environments.{env.name}.d365: not configured", setting=f"environments.{env.name}.d365")
            for table in await connectors.d365.fetch_schema(d365_names):
                written.append(write_table(table, out))
        if campaign_names:
            if connectors.campaign is None:
                raise ConfigError(f"environments.{env.name}.campaign: not configured",
                                  setting=f"environments.{env.name}.campaign")
            for table in await connectors.campaign.fetch_schema(campaign_names):
                written.append(write_table(table, out))
    finally:
        await connectors.aclose()
    return written


def run(args: argparse.Namespace) -> int:
    from engine.config import load_config

    config = load_config(Path(args.config))
    env = config.environments.get(args.env)
    if env is None:
        known = ", ".join(sorted(config.environments)) or "none"
        raise ConfigError(f"--env {args.env}: no such environment in {config.path} (known: {known})",
                          setting=f"environments.{args.env}")
    tables = list(args.table) or tables_used_by_mappings(sorted(Path(config.mappings).glob("**/*.map")))
    out = Path(args.out) if args.out else None
    written = asyncio.run(pull(env, tables, out))
    for path in written:
        print(f"wrote {path}", file=sys.stdout)
    return 0
