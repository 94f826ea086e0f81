"""`mapsync deadletters list|show|retry --env E`: the records that could not be synced, and why."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from mapsync.engine.commands._common import add_command
from mapsync.engine.config import load_config
from mapsync.engine.errors import ConfigError
from mapsync.engine.progress import console
from mapsync.engine.state.base import DeadLetterStatus, open_store


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "deadletters", "list, show or retry records that could not be synced", run, env=True)
    p.add_argument("action", choices=("list", "show", "retry"))
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead letter ids (show, retry)")
    p.add_argument("--flow", help="only this flow's dead letters")
    p.add_argument("--status", choices=[s.value for s in DeadLetterStatus], default=None,
                   help="only dead letters in this state (list; default: open and queued)")
    p.add_argument("--limit", type=int, default=50, help="how many to list (default 50)")
    p.add_argument("--all", action="store_true", help="retry: every open dead letter (of --flow, if given)")
    p.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    env = load_config(Path(args.config)).environment(args.env)
    with open_store(env.state_url, password=env.state_password) as store:
        if args.action == "list":
            return _list(store, args)
        if args.action == "show":
            return _show(store, args)
        return _retry(store, args, env.name)


def _list(store: Any, args: argparse.Namespace) -> int:
    if args.status:
        letters = store.list_dead_letters(flow=args.flow, status=args.status, limit=args.limit)
    else:
        letters = [d for d in store.list_dead_letters(flow=args.flow, limit=args.limit * 4)
                   if d.status != DeadLetterStatus.RESOLVED][: args.limit]
    if args.format == "json":
        print(json.dumps([_as_dict(d) for d in letters], indent=2, ensure_ascii=False, default=str))
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for col in ("id", "flow", "key", "field", "mapping", "attempts", "status", "reason"):
        table.add_column(col, overflow="fold")
    for d in letters:
        where = f"{d.mapping_file}:{d.mapping_line}" if d.mapping_line else (d.mapping_file or "")
        table.add_row(str(d.id), d.flow, d.source_key, d.field or "", where, str(d.attempts), d.status, d.reason)
    console.print(table)
    console.print(f"{len(letters)} dead letter(s) shown")
    return 0


def _show(store: Any, args: argparse.Namespace) -> int:
    if not args.ids:
        raise ConfigError("`deadletters show` needs one or more ids (see `mapsync deadletters list`)", setting="ids")
    missing = 0
    for i in args.ids:
        d = store.get_dead_letter(i)
        if d is None:
            console.print(f"no dead letter {i}")
            missing += 1
            continue
        print(json.dumps(_as_dict(d), indent=2, ensure_ascii=False, default=str))
    return 1 if missing else 0


def _retry(store: Any, args: argparse.Namespace, env: str) -> int:
    if args.ids:
        letters = [store.get_dead_letter(i) for i in args.ids]
        if any(d is None for d in letters):
            raise ConfigError("unknown dead letter id(s): " + ", ".join(str(i) for i, d in zip(args.ids, letters, strict=True)
                                                                           if d is None), setting="ids")
    elif args.all:
        letters = store.list_dead_letters(flow=args.flow, status=DeadLetterStatus.OPEN, limit=1_000_000)
    else:
        raise ConfigError("`deadletters retry` needs ids, or --all (optionally with --flow)", setting="ids")
    for d in letters:
        store.set_dead_letter_status(d.id, DeadLetterStatus.RETRIED)
    console.print(f"{len(letters)} dead letter(s) queued: they go through the current mappings on the next "
                  f"`mapsync run --env {env}`")
    return 0


def _as_dict(d: Any) -> dict[str, Any]:
    return {"id": d.id, "flow": d.flow, "key": d.source_key, "status": str(d.status), "reason": d.reason,
            "field": d.field, "mapping": f"{d.mapping_file}:{d.mapping_line}" if d.mapping_line else d.mapping_file,
            "mapping_version": d.mapping_version, "attempts": d.attempts, "first_seen": d.first_seen,
            "last_seen": d.last_seen, "record": d.record}
