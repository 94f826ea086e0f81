"""What a load's rows need once Campaign has imported them, kept on local disk beside the files: per key, the
payload hash to record in the key map, whether mapsync creates the record, and the file it went in.

Reconciliation looks keys up here page by page as it reads Campaign, so a million-row load never sits in
memory. A SQLite file of the standard library: it survives a crash with the files it describes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Staged", "Staging"]


@dataclass(frozen=True, slots=True)
class Staged:
    key: str
    hash: str | None
    ours: bool  # the key-map entry's created_by_mapsync once imported
    creates: bool  # the key map did not know the record: the import creates it (or adopts it by key)
    chunk: int


class Staging:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, hash TEXT, ours INTEGER NOT NULL,"
                         " creates INTEGER NOT NULL, relinks INTEGER NOT NULL DEFAULT 0, chunk INTEGER NOT NULL, rejected INTEGER NOT NULL DEFAULT 0,"
                         " seen INTEGER NOT NULL DEFAULT 0)")
        self._pending: list[tuple[str, str | None, int, int, int, int]] = []

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction for a batch of statements. The connection is in autocommit mode, where
        ``with connection`` begins nothing: each row of an ``executemany`` would be a transaction (and a disk
        sync) of its own."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, key: str, digest: str | None, ours: bool, creates: bool, chunk: int, *,
            relinks: bool = False) -> None:
        """``relinks``: the row makes a new record for a key whose record was removed (the flows linking to
        this one re-read once the load is done)."""
        self._pending.append((key, digest, int(ours), int(creates), chunk, int(relinks)))
        if len(self._pending) >= 5000:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO rows (key, hash, ours, creates, chunk, relinks)"
                                 " VALUES (?, ?, ?, ?, ?, ?)",
                                 self._pending)
        self._pending.clear()

    def reject(self, keys: Sequence[str]) -> None:
        self.flush()
        with self._transaction():
            self._db.executemany("UPDATE rows SET rejected = 1 WHERE key = ?", [(k,) for k in keys])

    def lookup(self, keys: Sequence[str]) -> dict[str, Staged]:
        """The rows of ``keys`` that went in and were not rejected; they are marked as seen in Campaign."""
        self.flush()
        out: dict[str, Staged] = {}
        for start in range(0, len(keys), 500):
            part = list(keys[start:start + 500])
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT key, hash, ours, creates, chunk FROM rows WHERE rejected = 0 AND key IN ({marks})",
                                    part).fetchall()
            out.update({r[0]: Staged(r[0], r[1], bool(r[2]), bool(r[3]), int(r[4])) for r in rows})
        if out:
            with self._transaction():
                self._db.executemany("UPDATE rows SET seen = 1 WHERE key = ?", [(k,) for k in out])
        return out

    def unseen(self, limit: int = 1000) -> list[Staged]:
        """Rows imported (not rejected) that the read of Campaign did not return."""
        self.flush()
        rows = self._db.execute("SELECT key, hash, ours, creates, chunk FROM rows WHERE rejected = 0 AND seen = 0 LIMIT ?",
                                (limit,)).fetchall()
        return [Staged(r[0], r[1], bool(r[2]), bool(r[3]), int(r[4])) for r in rows]

    def count(self) -> tuple[int, int]:
        """(rows the import creates, rows it updates), rejected ones left out."""
        self.flush()
        row = self._db.execute("SELECT COALESCE(SUM(creates), 0), COUNT(*) FROM rows WHERE rejected = 0").fetchone()
        return int(row[0]), int(row[1]) - int(row[0])

    def relinks(self) -> bool:
        """Whether an imported row re-made a removed record."""
        self.flush()
        return self._db.execute("SELECT 1 FROM rows WHERE relinks = 1 AND rejected = 0 LIMIT 1").fetchone() is not None

    def reset_seen(self) -> None:
        with self._transaction():
            self._db.execute("UPDATE rows SET seen = 0")

    def close(self) -> None:
        self.flush()
        self._db.close()
