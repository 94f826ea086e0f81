"""`mapsync status --env E`: per flow, where it stands — cursor, records synced, last run, dead letters, lease."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from mapsync.engine.bulk.stages import at_least, describe
from mapsync.engine.commands._common import add_command
from mapsync.engine.config import load_config
from mapsync.engine.dead_letter_kinds import open_letters, tally, tally_line
from mapsync.engine.progress import console
from mapsync.engine.redact import redact_url
from mapsync.engine.runner import load_job
from mapsync.engine.state.base import DeadLetter, open_store


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


def bulk_line(store: Any, flow: str) -> str | None:
    """``contacts: bulk load 20261129T0612Z-3fa9: importing (3 of 10 files imported, 250,000 rows)``."""
    load = store.bulk_load(flow)
    if load is None:
        return None
    chunks = store.bulk_chunks(flow, load.run_id)
    imported = sum(at_least(c.stage, "imported") for c in chunks)
    rejected = sum(c.rejected or 0 for c in chunks)
    when = f", {_ago(load.updated_at)}" if load.stage == "done" else ""
    tail = "" if load.stage == "done" else "; the next run resumes it"
    return (f"{flow}: bulk load {load.run_id}: {describe(load.stage)} ({imported} of {len(chunks)} file(s) imported, "
            f"{load.rows:,} rows, {rejected:,} rejected{when}){tail}")


def run(args: argparse.Namespace) -> int:
    config = load_config(Path(args.config), only=args.env)
    env = config.environment(args.env)
    job = load_job(Path(args.config), args.env)
    table = Table(title=f"mapsync status — environment {env.name} ({redact_url(env.state_url)})", title_justify="left",
                  show_edge=False, pad_edge=False)
    for col in ("flow", "synced", "cursor", "last run", "outcome", "read", "written", "pending", "deferred",
                "failed", "lease"):
        table.add_column(col, justify="left" if col in ("flow", "cursor", "last run", "outcome", "lease") else "right")
    with open_store(env.state_url, password=env.state_password) as store:
        # The same dead letters `deadletters list` shows, opt-out rules' included, counted with the same words:
        # deferred ones (and transient failures, and queued retries) go through again by themselves; failed ones
        # need a fix. Pending creates are writes whose outcome a crashed run did not record: the next run checks.
        letters = open_letters(store)
        by_flow: dict[str, list[DeadLetter]] = {}
        for d in letters:
            by_flow.setdefault(d.flow, []).append(d)
        for name in sorted(set(by_flow) - set(job.flows)):
            kinds = tally(by_flow[name])
            table.add_row(name, "", "", "", "", "", "", "", str(sum(kinds.values()) - kinds["failed"]),
                          str(kinds["failed"]), "")
        for name in sorted(job.flows):
            cursor = store.get_cursor(name)
            last = store.last_run(name)
            kinds = tally(by_flow.get(name, []))
            lease = store.get_lease(name, env.name)
            counts = dict(last.counts) if last else {}
            written = sum(counts.get(k, 0) for k in ("created", "updated", "deleted"))
            lease_text = (f"held by {lease.holder}" if lease and lease.expires_at > datetime.now(UTC) else "free")
            table.add_row(name, f"{store.count_keys(name):,}", _ago(cursor.updated_at) if cursor else "none (next run is full)",
                          _ago(last.started_at) if last else "never", last.outcome if last else "—",
                          f"{counts.get('read', 0):,}", f"{written:,}", str(len(store.pending_writes(name))),
                          str(sum(kinds.values()) - kinds["failed"]), str(kinds["failed"]), lease_text)
        loads = [line for name in sorted(job.flows) if (line := bulk_line(store, name))]
    console.print(table)
    for line in loads:
        console.print(line, markup=False, highlight=False)
    counts = tally(letters)
    if letters:
        console.print(tally_line(counts, env.name))
    return 1 if counts["failed"] else 0
