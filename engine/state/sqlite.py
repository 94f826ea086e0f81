"""The default state store: one SQLite file per environment, in WAL mode.

WAL lets `mapsync status` read while a run writes; ``busy_timeout`` makes a second writer wait before it
is told the store is locked. ``synchronous=NORMAL``: a power cut may lose the last commits (never corrupt
the file); the cursor then sits earlier and the idempotent writes are simply repeated. A file that is not
a mapsync state database is reported, never overwritten or recreated.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from mapsync.engine.errors import StateError
from mapsync.engine.state._sql import SqlStore
from mapsync.engine.state.base import Clock, KeyEntry, utcnow

__all__ = ["SqliteStore"]


class SqliteStore(SqlStore):
    _types: ClassVar[Mapping[str, str]] = {
        "id": "INTEGER PRIMARY KEY",
        "ts": "TEXT",  # ISO 8601 UTC with microseconds: sorts and compares as text
        "key": "TEXT",
        "bool": "INTEGER",
        "false": "0",
        "real": "REAL",
        "without_rowid": "WITHOUT ROWID",
    }

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = utcnow,
        busy_timeout: float = 5.0,
        schema_version: int | None = None,  # migrate only this far: for tests and upgrade tooling
    ) -> None:
        super().__init__(clock=clock)
        memory = str(path) == ":memory:"
        self.path = None if memory else Path(path)
        self.url = f"sqlite:///{path}"
        self._busy_timeout = busy_timeout
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot create the folder of the state database {self.path}: {exc.strerror}") from None
        try:
            # isolation_level=None: the driver opens no transactions behind our back; transaction() does.
            self._conn = sqlite3.connect(
                ":memory:" if memory else str(self.path),
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # calls are serialized by the store's lock
            )
        except sqlite3.Error as exc:
            raise self._state_error(exc) from None
        try:
            with self._errors():
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                if not memory:
                    self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
                    self._conn.execute("PRAGMA synchronous = NORMAL")
                self._refuse_foreign()
            self._open(schema_version)
        except BaseException:
            self._conn.close()
            raise

    # --- backend hooks -------------------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows)

    def _begin(self) -> None:
        # IMMEDIATE takes the write lock now, so a transaction never fails halfway on a lock upgrade.
        self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _ts_in(self, value: datetime | None) -> Any:
        return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")

    def _ts_out(self, value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    def _in_list(self, column: str, values: list[str]) -> tuple[str, list[Any]]:
        # One JSON parameter instead of thousands of `?`: no variable limit, one prepared statement.
        return f"{column} IN (SELECT value FROM json_each(?))", [json.dumps(values)]

    def _upsert_keys(self, flow: str, entries: list[KeyEntry]) -> None:
        self._conn.executemany(
            "INSERT INTO keymap (flow, source_key, target_id, payload_hash, created_by_mapsync, synced_at, deleted)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (flow, source_key) DO UPDATE SET"
            " target_id = excluded.target_id, payload_hash = excluded.payload_hash,"
            " created_by_mapsync = excluded.created_by_mapsync, synced_at = excluded.synced_at,"
            " deleted = excluded.deleted",
            [
                (
                    flow,
                    e.source_key,
                    e.target_id,
                    e.payload_hash,
                    e.created_by_mapsync,
                    self._ts_in(e.synced_at),
                    e.deleted,
                )
                for e in entries
            ],
        )

    def _has_table(self, name: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def _refuse_foreign(self) -> None:
        """A SQLite file with tables but no schema_version belongs to something else: leave it alone."""
        if self._has_table("schema_version"):
            return
        row = self._conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchone()
        if row[0]:
            raise StateError(
                f"{self.path} is a SQLite database but not a mapsync state store (it has other tables). It was not "
                "changed. Point `state:` in mapsync.yaml at another file."
            )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._state_error(exc) from exc

    def _state_error(self, exc: sqlite3.Error) -> StateError:
        name = getattr(exc, "sqlite_errorname", "") or ""
        where = self.path or ":memory:"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return StateError(
                f"the state database {where} is locked by another process (waited {self._busy_timeout:g} s). Is "
                "another mapsync run (or a sqlite3 shell) writing to it? Let it finish, then run again."
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return StateError(
                f"{where} is not a readable mapsync state database ({exc}). It was not changed. Restore it from a "
                f"backup, or move it aside (mv {where} {where}.broken) and run again: the next run starts over "
                "with a full sync."
            )
        if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
            return StateError(f"cannot write the state database {where} ({exc}): check the file's permissions")
        if name.startswith("SQLITE_FULL"):
            return StateError(f"the disk holding the state database {where} is full")
        return StateError(f"state database {where}: {exc}")
