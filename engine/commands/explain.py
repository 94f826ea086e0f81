"""`mapsync explain --env E --flow F --key K`: one record's path through the filter, the map and its last write."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from mapsync.dsl.runtime import Filtered, Mapped, Rejected
from mapsync.engine.commands._common import add_command
from mapsync.engine.connectors import build_connectors
from mapsync.engine.errors import ConfigError
from mapsync.engine.executor import payload_hash
from mapsync.engine.progress import console
from mapsync.engine.runner import load_job
from mapsync.engine.sources import source_for
from mapsync.engine.state.base import open_store


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "explain", "show how one record goes through a flow", run, env=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--key", required=True, help="the record's source key (e.g. a contactid)")


def run(args: argparse.Namespace) -> int:
    job = load_job(Path(args.config), args.env)
    if args.flow not in job.flows:
        raise ConfigError(f"unknown flow {args.flow!r}; the mappings define: {', '.join(sorted(job.flows))}",
                          setting="--flow")
    return asyncio.run(_explain(job, args.flow, args.key))


async def _explain(job: Any, name: str, key: str) -> int:
    flow = job.flows[name]
    say = console.print
    with open_store(job.env.state_url, password=job.env.state_password) as store:
        entry = store.get_keys(name, [key]).get(key)
        dead = [d for d in store.list_dead_letters(flow=name, limit=10_000) if d.source_key == key]
    record = None
    connectors = build_connectors(job.env, catalog=job.catalog)
    try:
        record = await source_for(flow, connectors).fetch(key)
    finally:
        await connectors.aclose()
    if record is None and dead:
        record = dead[0].record
        say("source: the record is not readable from the source now; using the copy kept with its dead letter")
    say(f"[bold]{name}[/bold] ({flow.file}): {flow.source.system}.{flow.source.name} -> "
        f"{flow.target.system}.{flow.target.name}, key {flow.key_source} = {key}")
    if record is None:
        say("source: no such record")
    else:
        say("source record:")
        print(json.dumps(record, indent=2, ensure_ascii=False, default=str))
        outcome = flow.evaluate(record)
        if isinstance(outcome, Filtered):
            say(f"filter: does not match `where` ({flow.file}:{flow.where_line}); on filtered: {flow.on_filtered}")
        elif isinstance(outcome, Rejected):
            say(f"map: rejected at {outcome.location}, field {outcome.field}: {outcome.reason}")
        elif isinstance(outcome, Mapped):
            say("filter: matches" if flow.where_line else "filter: none")
            say("map: payload")
            print(json.dumps(outcome.payload, indent=2, ensure_ascii=False, default=str))
            for ref in outcome.refs:
                say(f"  reference {ref}")
            if entry is not None and entry.payload_hash == payload_hash(outcome.payload) and not outcome.refs:
                say("diff: unchanged since the last write (would not be written again)")
    if entry is None:
        say("state: never written by mapsync")
    else:
        say(f"state: target id {entry.target_id}, last written {entry.synced_at}, "
            f"{'created by mapsync' if entry.created_by_mapsync else 'not created by mapsync'}"
            f"{', deleted' if entry.deleted else ''}")
    for d in dead:
        say(f"dead letter {d.id} ({d.status}, {d.attempts} attempt(s)): {d.reason}")
    return 0
