"""`mapsync deadletters list|show|retry --env E`: the records that could not be synced, and why."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from rich.table import Table

from mapsync.engine.commands._common import add_command
from mapsync.engine.config import load_config
from mapsync.engine.dead_letter_kinds import group_by_reason, kind, open_letters, tally, tally_line
from mapsync.engine.errors import ConfigError
from mapsync.engine.executor import DEFERRED_PREFIX, TRANSIENT_PREFIX
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


# Dead letter ids are the store's 64-bit row ids: anything outside cannot name one.
MAX_ID = 2**63 - 1
MAX_LIMIT = 1_000_000  # as many as `retry --all` takes at once


def run(args: argparse.Namespace) -> int:
    _check_ids(args.ids)
    if not 1 <= args.limit <= MAX_LIMIT:
        raise ConfigError(f"--limit must be a whole number from 1 to {MAX_LIMIT:,}", setting="--limit")
    env = load_config(Path(args.config), only=args.env).environment(args.env)
    with open_store(env.state_url, password=env.state_password) as store:
        if args.action == "list":
            return _list(store, args)
        if args.action == "show":
            return _show(store, args)
        return _retry(store, args, env.name)


def _check_ids(ids: list[int]) -> None:
    wrong = [i for i in ids if not 1 <= i <= MAX_ID]
    if wrong:
        shown = ", ".join(str(i) if len(str(i)) <= 24 else str(i)[:21] + "..." for i in wrong[:3])
        raise ConfigError(f"ID: {shown} is not a dead letter id (ids are whole numbers from 1 to {MAX_ID}); "
                          "see `mapsync deadletters list`", setting="ids")


def _list(store: Any, args: argparse.Namespace) -> int:
    if args.status:
        letters = store.list_dead_letters(flow=args.flow, status=args.status, limit=args.limit)
    else:
        letters = [d for d in store.list_dead_letters(flow=args.flow, limit=args.limit * 4)
                   if d.status != DeadLetterStatus.RESOLVED][: args.limit]
    if args.format == "json":
        print(json.dumps([_as_dict(d) for d in letters], indent=2, ensure_ascii=False, default=str))
        return 0
    console.print(compact_table(letters, console.width), width=min(console.width, 100))
    shown = f"{len(letters)} dead letter(s) shown"
    if args.status in (None, DeadLetterStatus.OPEN, DeadLetterStatus.RETRIED):
        # The same count as `mapsync status`, in the same words, whatever the --limit.
        everything = open_letters(store, args.flow)
        shown += f" of {len(everything)}" if len(everything) != len(letters) and not args.status else ""
        console.print(f"{shown}; {tally_line(tally(everything), args.env)}")
        groups = group_by_reason(everything)
        if len(groups) > 0:
            console.print("by reason:")
            for g in groups[:10]:
                console.print(f"  {g.count:>6,} {g.flow} ({g.kind}): {g.shape}  [e.g. id {g.example.id}]",
                              markup=False, highlight=False)
    else:
        console.print(shown)
    console.print("`mapsync deadletters show ID` has the whole record, the full reason and the mapping version")
    return 0


def compact_table(letters: list[Any], width: int) -> Table:
    """One line per dead letter within ``width`` columns (100 at most): ids in the reason are cut to their first
    8 characters and the reason to what fits (`show ID` has all of it)."""
    width = min(width, 100)
    rows = []
    for d in letters:
        where = Path(d.mapping_file).name if d.mapping_file else ""
        where += f":{d.mapping_line}" if d.mapping_line else ""
        reason = _GUID.sub(lambda m: m.group(0)[:8] + "…", d.reason.removeprefix(DEFERRED_PREFIX)
                           .removeprefix(TRANSIENT_PREFIX))
        rows.append([str(d.id), d.flow, kind(d), d.source_key, where, reason])
    headers = ["id", "flow", "kind", "key", "mapping", "reason"]
    fixed = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:-1])]
    if sum(fixed) + len(fixed) + 40 > width:  # too narrow for whole keys: their first 8 characters, as above
        fixed[3] = 9
        for r in rows:
            r[3] = r[3] if len(r[3]) <= 9 else r[3][:8] + "…"
    room = max(16, width - sum(fixed) - len(fixed))
    table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 1, 0, 0))
    for header in headers[:-1]:
        table.add_column(header, no_wrap=True, justify="right" if header == "id" else "left")
    table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=room)
    for r in rows:
        r[5] = r[5] if len(r[5]) <= room else r[5][: room - 1] + "…"
        table.add_row(*r)
    return table


_GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")


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
            "kind": kind(d), "field": d.field,
            "mapping": f"{d.mapping_file}:{d.mapping_line}" if d.mapping_line else d.mapping_file,
            "mapping_version": d.mapping_version, "attempts": d.attempts, "first_seen": d.first_seen,
            "last_seen": d.last_seen, "record": d.record}
