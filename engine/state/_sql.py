"""The state store written once in SQL both SQLite and PostgreSQL accept; the backends supply the differences.

Statements use ``?`` placeholders (PostgreSQL's driver rewrites them to ``%s``) and ``ON CONFLICT`` upserts,
which both databases execute atomically: that is what makes leases safe without a separate lock.
Backends provide: how to run a statement, begin/commit/rollback, timestamps in/out, a "key in this list"
clause, a bulk key-map upsert, and the translation of driver errors into ``StateError``.
"""

from __future__ import annotations

import json
import threading
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from mapsync.engine.errors import StateError
from mapsync.engine.state.base import (
    BulkChunk,
    BulkLoad,
    Clock,
    Cursor,
    DeadLetter,
    DeadLetterStatus,
    KeyEntry,
    Lease,
    LeaseConflict,
    PairRow,
    PendingWrite,
    Run,
    StateStore,
)
from mapsync.engine.state.migrations import LATEST_VERSION, MIGRATIONS

_KEY_COLUMNS = "source_key, target_id, payload_hash, created_by_mapsync, synced_at, deleted"
_DL_COLUMNS = (
    "id, flow, source_key, record, reason, field, mapping_file, mapping_line, mapping_version, attempts,"
    " first_seen, last_seen, status"
)
_RUN_COLUMNS = "id, flow, started_at, finished_at, outcome, counts, duration_seconds"
_OPERATIONS = {"create", "update", "delete"}


