"""The state store's schema, as an ordered list of migrations shared by SQLite and PostgreSQL.

Migration N (1-based) turns a store at version N-1 into version N. Never edit a released migration:
append a new one. DDL is written once with placeholders for the column types that differ:

    {id}    integer primary key that numbers itself   {ts}    a point in time (ISO text / timestamptz)
    {key}   text compared byte-wise (keys, flows)     {bool}  / {false}: a flag and its default
    {real}  a float                                   {without_rowid}: SQLite's clustered-table hint
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration"]

log = logging.getLogger("mapsync.state")

Execute = Callable[[str, Sequence[Any]], Any]  # the store's own `_execute` (`?` placeholders, a cursor back)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    # Moves data the statements cannot (e.g. out of JSON), in the same transaction, after the statements.
    convert: Callable[[Execute], None] | None = None


def _pair_row(raw: Sequence[Any]) -> tuple[Any, ...]:
    """A bucket's pair list (older rows are shorter: what they lack is unknown) as the table's columns."""
    padded = [*raw, None, None, None, None, None, None][:6]
    return (*(None if v is None else bool(v) for v in padded[:3]), *padded[3:])


def _optout_pairs_from_meta(execute: Execute) -> None:
    """Opt-out pair state kept before migration 4 as JSON buckets in `meta` (``optout:<rule>:pairs:<bucket>`` =
    ``{"v": 1, "p": {source_key: [d365_synced, campaign_synced, d365_seen, d365_modifiedon, synced_at,
    pkey?]}}``, booleans as 0/1) moves into ``optout_pairs``, one row per pair. A bucket that cannot be read
    stays in `meta`, untouched (its pairs are treated as never synced, as they were before)."""
    buckets = execute("SELECT key, value FROM meta WHERE key LIKE ? ORDER BY key", ("optout:%:pairs:%",)).fetchall()
    for key, value in buckets:
        rule = key[len("optout:") : key.rindex(":pairs:")]
        try:
            blob = json.loads(value)
            pairs = blob["p"] if blob.get("v") == 1 else None
            rows = [(rule, str(source_key), *_pair_row(raw)) for source_key, raw in pairs.items()]
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            log.warning("unreadable opt-out state %s left in meta", key, extra={"event": "state.migrate_skipped"})
            continue
        for row in rows:
            execute("INSERT INTO optout_pairs (rule, source_key, d365_synced, campaign_synced, d365_seen,"
                    " d365_modifiedon, synced_at, pkey) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        execute("DELETE FROM meta WHERE key = ?", (key,))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "cursors, key map, dead letters, runs, leases, meta",
        (
            "CREATE TABLE cursors (flow {key} PRIMARY KEY, cursor TEXT NOT NULL, updated_at {ts} NOT NULL)",
            "CREATE TABLE keymap (flow {key} NOT NULL, source_key {key} NOT NULL, target_id TEXT,"
            " payload_hash TEXT, created_by_mapsync {bool} NOT NULL DEFAULT {false}, synced_at {ts},"
            " deleted {bool} NOT NULL DEFAULT {false}, PRIMARY KEY (flow, source_key)) {without_rowid}",
            "CREATE TABLE dead_letters (id {id}, flow {key} NOT NULL, source_key {key} NOT NULL,"
            " record TEXT NOT NULL, reason TEXT NOT NULL, field TEXT, mapping_file TEXT, mapping_line INTEGER,"
            " mapping_version TEXT, attempts INTEGER NOT NULL, first_seen {ts} NOT NULL, last_seen {ts} NOT NULL,"
            " status TEXT NOT NULL CHECK (status IN ('open', 'retried', 'resolved')), UNIQUE (flow, source_key))",
            "CREATE INDEX dead_letters_by_status ON dead_letters (flow, status)",
            "CREATE TABLE runs (id {id}, flow {key} NOT NULL, started_at {ts} NOT NULL, finished_at {ts},"
            " outcome TEXT NOT NULL, counts TEXT NOT NULL, duration_seconds {real})",
            "CREATE INDEX runs_by_flow ON runs (flow, id)",
            "CREATE TABLE leases (flow {key} NOT NULL, environment {key} NOT NULL, holder TEXT NOT NULL,"
            " acquired_at {ts} NOT NULL, expires_at {ts} NOT NULL, PRIMARY KEY (flow, environment))",
            "CREATE TABLE meta (key {key} PRIMARY KEY, value TEXT NOT NULL, updated_at {ts} NOT NULL)",
        ),
    ),
    Migration(
        2,
        "key map lookup by target id; pending writes (outbox)",
        (
            # find_by_target (explain, deletes seen from the target side) scanned the flow without it.
            "CREATE INDEX keymap_by_target ON keymap (flow, target_id)",
            "CREATE TABLE pending_writes (flow {key} NOT NULL, source_key {key} NOT NULL,"
            " operation TEXT NOT NULL CHECK (operation IN ('create', 'update', 'delete')), payload_hash TEXT,"
            " recorded_at {ts} NOT NULL, PRIMARY KEY (flow, source_key))",
        ),
    ),
    Migration(
        3,
        "which services an environment's state belongs to (Dataverse org, Campaign instance)",
        (
            "CREATE TABLE identities (environment {key} NOT NULL, service {key} NOT NULL, identity TEXT NOT NULL,"
            " bound_at {ts} NOT NULL, PRIMARY KEY (environment, service))",
        ),
    ),
    Migration(
        4,
        "opt-out pair state in a table of its own (was JSON buckets in meta)",
        (
            "CREATE TABLE optout_pairs (rule {key} NOT NULL, source_key {key} NOT NULL, d365_synced {bool},"
            " campaign_synced {bool}, d365_seen {bool}, d365_modifiedon TEXT, synced_at TEXT, pkey TEXT,"
            " PRIMARY KEY (rule, source_key)) {without_rowid}",
        ),
        _optout_pairs_from_meta,
    ),
    Migration(
        5,
        "Campaign bulk loads: one row per flow's load, one per file (chunk) with the stage it reached",
        (
            # stage: writing | written | uploaded | signalled | imported | reconciled | done (engine/bulk/stages.py)
            "CREATE TABLE bulk_loads (flow {key} PRIMARY KEY, run_id TEXT NOT NULL, stage TEXT NOT NULL,"
            " cursor TEXT, rows INTEGER NOT NULL, signalled_at {ts}, started_at {ts} NOT NULL,"
            " updated_at {ts} NOT NULL)",
            "CREATE TABLE bulk_chunks (flow {key} NOT NULL, run_id {key} NOT NULL, chunk INTEGER NOT NULL,"
            " file TEXT NOT NULL, stage TEXT NOT NULL, rows INTEGER NOT NULL, imported INTEGER, rejected INTEGER,"
            " updated_at {ts} NOT NULL, PRIMARY KEY (flow, run_id, chunk))",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

assert [m.version for m in MIGRATIONS] == list(range(1, LATEST_VERSION + 1)), "migrations must be numbered 1..N"
