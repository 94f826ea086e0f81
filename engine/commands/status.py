"""`mapsync status --env E`: per flow, where it stands — cursor, records synced, last run, dead letters, lease."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from mapsync.engine.commands._common import add_command
from mapsync.engine.config import load_config
from mapsync.engine.executor import DEFERRED_PREFIX, TRANSIENT_PREFIX
from mapsync.engine.progress import console
from mapsync.engine.runner import load_job
from mapsync.engine.state.base import open_store


def add_parser(subparsers: Any) -> None:
    add_command(subparsers, "status", "show each flow's state: last run, records synced, backlog, dead letters",
                run, env=True)


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    seconds = (datetime.now(UTC) - when).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def run(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config))
    env = config.environment(args.env)
    job = load_job(Path(args.config), args.env)
    table = Table(title=f"mapsync status — environment {env.name} ({env.state_url})", title_justify="left",
                  show_edge=False, pad_edge=False)
    for col in ("flow", "synced", "cursor", "last run", "outcome", "read", "written", "waiting", "dead letters",
                "lease"):
        table.add_column(col, justify="left" if col in ("flow", "cursor", "last run", "outcome", "lease") else "right")
    open_total = 0
    with open_store(env.state_url, password=env.state_password) as store:
        for name in sorted(job.flows):
            cursor = store.get_cursor(name)
            last = store.last_run(name)
            letters = store.open_dead_letters(name)
            # Deferred links and transient failures go through again by themselves: that is backlog, not loss.
            waiting = sum(1 for d in letters if d.reason.startswith((DEFERRED_PREFIX, TRANSIENT_PREFIX)))
            waiting += len(store.pending_writes(name))
            dead = len(letters) - waiting + len(store.pending_writes(name))
            open_total += dead
            lease = store.get_lease(name, env.name)
            counts = dict(last.counts) if last else {}
            written = sum(counts.get(k, 0) for k in ("created", "updated", "deleted"))
            lease_text = (f"held by {lease.holder}" if lease and lease.expires_at > datetime.now(UTC) else "free")
            table.add_row(name, f"{store.count_keys(name):,}", _ago(cursor.updated_at) if cursor else "none (next run is full)",
                          _ago(last.started_at) if last else "never", last.outcome if last else "—",
                          f"{counts.get('read', 0):,}", f"{written:,}", str(waiting), str(dead), lease_text)
    console.print(table)
    if open_total:
        console.print(f"{open_total} open dead letter(s): `mapsync deadletters list --env {env.name}`")
    return 1 if open_total else 0