class SqlStore(StateStore):
    """Everything but the driver. Subclasses call ``_open(target_version)`` once connected."""

    _types: ClassVar[Mapping[str, str]]  # the placeholders of migrations.py for this database

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._version = 0

    _conn: Any  # the driver's connection, set by the subclass

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- what a backend provides ---------------------------------------------------------------------------
    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    @abstractmethod
    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def _errors(self) -> AbstractContextManager[None]:
        """Translate the driver's exceptions raised inside into ``StateError``."""

    @abstractmethod
    def _ts_in(self, value: datetime | None) -> Any: ...

    @abstractmethod
    def _ts_out(self, value: Any) -> datetime | None: ...

    @abstractmethod
    def _in_list(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        """SQL ``<column> IN <values>`` taking one parameter whatever the list length, and its parameters."""

    @abstractmethod
    def _upsert_keys(self, flow: str, entries: list[KeyEntry]) -> None: ...

    @abstractmethod
    def _has_table(self, name: str) -> bool: ...

    def _before_migrating(self) -> None:
        """Hook run inside the migration transaction before the version is read again (PostgreSQL locks)."""

    # --- opening and migrating -----------------------------------------------------------------------------
    def _open(self, target_version: int | None) -> None:
        target = LATEST_VERSION if target_version is None else target_version
        with self._errors():
            current = self._read_version()
            self._refuse_newer(current)
            if current < target:
                with self.transaction():
                    self._before_migrating()
                    current = self._read_version()  # another runner may have migrated meanwhile
                    self._refuse_newer(current)
                    self._migrate(current, target)
                    current = max(current, target)
        self._version = current

    def _read_version(self) -> int:
        if not self._has_table("schema_version"):
            return 0
        row = self._execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def _refuse_newer(self, current: int) -> None:
        if current > LATEST_VERSION:
            raise StateError(
                f"the state store {self.url} was written by a newer mapsync (schema version {current}; this "
                f"mapsync knows up to {LATEST_VERSION}): upgrade mapsync to use it"
            )

    def _migrate(self, current: int, target: int) -> None:
        if current == 0:
            self._execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
                " applied_at {ts} NOT NULL)".format_map(self._types)
            )
        for migration in MIGRATIONS[current:target]:
            for statement in migration.statements:
                self._execute(statement.format_map(self._types))
            if migration.convert is not None:
                migration.convert(self._execute)
            self._execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, self._ts_in(self._clock())),
            )

    @property
    def schema_version(self) -> int:
        return self._version

    # --- transactions --------------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._errors():
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            try:
                self._commit()
            except BaseException:
                self._rollback()  # a failed COMMIT (e.g. busy) leaves the transaction open: close it
                raise

    @contextmanager
    def _read(self) -> Iterator[None]:
        """A read: needs no transaction of its own (one statement, or it joins the caller's)."""
        with self._lock, self._errors():
            yield

    # --- cursors -------------------------------------------------------------------------------------------
    def get_cursor(self, flow: str) -> Cursor | None:
        with self._read():
            row = self._execute("SELECT cursor, updated_at FROM cursors WHERE flow = ?", (flow,)).fetchone()
        return Cursor(flow, row[0], self._ts_out(row[1])) if row else None  # type: ignore[arg-type]

    def set_cursor(self, flow: str, cursor: str) -> Cursor:
        now = self._clock()
        with self.transaction():
            self._execute(
                "INSERT INTO cursors (flow, cursor, updated_at) VALUES (?, ?, ?) ON CONFLICT (flow) DO UPDATE"
                " SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                (flow, cursor, self._ts_in(now)),
            )
        return Cursor(flow, cursor, now)

    def delete_cursor(self, flow: str) -> bool:
        with self.transaction():
            return self._execute("DELETE FROM cursors WHERE flow = ?", (flow,)).rowcount > 0

    # --- key map -------------------------------------------------------------------------------------------
    def _entry(self, row: Sequence[Any]) -> KeyEntry:
        return KeyEntry(row[0], row[1], row[2], bool(row[3]), self._ts_out(row[4]), bool(row[5]))

    def get_keys(self, flow: str, source_keys: Iterable[str]) -> dict[str, KeyEntry]:
        keys = list(dict.fromkeys(source_keys))
        if not keys:
            return {}
        clause, params = self._in_list("source_key", keys)
        with self._read():
            rows = self._execute(
                f"SELECT {_KEY_COLUMNS} FROM keymap WHERE flow = ? AND {clause}", (flow, *params)
            ).fetchall()
        return {row[0]: self._entry(row) for row in rows}

    def put_keys(self, flow: str, entries: Iterable[KeyEntry]) -> int:
        # The last entry for a key wins; a single upsert statement may not touch one row twice (PostgreSQL).
        unique = list({entry.source_key: entry for entry in entries}.values())
        if unique:
            with self.transaction():
                self._upsert_keys(flow, unique)
        return len(unique)

    def delete_keys(self, flow: str, source_keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(source_keys))
        if not keys:
            return 0
        clause, params = self._in_list("source_key", keys)
        with self.transaction():
            return int(self._execute(f"DELETE FROM keymap WHERE flow = ? AND {clause}", (flow, *params)).rowcount)

    def find_by_target(self, flow: str, target_id: str) -> KeyEntry | None:
        with self._read():
            row = self._execute(
                f"SELECT {_KEY_COLUMNS} FROM keymap WHERE flow = ? AND target_id = ? ORDER BY source_key LIMIT 1",
                (flow, target_id),
            ).fetchone()
        return self._entry(row) if row else None

    def iter_keys(self, flow: str, *, chunk: int = 5000) -> Iterator[KeyEntry]:
        # Keyset pages rather than one open cursor: no read transaction is held while the caller works.
        after: str | None = None
        while True:
            with self._read():
                if after is None:
                    rows = self._execute(
                        f"SELECT {_KEY_COLUMNS} FROM keymap WHERE flow = ? ORDER BY source_key LIMIT ?", (flow, chunk)
                    ).fetchall()
                else:
                    rows = self._execute(
                        f"SELECT {_KEY_COLUMNS} FROM keymap WHERE flow = ? AND source_key > ?"
                        " ORDER BY source_key LIMIT ?",
                        (flow, after, chunk),
                    ).fetchall()
            for row in rows:
                yield self._entry(row)
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    def count_keys(self, flow: str) -> int:
        with self._read():
            return int(self._execute("SELECT COUNT(*) FROM keymap WHERE flow = ?", (flow,)).fetchone()[0])

    def clear_flow(self, flow: str) -> None:
        with self.transaction():
            for table in ("keymap", "cursors", "pending_writes", "bulk_loads", "bulk_chunks"):
                self._execute(f"DELETE FROM {table} WHERE flow = ?", (flow,))

    # --- dead letters --------------------------------------------------------------------------------------
    def _dead_letter(self, row: Sequence[Any]) -> DeadLetter:
        return DeadLetter(
            id=int(row[0]),
            flow=row[1],
            source_key=row[2],
            record=json.loads(row[3]),
            reason=row[4],
            field=row[5],
            mapping_file=row[6],
            mapping_line=row[7],
            mapping_version=row[8],
            attempts=int(row[9]),
            first_seen=self._ts_out(row[10]),  # type: ignore[arg-type]
            last_seen=self._ts_out(row[11]),  # type: ignore[arg-type]
            status=DeadLetterStatus(row[12]),
        )

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
        now = self._ts_in(self._clock())
        body = json.dumps(record, sort_keys=True, default=str)
        with self.transaction():
            row = self._execute(
                "INSERT INTO dead_letters (flow, source_key, record, reason, field, mapping_file, mapping_line,"
                " mapping_version, attempts, first_seen, last_seen, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, 'open')"
                " ON CONFLICT (flow, source_key) DO UPDATE SET record = excluded.record,"
                " reason = excluded.reason, field = excluded.field, mapping_file = excluded.mapping_file,"
                " mapping_line = excluded.mapping_line, mapping_version = excluded.mapping_version,"
                " attempts = dead_letters.attempts + 1, last_seen = excluded.last_seen, status = 'open'"
                f" RETURNING {_DL_COLUMNS}",
                (flow, source_key, body, reason, field, mapping_file, mapping_line, mapping_version, now, now),
            ).fetchone()
        return self._dead_letter(row)

    def get_dead_letter(self, dead_letter_id: int) -> DeadLetter | None:
        with self._read():
            row = self._execute(f"SELECT {_DL_COLUMNS} FROM dead_letters WHERE id = ?", (dead_letter_id,)).fetchone()
        return self._dead_letter(row) if row else None

    def list_dead_letters(
        self, *, flow: str | None = None, status: DeadLetterStatus | str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        where, params = [], []
        if flow is not None:
            where.append("flow = ?")
            params.append(flow)
        if status is not None:
            where.append("status = ?")
            params.append(_status(status).value)
        sql = f"SELECT {_DL_COLUMNS} FROM dead_letters"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._read():
            rows = self._execute(sql + " ORDER BY last_seen DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
        return [self._dead_letter(row) for row in rows]

    def set_dead_letter_status(self, dead_letter_id: int, status: DeadLetterStatus | str) -> DeadLetter:
        with self.transaction():
            row = self._execute(
                f"UPDATE dead_letters SET status = ? WHERE id = ? RETURNING {_DL_COLUMNS}",
                (_status(status).value, dead_letter_id),
            ).fetchone()
        if row is None:
            raise StateError(f"no dead letter with id {dead_letter_id} in {self.url}")
        return self._dead_letter(row)

    def resolve_dead_letters(self, flow: str, source_keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(source_keys))
        if not keys:
            return 0
        clause, params = self._in_list("source_key", keys)
        with self.transaction():
            cursor = self._execute(
                f"UPDATE dead_letters SET status = 'resolved' WHERE flow = ? AND status <> 'resolved' AND {clause}",
                (flow, *params),
            )
            return int(cursor.rowcount)

    # --- runs ----------------------------------------------------------------------------------------------
    def _run(self, row: Sequence[Any]) -> Run:
        return Run(
            id=int(row[0]),
            flow=row[1],
            started_at=self._ts_out(row[2]),  # type: ignore[arg-type]
            finished_at=self._ts_out(row[3]),
            outcome=row[4],
            counts=json.loads(row[5]),
            duration_seconds=row[6],
        )

    def start_run(self, flow: str) -> Run:
        with self.transaction():
            row = self._execute(
                "INSERT INTO runs (flow, started_at, outcome, counts) VALUES (?, ?, 'running', '{}')"
                f" RETURNING {_RUN_COLUMNS}",
                (flow, self._ts_in(self._clock())),
            ).fetchone()
        return self._run(row)

    def finish_run(self, run_id: int, outcome: str, counts: Mapping[str, int]) -> Run:
        now = self._clock()
        with self.transaction():
            started = self._execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
            if started is None:
                raise StateError(f"no run with id {run_id} in {self.url}")
            duration = max(0.0, (now - self._ts_out(started[0])).total_seconds())  # type: ignore[operator]
            row = self._execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, counts = ?, duration_seconds = ? WHERE id = ?"
                f" RETURNING {_RUN_COLUMNS}",
                (self._ts_in(now), outcome, json.dumps(dict(counts), sort_keys=True), duration, run_id),
            ).fetchone()
        return self._run(row)

    def last_run(self, flow: str) -> Run | None:
        runs = self.list_runs(flow=flow, limit=1)
        return runs[0] if runs else None

    def list_runs(self, *, flow: str | None = None, limit: int = 20) -> list[Run]:
        with self._read():
            if flow is None:
                rows = self._execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE flow = ? ORDER BY id DESC LIMIT ?", (flow, limit)
                ).fetchall()
        return [self._run(row) for row in rows]

    # --- pending writes ------------------------------------------------------------------------------------
    def add_pending(self, flow: str, writes: Iterable[PendingWrite]) -> None:
        now = self._ts_in(self._clock())
        rows = []
        for write in {w.source_key: w for w in writes}.values():
            if write.operation not in _OPERATIONS:
                raise StateError(f"pending write operation must be one of {sorted(_OPERATIONS)}, not {write.operation!r}")
            rows.append((flow, write.source_key, write.operation, write.payload_hash, now))
        if rows:
            with self.transaction():
                self._executemany(
                    "INSERT INTO pending_writes (flow, source_key, operation, payload_hash, recorded_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (flow, source_key) DO UPDATE SET"
                    " operation = excluded.operation, payload_hash = excluded.payload_hash,"
                    " recorded_at = excluded.recorded_at",
                    rows,
                )

    def pending_writes(self, flow: str) -> list[PendingWrite]:
        with self._read():
            rows = self._execute(
                "SELECT source_key, operation, payload_hash, recorded_at FROM pending_writes WHERE flow = ?"
                " ORDER BY source_key",
                (flow,),
            ).fetchall()
        return [PendingWrite(r[0], r[1], r[2], self._ts_out(r[3])) for r in rows]

    def clear_pending(self, flow: str, source_keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(source_keys))
        if not keys:
            return 0
        clause, params = self._in_list("source_key", keys)
        with self.transaction():
            return int(
                self._execute(f"DELETE FROM pending_writes WHERE flow = ? AND {clause}", (flow, *params)).rowcount
            )

    # --- leases --------------------------------------------------------------------------------------------
    def _lease(self, flow: str, environment: str, row: Sequence[Any]) -> Lease:
        return Lease(flow, environment, row[0], self._ts_out(row[1]), self._ts_out(row[2]))  # type: ignore[arg-type]

    def acquire_lease(self, flow: str, environment: str, holder: str, ttl_seconds: float) -> Lease:
        for _ in range(3):  # the row can vanish between the refused upsert and the look at who holds it
            now = self._clock()
            until = now + timedelta(seconds=ttl_seconds)
            with self.transaction():
                # One statement: insert, or take over only if we hold it already or it has expired. Both
                # databases lock the conflicting row for the WHERE, so two runners can never both win.
                row = self._execute(
                    "INSERT INTO leases (flow, environment, holder, acquired_at, expires_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (flow, environment) DO UPDATE SET holder = excluded.holder,"
                    " acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at"
                    " ELSE excluded.acquired_at END, expires_at = excluded.expires_at"
                    " WHERE leases.holder = excluded.holder OR leases.expires_at <= ?"
                    " RETURNING holder, acquired_at, expires_at",
                    (flow, environment, holder, self._ts_in(now), self._ts_in(until), self._ts_in(now)),
                ).fetchone()
                if row is not None:
                    return self._lease(flow, environment, row)
                current = self.get_lease(flow, environment)
            if current is not None:
                raise _held(current, now)
        raise StateError(f"could not take the lease on flow {flow!r} of {environment!r}: it kept changing hands")

    def renew_lease(self, flow: str, environment: str, holder: str, ttl_seconds: float) -> Lease:
        now = self._clock()
        with self.transaction():
            row = self._execute(
                "UPDATE leases SET expires_at = ? WHERE flow = ? AND environment = ? AND holder = ?"
                " RETURNING holder, acquired_at, expires_at",
                (self._ts_in(now + timedelta(seconds=ttl_seconds)), flow, environment, holder),
            ).fetchone()
            if row is not None:
                return self._lease(flow, environment, row)
            current = self.get_lease(flow, environment)
        if current is not None:
            raise _held(current, now)
        raise StateError(f"runner {holder!r} no longer holds the lease on flow {flow!r} of {environment!r}")

    def release_lease(self, flow: str, environment: str, holder: str) -> bool:
        with self.transaction():
            cursor = self._execute(
                "DELETE FROM leases WHERE flow = ? AND environment = ? AND holder = ?", (flow, environment, holder)
            )
            return cursor.rowcount > 0

    def get_lease(self, flow: str, environment: str) -> Lease | None:
        with self._read():
            row = self._execute(
                "SELECT holder, acquired_at, expires_at FROM leases WHERE flow = ? AND environment = ?",
                (flow, environment),
            ).fetchone()
        return self._lease(flow, environment, row) if row else None

    # --- meta ----------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._read():
            row = self._execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO meta (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value, updated_at = excluded.updated_at",
                (key, value, self._ts_in(self._clock())),
            )

    def delete_meta(self, key: str) -> bool:
        with self.transaction():
            return self._execute("DELETE FROM meta WHERE key = ?", (key,)).rowcount > 0

    def list_meta(self, prefix: str = "") -> dict[str, str]:
        with self._read():
            rows = self._execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    # --- opt-out pairs -------------------------------------------------------------------------------------
    def optout_pairs(self, rule: str) -> dict[str, PairRow]:
        with self._read():
            rows = self._execute(
                "SELECT source_key, d365_synced, campaign_synced, d365_seen, d365_modifiedon, synced_at, pkey"
                " FROM optout_pairs WHERE rule = ? ORDER BY source_key", (rule,)).fetchall()
        return {row[0]: PairRow(*(None if v is None else bool(v) for v in row[1:4]), *row[4:]) for row in rows}

    def put_optout_pairs(self, rule: str, pairs: Mapping[str, PairRow]) -> None:
        if not pairs:
            return
        with self.transaction():
            self._executemany(
                "INSERT INTO optout_pairs (rule, source_key, d365_synced, campaign_synced, d365_seen,"
                " d365_modifiedon, synced_at, pkey) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule, source_key)"
                " DO UPDATE SET d365_synced = excluded.d365_synced, campaign_synced = excluded.campaign_synced,"
                " d365_seen = excluded.d365_seen, d365_modifiedon = excluded.d365_modifiedon,"
                " synced_at = excluded.synced_at, pkey = excluded.pkey",
                [(rule, key, *row) for key, row in sorted(pairs.items())])

    def delete_optout_pairs(self, rule: str, source_keys: Iterable[str] | None = None) -> int:
        with self.transaction():
            if source_keys is None:
                return int(self._execute("DELETE FROM optout_pairs WHERE rule = ?", (rule,)).rowcount)
            keys = sorted(set(source_keys))
            if not keys:
                return 0
            clause, params = self._in_list("source_key", keys)
            return int(self._execute(f"DELETE FROM optout_pairs WHERE rule = ? AND {clause}", (rule, *params)).rowcount)

    # --- bulk loads ----------------------------------------------------------------------------------------
    def bulk_load(self, flow: str) -> BulkLoad | None:
        with self._read():
            row = self._execute("SELECT flow, run_id, stage, cursor, rows, signalled_at, started_at, updated_at"
                                " FROM bulk_loads WHERE flow = ?", (flow,)).fetchone()
        if row is None:
            return None
        return BulkLoad(row[0], row[1], row[2], row[3], int(row[4]), self._ts_out(row[5]), self._ts_out(row[6]),
                        self._ts_out(row[7]))

    def put_bulk_load(self, load: BulkLoad) -> BulkLoad:
        now = self._clock()
        with self.transaction():
            old = self._execute("SELECT run_id, started_at FROM bulk_loads WHERE flow = ?", (load.flow,)).fetchone()
            started = self._ts_out(old[1]) if old is not None and old[0] == load.run_id else now
            if old is not None and old[0] != load.run_id:
                self._execute("DELETE FROM bulk_chunks WHERE flow = ?", (load.flow,))
            self._execute(
                "INSERT INTO bulk_loads (flow, run_id, stage, cursor, rows, signalled_at, started_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (flow) DO UPDATE SET run_id = excluded.run_id,"
                " stage = excluded.stage, cursor = excluded.cursor, rows = excluded.rows,"
                " signalled_at = excluded.signalled_at, started_at = excluded.started_at,"
                " updated_at = excluded.updated_at",
                (load.flow, load.run_id, load.stage, load.cursor, load.rows, self._ts_in(load.signalled_at),
                 self._ts_in(started), self._ts_in(now)))
        return replace(load, started_at=started, updated_at=now)

    def bulk_chunks(self, flow: str, run_id: str) -> list[BulkChunk]:
        with self._read():
            rows = self._execute("SELECT flow, run_id, chunk, file, stage, rows, imported, rejected FROM bulk_chunks"
                                 " WHERE flow = ? AND run_id = ? ORDER BY chunk", (flow, run_id)).fetchall()
        return [BulkChunk(r[0], r[1], int(r[2]), r[3], r[4], int(r[5]), r[6], r[7]) for r in rows]

    def put_bulk_chunks(self, chunks: Iterable[BulkChunk]) -> None:
        now = self._ts_in(self._clock())
        rows = [(c.flow, c.run_id, c.chunk, c.file, c.stage, c.rows, c.imported, c.rejected, now) for c in chunks]
        if not rows:
            return
        with self.transaction():
            self._executemany(
                "INSERT INTO bulk_chunks (flow, run_id, chunk, file, stage, rows, imported, rejected, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (flow, run_id, chunk) DO UPDATE SET"
                " file = excluded.file, stage = excluded.stage, rows = excluded.rows,"
                " imported = excluded.imported, rejected = excluded.rejected, updated_at = excluded.updated_at",
                rows)

    def delete_bulk_load(self, flow: str) -> None:
        with self.transaction():
            self._execute("DELETE FROM bulk_chunks WHERE flow = ?", (flow,))
            self._execute("DELETE FROM bulk_loads WHERE flow = ?", (flow,))

    # --- identities ----------------------------------------------------------------------------------------
    def get_identities(self, environment: str) -> dict[str, str]:
        with self._read():
            rows = self._execute("SELECT service, identity FROM identities WHERE environment = ? ORDER BY service",
                                 (environment,)).fetchall()
        return {row[0]: row[1] for row in rows}

    def bind_identity(self, environment: str, service: str, identity: str) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO identities (environment, service, identity, bound_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (environment, service) DO UPDATE SET identity = excluded.identity,"
                " bound_at = excluded.bound_at",
                (environment, service, identity, self._ts_in(self._clock())),
            )


def _status(status: DeadLetterStatus | str) -> DeadLetterStatus:
    try:
        return DeadLetterStatus(status)
    except ValueError:
        known = ", ".join(s.value for s in DeadLetterStatus)
        raise StateError(f"unknown dead-letter status {status!r}; use one of: {known}") from None


def _held(lease: Lease, now: datetime) -> LeaseConflict:
    left = max(0.0, (lease.expires_at - now).total_seconds())
    return LeaseConflict(
        f"flow {lease.flow!r} of environment {lease.environment!r} is being run by {lease.holder!r}; its lease "
        f"ends at {lease.expires_at.isoformat(timespec='seconds')} (in {left:.0f} s) unless renewed. Wait for "
        "that run to finish, or stop it.",
        lease=lease,
    )
