"""``mapsync schema pull --env E``: fresh schema snapshots from the live services, for the tables the mappings use.

The files are written in the exact text ``mapsync.dsl.schema.render_table`` gives, so a pull against an unchanged
service leaves git clean, and a changed column shows up as a reviewable diff. Where a snapshot file is
already there, its field order is kept (new fields go last): services list columns in an order of their
own, and a reordering is not a change worth reviewing. Event feeds (``campaign.events.*``) are not
pulled: the events journal publishes no metadata, their snapshots are ours, and the command says so.

The same pull, in memory, gives ``mapsync validate --env E`` its live catalog (``live_catalog``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mapsync.engine.commands._common import add_command, project_snapshots
from mapsync.engine.errors import ConfigError

if TYPE_CHECKING:  # imported lazily at run time: every `mapsync` start imports this module
    from mapsync.dsl.schema import Catalog, FieldSchema, TableSchema

__all__ = ["EVENT_FEED_NOTE", "add_parser", "fetch", "live_catalog", "pull", "run", "tables_used_by_mappings"]

EVENT_FEED_NOTE = "the events journal publishes no metadata; kept the shipped snapshot"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("schema", help="schema snapshots of the connected systems",
                                   description="Schema snapshots of the connected systems.")
    actions = parser.add_subparsers(dest="schema_action", metavar="ACTION")
    actions.required = True
    pull_parser = add_command(actions, "pull", "write fresh snapshots of the tables the mappings use", run, env=True)
    pull_parser.add_argument("--out", default=None, metavar="DIR",
                             help="snapshot folder (default: the project's schemas/snapshots, or its `snapshots:`)")
    pull_parser.add_argument("--table", action="append", default=[], metavar="[SYSTEM.]NAME",
                             help="pull this table (e.g. new_membership or d365.contact, campaign.profile); "
                                  "repeatable; default: every table the mappings use")
    pull_parser.add_argument("--resource", action="append", default=[], metavar="NAME",
                             help="pull this Campaign resource (e.g. cusMembership, profile); repeatable")


def tables_used_by_mappings(paths: Iterable[Path], *, strict: bool = True) -> list[str]:
    """``system.name`` of every table a flow or opt-out rule of these mapping files reads or writes.

    A file that does not parse raises ``SyncError``, or is passed over with ``strict=False`` (``validate``
    reports it itself)."""
    from mapsync.dsl.errors import DslSyntaxError
    from mapsync.dsl.plan import tables_used
    from mapsync.engine.errors import SyncError

    try:
        return tables_used(paths, strict=strict)
    except DslSyntaxError as exc:
        raise SyncError(str(exc)) from None


def _map_files(paths: Iterable[Path]) -> list[Path]:
    files: set[Path] = set()
    for path in paths:
        files.update(path.glob("**/*.map") if path.is_dir() else [path] if path.suffix == ".map" else [])
    return sorted(files)


def _is_feed(dotted: str) -> bool:
    return dotted.startswith("campaign.events.")


def _split(tables: Sequence[str]) -> tuple[list[str], list[str]]:
    d365, campaign = [], []
    for dotted in tables:
        system, _, name = dotted.partition(".")
        if _is_feed(dotted):
            continue
        if system == "d365" and name:
            d365.append(name)
        elif system == "campaign" and name:
            campaign.append(name)
        else:
            raise ConfigError(f"--table {dotted}: expected d365.<table> or campaign.<resource>", setting="--table")
    return d365, campaign


async def fetch(env: Any, tables: Sequence[str], *, skip_missing: bool = False, transport: Any = None,
                msal_http_client: Any = None) -> list[TableSchema]:
    """The live schema of ``tables`` (``system.name``; event feeds are passed over) of ``env``, in memory.

    A table the service does not have raises ``TerminalError``, or is left out with ``skip_missing``."""
    from mapsync.engine.connectors import build_connectors

    d365_names, campaign_names = _split(tables)
    connectors = build_connectors(env, transport=transport, msal_http_client=msal_http_client)
    found: list[TableSchema] = []
    try:
        if d365_names:
            if connectors.d365 is None:
                raise ConfigError(f"environments.{env.name}.d365: not configured", setting=f"environments.{env.name}.d365")
            found += await connectors.d365.fetch_schema(d365_names, skip_missing=skip_missing)
        if campaign_names:
            if connectors.campaign is None:
                raise ConfigError(f"environments.{env.name}.campaign: not configured",
                                  setting=f"environments.{env.name}.campaign")
            found += await connectors.campaign.fetch_schema(campaign_names, skip_missing=skip_missing)
    finally:
        await connectors.aclose()
    return found


async def pull(env: Any, tables: Sequence[str], out: Path | None, *, transport: Any = None,
               msal_http_client: Any = None) -> list[Path]:
    """Fetch ``tables`` (``system.name``) from ``env`` and write their snapshots under ``out``."""
    return [path for path, _changed in await _pull(env, tables, out, transport=transport,
                                                   msal_http_client=msal_http_client)]


async def _pull(env: Any, tables: Sequence[str], out: Path | None, *, transport: Any = None,
                msal_http_client: Any = None) -> list[tuple[Path, bool]]:
    from mapsync.dsl.schema import DEFAULT_ROOT, render_table, snapshot_path

    root = out or DEFAULT_ROOT
    written = []
    for table in await fetch(env, tables, transport=transport, msal_http_client=msal_http_client):
        path = snapshot_path(root, table.system, table.name)
        previous = _read_text(path)
        text = render_table(_in_previous_order(table, previous))
        changed = text != previous
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        written.append((path, changed))
    return written


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _in_previous_order(table: TableSchema, previous: str | None) -> TableSchema:
    """``table`` with its fields in the order of the existing snapshot text (fields new to it go last)."""
    try:
        old = json.loads(previous) if previous else None
    except ValueError:
        return table  # not a snapshot we can read: the service's order
    if not isinstance(old, dict) or not isinstance(old.get("fields"), dict):
        return table
    return replace(table, fields=_reorder(table.fields, old["fields"]))


def _reorder(fields: Mapping[str, FieldSchema], old: Mapping[str, Any]) -> Mapping[str, FieldSchema]:
    known = [name for name in old if name in fields]
    order = known + [name for name in fields if name not in old]
    out: dict[str, FieldSchema] = {}
    for name in order:
        f = fields[name]
        nested = old.get(name, {}).get("fields") if isinstance(old.get(name), dict) else None
        if f.fields and isinstance(nested, dict):
            f = replace(f, fields=_reorder(f.fields, nested))
        out[name] = f
    return MappingProxyType(out)


def _environment(config_path: Path, name: str) -> tuple[Any, Any]:
    from mapsync.engine.config import load_config

    config = load_config(config_path, only=name)
    env = config.environments.get(name)
    if env is None:
        known = ", ".join(sorted(config.environments)) or "none"
        raise ConfigError(f"--env {name}: no such environment in {config.path} (known: {known})",
                          setting=f"environments.{name}")
    return config, env


def run(args: argparse.Namespace) -> int:
    from mapsync.dsl.schema import DEFAULT_ROOT, PROJECT_SNAPSHOTS

    config, env = _environment(Path(args.config), args.env)
    asked = [t if "." in t else f"d365.{t}" for t in args.table] + [f"campaign.{r}" for r in args.resource]
    tables = asked or tables_used_by_mappings(_map_files([Path(config.mappings)]))
    _split(tables)  # a malformed name is refused before anything is created
    out = Path(args.out) if args.out else _project_folder(config, DEFAULT_ROOT, PROJECT_SNAPSHOTS)
    for path, changed in asyncio.run(_pull(env, tables, out)):
        print(f"{'wrote' if changed else 'unchanged'} {path}", file=sys.stdout)
    for dotted in tables:
        if _is_feed(dotted):
            print(f"skipped {dotted}: {EVENT_FEED_NOTE}", file=sys.stdout)
    return 0


def _project_folder(config: Any, built_in: Path, relative: Path) -> Path:
    """Where a pull writes by default: the project's own snapshots, never the built-in ones (inside an installed
    mapsync). A project without a folder of its own gets one, started from the built-in snapshots: the
    checker reads that folder instead of the built-in one, so it must hold every table, not only those pulled."""
    if config.snapshots != built_in:
        return Path(config.snapshots)
    folder = config.path.parent / relative
    if not folder.exists():
        shutil.copytree(built_in, folder)
        print(f"created {folder} from mapsync's built-in snapshots", file=sys.stdout)
    return folder


def live_catalog(args: argparse.Namespace) -> Catalog:
    """``mapsync validate --env E``: the live schema of the tables the checked mappings use, pulled in memory
    (nothing written). Event feeds have no live schema: their shipped snapshots stand in. A table the
    service does not have is left out, so the checker reports it as unknown."""
    from mapsync.dsl.schema import Catalog, load_catalog

    # `--config` is a top-level option of `mapsync`; a parser built for validate alone may not have it.
    _config, env = _environment(Path(getattr(args, "config", "mapsync.yaml")), args.env)
    paths = [Path(p) for p in (args.paths or ("mappings/",))]
    tables = tables_used_by_mappings(_map_files(paths), strict=False)
    live = asyncio.run(fetch(env, tables, skip_missing=True))
    feeds = [t for t in load_catalog(project_snapshots(args)).tables("campaign") if _is_feed(t.dotted)]
    print(f"checking against the live schema of {args.env}: {len(live)} tables pulled, "
          f"{len(feeds)} event feeds from the shipped snapshots ({EVENT_FEED_NOTE.split(';')[0]})", file=sys.stderr)
    return Catalog.from_tables([*feeds, *live])

