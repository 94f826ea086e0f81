"""The state store: cursors, key map, dead letters, runs, pending writes, leases, meta (see ``base.py``).

    store = open_store(env.state_url, password=env.state_password)
    with store.transaction():
        store.put_keys(flow, entries)
        store.set_cursor(flow, next_cursor)
"""

from __future__ import annotations

from mapsync.engine.state.base import (
    RUN_COUNTS,
    BulkChunk,
    BulkLoad,
    Cursor,
    DeadLetter,
    DeadLetterStatus,
    KeyEntry,
    Lease,
    LeaseConflict,
    PendingWrite,
    Run,
    StateStore,
    open_store,
)
from mapsync.engine.state.migrations import LATEST_VERSION

__all__ = [
    "LATEST_VERSION",
    "RUN_COUNTS",
    "BulkChunk",
    "BulkLoad",
    "Cursor",
    "DeadLetter",
    "DeadLetterStatus",
    "KeyEntry",
    "Lease",
    "LeaseConflict",
    "PendingWrite",
    "Run",
    "StateStore",
    "open_store",
]
