"""What the engine remembers between runs, behind one interface with a SQLite and a PostgreSQL implementation.

Contents: per-flow **cursors** (delta link, journal position, watermark), the **key map** (source key ->
target id + last payload hash), **dead letters**, **runs**, **pending writes** (an outbox written before a
batch is sent, so a crash between "sent" and "acknowledged" can be checked on resume), **leases** (one runner
per flow and environment) and free **meta** key-values. ``transaction()`` makes several writes atomic, e.g.
key-map rows of a page together with the cursor after it.

The API is synchronous: a 5,000-key ``get_keys``/``put_keys`` takes milliseconds. An asyncio executor
should run whole units of work in a thread (``await asyncio.to_thread(commit_page)`` where ``commit_page``
opens ``transaction()`` itself); a transaction must begin and end in the same thread. Calls on one store
object are serialized by a lock; use one store per runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

from mapsync.engine.errors import ConfigError, LeaseHeld
from mapsync.engine.redact import redact_url

if TYPE_CHECKING:
    from mapsync.engine.config import Secret

__all__ = [
    "RUN_COUNTS",
    "BulkChunk",
    "BulkLoad",
    "Clock",
    "Cursor",
    "DeadLetter",
    "DeadLetterStatus",
    "KeyEntry",
    "Lease",
    "LeaseConflict",
    "PairRow",
    "PendingWrite",
    "Run",
    "StateStore",
    "open_store",
    "utcnow",
]

Clock = Callable[[], datetime]

# The counters a run reports; finish_run accepts others too, these are the ones `mapsync status` shows.
RUN_COUNTS = ("read", "filtered", "created", "updated", "unchanged", "deleted", "rejected", "deferred")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    flow: str
    value: str  # opaque to the store: a delta link, a journal position, a modifiedon watermark
    updated_at: datetime


class PairRow(NamedTuple):
    """What an opt-out rule last synced for one pair (see ``mapsync.engine.optout``)."""

    d365_synced: bool | None = None
    campaign_synced: bool | None = None
    d365_seen: bool | None = None
    d365_modifiedon: str | None = None
    synced_at: str | None = None
    pkey: str | None = None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """What mapsync knows about one source record it has synced."""

    source_key: str
    target_id: str | None
    payload_hash: str | None = None  # hash of the last payload written: unchanged records are not rewritten
    created_by_mapsync: bool = False  # mapsync created the target record (delete policies may only touch these)
    synced_at: datetime | None = None
    deleted: bool = False  # tombstone: the source record is gone and the delete policy has been applied


class DeadLetterStatus(StrEnum):
    OPEN = "open"
    RETRIED = "retried"  # queued for another try by `mapsync deadletters retry`
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    flow: str
    source_key: str
    record: Any  # the source record as JSON data
    reason: str
    field: str | None
    mapping_file: str | None
    mapping_line: int | None
    mapping_version: str | None
    attempts: int
    first_seen: datetime
    last_seen: datetime
    status: DeadLetterStatus


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    flow: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str  # "running" until finished; then what the executor says: ok, failed, interrupted, ...
    counts: Mapping[str, int] = field(default_factory=dict)
    duration_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    flow: str
    environment: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


class LeaseConflict(LeaseHeld):
    """``LeaseHeld`` with the lease that is in the way: ``holder`` and ``expires_at`` for the message's reader."""

    def __init__(self, message: str, *, lease: Lease) -> None:
        super().__init__(message)
        self.lease = lease
        self.holder = lease.holder
        self.expires_at = lease.expires_at


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write about to be sent: on resume, the executor checks the target for these before sending again."""

    source_key: str
    operation: str  # create | update | delete
    payload_hash: str | None = None
    recorded_at: datetime | None = None  # filled by the store


@dataclass(frozen=True, slots=True)
class BulkLoad:
    """A flow's bulk load into Campaign (``mapsync.engine.bulk``): how far it got, and the read's cursor, which
    commits only once every file is imported and reconciled."""

    flow: str
    run_id: str
    stage: str
    cursor: str | None = None
    rows: int = 0
    signalled_at: datetime | None = None
    started_at: datetime | None = None  # filled by the store
    updated_at: datetime | None = None  # filled by the store


@dataclass(frozen=True, slots=True)
class BulkChunk:
    """One file of a bulk load and the stage it reached."""

    flow: str
    run_id: str
    chunk: int
    file: str
    stage: str
    rows: int
    imported: int | None = None
    rejected: int | None = None


class StateStore(ABC):
    """One environment's state. Every error a user can act on is a ``StateError`` (``LeaseHeld`` for leases)."""

    url: str  # printable: never holds a password

    # --- lifecycle -----------------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Everything inside commits together or not at all; transactions nest (the outermost one commits)."""

    @property
    @abstractmethod
    def schema_version(self) -> int: ...

    # --- cursors -------------------------------------------------------------------------------------------
    @abstractmethod
    def get_cursor(self, flow: str) -> Cursor | None: ...

    @abstractmethod
    def set_cursor(self, flow: str, cursor: str) -> Cursor: ...

    @abstractmethod
    def delete_cursor(self, flow: str) -> bool:
        """Forget the flow's cursor (its next run reads everything); the key map stays."""

    # --- key map -------------------------------------------------------------------------------------------
    @abstractmethod
    def get_keys(self, flow: str, source_keys: Iterable[str]) -> dict[str, KeyEntry]:
        """The entries of those keys that are known (unknown keys are simply absent). One query per call."""

    @abstractmethod
    def put_keys(self, flow: str, entries: Iterable[KeyEntry]) -> int:
        """Insert or replace entries (the last one wins for a key given twice); returns how many were given."""

    @abstractmethod
    def delete_keys(self, flow: str, source_keys: Iterable[str]) -> int: ...

    @abstractmethod
    def find_by_target(self, flow: str, target_id: str) -> KeyEntry | None: ...

    @abstractmethod
    def iter_keys(self, flow: str, *, chunk: int = 5000) -> Iterator[KeyEntry]:
        """Every entry of the flow in source-key order, read in chunks so memory stays flat."""

    @abstractmethod
    def count_keys(self, flow: str) -> int: ...

    @abstractmethod
    def clear_flow(self, flow: str) -> None:
        """Forget the flow's cursor, key map, pending writes and bulk load (a replay); runs and dead letters are
        kept."""

    # --- dead letters --------------------------------------------------------------------------------------
    @abstractmethod
    def add_dead_letter(
        self,
        flow: str,
        source_key: str,
        record: Any,
        reason: str,
        *,
        field: str | None = None,
        mapping_file: str | None = None,
        mapping_line: int | None = None,
        mapping_version: str | None = None,
    ) -> DeadLetter:
        """Record a rejected record; the same flow+key again counts one more attempt and reopens it."""

    @abstractmethod
    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None: ...

    @abstractmethod
    def list_dead_letters(
        self, *, flow: str | None = None, status: DeadLetterStatus | str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Newest first."""

    @abstractmethod
    def set_dead_letter_status(self, dead_letter_id: int, status: DeadLetterStatus | str) -> DeadLetter: ...

    @abstractmethod
    def resolve_dead_letters(self, flow: str, source_keys: Iterable[str]) -> int:
        """Mark the flow's dead letters of these keys resolved (their records went through); returns how many."""

    def resolve_dead_letter(self, dead_letter_id: int) -> DeadLetter:
        return self.set_dead_letter_status(dead_letter_id, DeadLetterStatus.RESOLVED)

    def open_dead_letters(self, flow: str, *, limit: int = 10_000) -> list[DeadLetter]:
        """Dead letters of the flow still waiting: open, or queued for a retry."""
        waiting = self.list_dead_letters(flow=flow, status=DeadLetterStatus.OPEN, limit=limit)
        waiting += self.list_dead_letters(flow=flow, status=DeadLetterStatus.RETRIED, limit=limit)
        return sorted(waiting, key=lambda d: d.id)[:limit]

    # --- runs ----------------------------------------------------------------------------------------------
    @abstractmethod
    def start_run(self, flow: str) -> Run: ...

    @abstractmethod
    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int]) -> Run: ...

    @abstractmethod
    def last_run(self, flow: str) -> Run | None: ...

    @abstractmethod
    def list_runs(self, *, flow: str | None = None, limit: int = 20) -> list[Run]:
        """Newest first."""

    # --- pending writes (outbox) ---------------------------------------------------------------------------
    @abstractmethod
    def add_pending(self, flow: str, writes: Iterable[PendingWrite]) -> None: ...

    @abstractmethod
    def pending_writes(self, flow: str) -> list[PendingWrite]: ...

    @abstractmethod
    def clear_pending(self, flow: str, source_keys: Iterable[str]) -> int: ...

    # --- leases --------------------------------------------------------------------------------------------
    @abstractmethod
    def acquire_lease(self, flow: str, environment: str, holder: str, ttl_seconds: float) -> Lease:
        """Take the lease, or extend it if ``holder`` has it; an expired lease is taken over.
        Raises ``LeaseHeld`` naming the holder and when its lease ends."""

    @abstractmethod
    def renew_lease(self, flow: str, environment: str, holder: str, ttl_seconds: float) -> Lease:
        """Extend a lease ``holder`` has; ``LeaseHeld`` if another runner took it over meanwhile."""

    @abstractmethod
    def release_lease(self, flow: str, environment: str, holder: str) -> bool: ...

    @abstractmethod
    def get_lease(self, flow: str, environment: str) -> Lease | None: ...

    # --- meta ----------------------------------------------------------------------------------------------
    @abstractmethod
    def get_meta(self, key: str) -> str | None: ...

    @abstractmethod
    def set_meta(self, key: str, value: str) -> None: ...

    @abstractmethod
    def delete_meta(self, key: str) -> bool: ...

    @abstractmethod
    def list_meta(self, prefix: str = "") -> dict[str, str]: ...

    # --- opt-out pairs: what each opt-out rule last synced, per pair -----------------------------------------
    @abstractmethod
    def optout_pairs(self, rule: str) -> dict[str, PairRow]:
        """Every pair of ``rule`` by source key (the ``via`` flow's key)."""

    @abstractmethod
    def put_optout_pairs(self, rule: str, pairs: Mapping[str, PairRow]) -> None:
        """Insert or replace these pairs of ``rule``."""

    @abstractmethod
    def delete_optout_pairs(self, rule: str, source_keys: Iterable[str] | None = None) -> int:
        """Drop these pairs of ``rule`` (None: all of them); returns how many went."""

    # --- bulk loads: a flow's Campaign file import and its files' stages ---------------------------------------
    @abstractmethod
    def bulk_load(self, flow: str) -> BulkLoad | None: ...

    @abstractmethod
    def put_bulk_load(self, load: BulkLoad) -> BulkLoad:
        """Insert or replace the flow's load (one per flow; a new run id replaces the old load's files too)."""

    @abstractmethod
    def bulk_chunks(self, flow: str, run_id: str) -> list[BulkChunk]:
        """The load's files, in chunk order."""

    @abstractmethod
    def put_bulk_chunks(self, chunks: Iterable[BulkChunk]) -> None: ...

    @abstractmethod
    def delete_bulk_load(self, flow: str) -> None: ...

    # --- identities: which services this environment's state belongs to ----------------------------------------
    @abstractmethod
    def get_identities(self, environment: str) -> dict[str, str]:
        """Service name -> the identity recorded for it (e.g. the Dataverse org URL and id)."""

    @abstractmethod
    def bind_identity(self, environment: str, service: str, identity: str) -> None: ...


def open_store(
    url: str,
    *,
    password: Secret | None = None,
    clock: Clock = utcnow,
    busy_timeout: float = 5.0,
) -> StateStore:
    """Open (creating and migrating as needed) the store at ``url``: ``sqlite:///relative.sqlite``,
    ``sqlite:////absolute.sqlite``, ``sqlite:///:memory:`` or ``postgresql://user@host/db``.

    ``password`` is the config's ``state_password``; ``clock`` returns aware UTC times (leases and stamps);
    ``busy_timeout`` is how long SQLite waits for another writer before saying the store is locked.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from mapsync.engine.state.sqlite import SqliteStore

        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise ConfigError(f"state URL {url!r} has no file: use sqlite:///path/to/file.sqlite", setting="state")
        return SqliteStore(url[len("sqlite:///") :], clock=clock, busy_timeout=busy_timeout)
    if scheme in {"postgresql", "postgres"}:
        from mapsync.engine.state.postgres import PostgresStore

        return PostgresStore(url, password=password, clock=clock)
    raise ConfigError(
        f"unsupported state store URL {redact_url(url)!r}: use sqlite:///path/to/file.sqlite or "
        "postgresql://user@host/db",
        setting="state",
    )


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
