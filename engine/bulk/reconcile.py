"""After the import: the key map filled from what Campaign really holds, never from an assumption.

One paged read of the target resource by the flow's key field (``Target.existing``, the read that adopts
records before a first run) gives each imported key its PKey; the hash each row was written with comes
from the load's staging file. A row imported but not returned by the read becomes a dead letter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mapsync.engine.bulk.staging import Staging
from mapsync.engine.planner import FlowRules
from mapsync.engine.state.base import KeyEntry, StateStore

__all__ = ["reconcile"]

# Keys mapped in one state-store transaction: the key map grows by random keys (a million-row B-tree), and
# a transaction per 1,000-record page rewrote most of the pages it touched once per page.
KEYMAP_BATCH = 10_000

MISSING_REASON = ("bulk import reported the row imported, but a read of Campaign by {field} does not return it; "
                  "the next full run writes it again")


async def reconcile(target: Any, key_field: str, staging: Staging, store: StateStore, rules: FlowRules, *,
                    on_page: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Key-map the imported rows; returns (rows key-mapped, rows missing from Campaign)."""
    await asyncio.to_thread(staging.reset_seen)
    mapped = 0
    # A batch of pages is key-mapped (in a thread) while the next pages are read: one batch in each, never more.
    mapping: asyncio.Future[int] | None = None

    async def mapped_so_far() -> int:
        nonlocal mapping, mapped
        if mapping is not None:
            future, mapping = mapping, None
            mapped += await future
            if on_page is not None:
                on_page(mapped)
        return mapped

    batch: list[tuple[str, str]] = []
    try:
        async for page in target.existing(key_field):
            batch.extend(page)
            if len(batch) >= KEYMAP_BATCH:
                await mapped_so_far()
                mapping = asyncio.ensure_future(asyncio.to_thread(_map_page, batch, staging, store, rules))
                batch = []
        await mapped_so_far()
        if batch:
            mapping = asyncio.ensure_future(asyncio.to_thread(_map_page, batch, staging, store, rules))
            await mapped_so_far()
    finally:
        if mapping is not None:  # the read failed: let the page in hand finish (a thread cannot be stopped)
            await asyncio.gather(mapping, return_exceptions=True)
    missing = await asyncio.to_thread(_dead_letter_unseen, staging, store, rules, key_field)
    return mapped, missing


def _map_page(page: list[tuple[str, str]], staging: Staging, store: StateStore, rules: FlowRules) -> int:
    staged = staging.lookup([k for k, _ in page])
    # In key order: the key map's B-tree takes them leaf by leaf.
    entries = sorted((KeyEntry(k, pkey, staged[k].hash, staged[k].ours) for k, pkey in page if k in staged),
                     key=lambda e: e.source_key)
    if entries:
        with store.transaction():
            store.put_keys(rules.name, entries)
            store.resolve_dead_letters(rules.name, [e.source_key for e in entries])
    return len(entries)


def _dead_letter_unseen(staging: Staging, store: StateStore, rules: FlowRules, key_field: str) -> int:
    missing = 0
    while rows := staging.unseen():
        with store.transaction():
            for row in rows:
                store.add_dead_letter(rules.name, row.key, {"key": row.key}, MISSING_REASON.format(field=key_field),
                                      mapping_file=rules.file, mapping_line=rules.line,
                                      mapping_version=rules.version)
        staging.reject([r.key for r in rows])  # not looked at again
        missing += len(rows)
    return missing
