"""`mapsync explain --env E --flow F --key K`: one record's path through the filter, the map and its last write."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

from mapsync.dsl.runtime import ContactRef, Filtered, LinkRef, Mapped, Rejected
from mapsync.dsl.types import ValueType as V
from mapsync.engine.commands._common import add_command
from mapsync.engine.connectors import build_connectors
from mapsync.engine.connectors.odata import GUID_RE
from mapsync.engine.errors import ConfigError
from mapsync.engine.executor import payload_hash
from mapsync.engine.link_reasons import LinkReasons
from mapsync.engine.progress import console
from mapsync.engine.runner import load_job
from mapsync.engine.sources import source_for
from mapsync.engine.state.base import open_store


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "explain", "show how one record goes through a flow", run, env=True)
    p.add_argument("--flow", required=True)
    p.add_argument("--key", required=True, help="the record's source key (e.g. a contactid)")


def describe_ref(ref: LinkRef | ContactRef, file: str, state: str | None) -> str:
    """A reference in plain words: which field, pointing at what, written where, and whether it resolves."""
    if isinstance(ref, ContactRef):
        return (f"{ref.target_path} points at Dynamics 365 contact {ref.external_id} "
                f"(contact(...) at {file}:{ref.line})")
    return (f"{ref.target_path} links to the record flow {ref.flow} writes for {ref.source_value} "
            f"(link(...) at {file}:{ref.line}): {state or 'not looked up'}")


async def _link_states(refs: Any, store: Any, reasons: LinkReasons) -> dict[str, str]:
    """For each link of the record: the target record it resolves to, or why it does not resolve."""
    out: dict[str, str] = {}
    for ref in refs:
        if not isinstance(ref, LinkRef):
            continue
        entry = store.get_keys(ref.flow, [ref.source_value]).get(ref.source_value)
        if entry is not None and entry.target_id is not None and not entry.deleted:
            out[ref.target_path] = f"resolves to target record {entry.target_id}"
        else:
            why = (await reasons(ref.flow, [ref.source_value])).get(ref.source_value, "not written yet")
            out[ref.target_path] = f"does not resolve: linked record {why}"
    return out


def run(args: argparse.Namespace) -> int:
    job = load_job(Path(args.config), args.env)
    if args.flow not in job.flows:
        raise ConfigError(f"unknown flow {args.flow!r}; the mappings define: {', '.join(sorted(job.flows))}",
                          setting="--flow")
    _check_key(job, job.flows[args.flow], args.key)
    return asyncio.run(_explain(job, args.flow, args.key))


# No key column holds more: Dataverse's longest indexed text column is 4,000 characters (and a URL that
# carries a longer key is refused before it is sent).
MAX_KEY_LENGTH = 4000


def _check_key(job: Any, flow: Any, key: str) -> None:
    """Refuse a key its column cannot hold, before any request: a ConfigError naming --key and the type."""
    table = job.catalog.table(flow.source.system, flow.source.name)
    field = table.field(flow.key_source) if table is not None else None
    shown = repr(key if len(key) <= 40 else key[:37] + "...")
    column = flow.key_source

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"--key: {why}", setting="--key")

    if not key.strip():
        raise refuse(f"{column} needs a value; an empty key names no record")
    if field is not None and field.value_type is V.GUID:
        if not GUID_RE.fullmatch(key):
            raise refuse(f"{column} is a GUID; {shown} is not one (e.g. 2f1e3c1a-6b8d-4c1e-9a3e-0d5f7b9c1e2a)")
        return
    if field is not None and field.value_type is V.NUMBER:
        if not re.fullmatch(r"-?[0-9]{1,19}", key):
            raise refuse(f"{column} is a whole number; {shown} is not one")
        return
    limit = min(field.max_length or MAX_KEY_LENGTH, MAX_KEY_LENGTH) if field is not None else MAX_KEY_LENGTH
    if len(key) > limit:
        raise refuse(f"{column} holds at most {limit:,} characters; the key given has {len(key):,}")


async def _explain(job: Any, name: str, key: str) -> int:
    flow = job.flows[name]
    say = console.print
    with open_store(job.env.state_url, password=job.env.state_password) as store:
        entry = store.get_keys(name, [key]).get(key)
        dead = [d for d in store.list_dead_letters(flow=name, limit=10_000) if d.source_key == key]
        record = None
        links: dict[str, str] = {}
        connectors = build_connectors(job.env, catalog=job.catalog)
        try:
            record = await source_for(flow, connectors).fetch(key)
            outcome = flow.evaluate(record) if record is not None else None
            if isinstance(outcome, Mapped):
                links = await _link_states(outcome.refs, store, LinkReasons(job.flows, connectors))
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
                say(f"  {describe_ref(ref, flow.file, links.get(ref.target_path))}", markup=False)
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
