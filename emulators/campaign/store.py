"""The emulated Campaign database: one SQLite table per resource, in a private temporary file.

Why SQLite and not dicts: the sync benchmark writes 1,000,000 profiles, and a Python dict per row
would cost about a kilobyte each. A temporary on-disk SQLite database keeps the resident size to its
page cache, pages by primary key in O(page), and indexes the columns filters compare (``email``,
``externalId``, links). Rows are stored as compact JSON; only filter and link columns are duplicated.

PKeys are derived from the row id (reversibly, scrambled so they look opaque like Campaign's
``@Qy2MRJ...``), so nothing extra is stored per row and a forged or stale PKey simply finds nothing.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mapsync.emulators.campaign.resources import ResourceSpec, campaign_datetime

__all__ = ["CampaignStore", "Condition", "Row"]

_MULT = 0x9E3779B97F4A7C15  # odd, so multiplication mod 2**64 is a bijection
_INV = pow(_MULT, -1, 1 << 64)
_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter condition: ``field`` equals ``value`` (case-insensitively), or contains it."""

    fields: tuple[str, ...]
    value: str
    contains: bool = False


Row = tuple[int, dict[str, Any]]  # (row id, stored fields incl. created/lastModified)


def _col(name: str) -> str:
    return f'"f_{name}"'


class CampaignStore:
    """All rows of all Campaign resources. Thread-safe (one lock): the server and tests may share it."""

    def __init__(self, resources: Mapping[str, ResourceSpec], *, clock: Callable[[], datetime] | None = None) -> None:
        self.resources = dict(resources)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._tags = {name: i + 1 for i, name in enumerate(sorted(self.resources))}
        self._by_tag = {tag: name for name, tag in self._tags.items()}
        self._counts: dict[str, int] = {}
        self.generation = 0  # bumped when the served resources change (reload_resources)
        self._db = self._open()

    # ---- schema -------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-32768")  # 32 MB of page cache, the rest stays on disk
        for name, spec in self.resources.items():
            self._create_table(db, name, spec)
        return db

    def _create_table(self, db: sqlite3.Connection, name: str, spec: ResourceSpec) -> None:
        cols = "".join(f", {_col(f)} TEXT COLLATE NOCASE" for f in spec.index_fields)
        db.execute(f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, data TEXT NOT NULL{cols})')
        for f in spec.index_fields:
            db.execute(f'CREATE INDEX "ix_{name}_{f}" ON "{name}" ({_col(f)})')
        self._counts[name] = 0

    def reload_resources(self, resources: Mapping[str, ResourceSpec]) -> dict[str, list[str]]:
        """Serve new or changed resources without a restart: a new one starts empty (a PKey tag of its own,
        the existing ones keep theirs); a changed one keeps its rows and ids, re-indexed for its filters. A
        resource no longer in the snapshots is kept as it is."""
        added = sorted(n for n in resources if n not in self.resources)
        changed = sorted(n for n in resources if n in self.resources and resources[n] != self.resources[n])
        with self._lock:
            for name in added:
                self.resources[name] = resources[name]
                self._tags[name] = max(self._tags.values(), default=0) + 1
                self._by_tag[self._tags[name]] = name
                self._create_table(self._db, name, resources[name])
            for name in changed:
                rows = self._db.execute(f'SELECT id, data FROM "{name}" ORDER BY id').fetchall()
                self._db.execute(f'DROP TABLE "{name}"')
                self.resources[name] = spec = resources[name]
                self._create_table(self._db, name, spec)
                names = "".join(f", {_col(f)}" for f in spec.index_fields)
                marks = "".join(", ?" for _ in spec.index_fields)
                self._db.executemany(f'INSERT INTO "{name}" (id, data{names}) VALUES (?, ?{marks})',
                                     [(rid, data, *self._index_values(spec, json.loads(data))) for rid, data in rows])
                self._counts[name] = len(rows)
            self.generation += 1
        return {"added": added, "changed": changed}

    def reset(self) -> None:
        with self._lock:
            self._db.close()
            self._counts.clear()
            self._db = self._open()

    # ---- keys ---------------------------------------------------------------------------------
    def pkey(self, resource: str, row_id: int) -> str:
        raw = struct.pack(">BQ", self._tags[resource], (row_id * _MULT) & _MASK)
        return "@" + base64.urlsafe_b64encode(raw).decode("ascii")

    def row_id(self, resource: str, pkey: str) -> int | None:
        """The row id a PKey names, or None when it is not a PKey of this resource."""
        if not pkey.startswith("@") or len(pkey) != 13:
            return None
        try:
            tag, scrambled = struct.unpack(">BQ", base64.urlsafe_b64decode(pkey[1:]))
        except (ValueError, struct.error):
            return None
        if self._by_tag.get(tag) != resource:
            return None
        return (scrambled * _INV) & _MASK

    # ---- writes -------------------------------------------------------------------------------
    def insert(self, resource: str, fields: Mapping[str, Any], *, at: datetime | None = None) -> Row:
        stamp = campaign_datetime(at or self._clock())
        data = {**fields, "created": stamp, "lastModified": stamp}
        spec = self.resources[resource]
        with self._lock:
            names = ", ".join(_col(f) for f in spec.index_fields)
            marks = ", ".join("?" for _ in spec.index_fields)
            cur = self._db.execute(
                f'INSERT INTO "{resource}" (data{", " + names if names else ""}) VALUES (?{", " + marks if marks else ""})',
                (json.dumps(data, ensure_ascii=False, separators=(",", ":")), *self._index_values(spec, data)),
            )
            self._counts[resource] += 1
            return int(cur.lastrowid or 0), data

    def insert_many(self, resource: str, rows: Sequence[Mapping[str, Any]], *, at: datetime | None = None) -> int:
        """Bulk load (seeding): one transaction, no per-row reply."""
        stamp = campaign_datetime(at or self._clock())
        spec = self.resources[resource]
        names = ", ".join(_col(f) for f in spec.index_fields)
        marks = ", ".join("?" for _ in spec.index_fields)
        sql = f'INSERT INTO "{resource}" (data{", " + names if names else ""}) VALUES (?{", " + marks if marks else ""})'

        def params() -> Iterator[tuple[Any, ...]]:
            for fields in rows:
                data = {"created": stamp, "lastModified": stamp, **fields}
                yield (json.dumps(data, ensure_ascii=False, separators=(",", ":")), *self._index_values(spec, data))

        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(sql, params())
            self._db.execute("COMMIT")
            self._counts[resource] += len(rows)
        return len(rows)

    def update(self, resource: str, row_id: int, changes: Mapping[str, Any]) -> Row | None:
        """Apply changes (nested objects such as ``location`` are merged) and bump lastModified."""
        with self._lock:
            current = self.get(resource, row_id)
            if current is None:
                return None
            return row_id, self._rewrite(resource, row_id, current, changes, campaign_datetime(self._clock()))

    def _rewrite(self, resource: str, row_id: int, current: Mapping[str, Any], changes: Mapping[str, Any],
                 stamp: str) -> dict[str, Any]:
        spec = self.resources[resource]
        data = dict(current)
        for key, value in changes.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), Mapping) and "PKey" not in value:
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        data["lastModified"] = stamp
        sets = "".join(f", {_col(f)} = ?" for f in spec.index_fields)
        self._db.execute(
            f'UPDATE "{resource}" SET data = ?{sets} WHERE id = ?',
            (json.dumps(data, ensure_ascii=False, separators=(",", ":")), *self._index_values(spec, data), row_id),
        )
        return data

    def upsert_many(self, resource: str, key: str, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Insert or update each row by the value of its field ``key`` (an import's reconciliation), in one
        transaction and in order, so a key twice in ``rows`` is created once, then updated. Only the fields
        a row carries change. Per row: True when it was created."""
        spec = self.resources[resource]
        stamp = campaign_datetime(self._clock())
        created: list[bool] = []
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for fields in rows:
                    found = self._find_by(resource, spec, key, fields[key])
                    if found is None:
                        data = {**fields, "created": stamp, "lastModified": stamp}
                        names = "".join(f", {_col(f)}" for f in spec.index_fields)
                        marks = "".join(", ?" for _ in spec.index_fields)
                        self._db.execute(f'INSERT INTO "{resource}" (data{names}) VALUES (?{marks})',
                                         (json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                                          *self._index_values(spec, data)))
                        self._counts[resource] += 1
                    else:
                        self._rewrite(resource, found[0], found[1], fields, stamp)
                    created.append(found is None)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._counts[resource] = int(self._db.execute(f'SELECT COUNT(*) FROM "{resource}"').fetchone()[0])
                raise
        return created

    def _find_by(self, resource: str, spec: ResourceSpec, key: str, value: Any) -> Row | None:
        """The first row (by id) whose field ``key`` equals ``value`` exactly: through the field's index when
        it has one (a filter compares it), else by reading the stored JSON."""
        if key in spec.index_fields:  # the index is case-insensitive: compare exactly after it
            found = self._db.execute(f'SELECT id, data FROM "{resource}" WHERE {_col(key)} = ? ORDER BY id',
                                     (str(value),)).fetchall()
        else:
            found = self._db.execute(
                f'SELECT id, data FROM "{resource}" WHERE json_extract(data, ?) = ? ORDER BY id',
                (f'$."{key}"', value)).fetchall()
        for rid, data in found:
            decoded = json.loads(data)
            if decoded.get(key) == value:
                return int(rid), decoded
        return None

    def delete(self, resource: str, row_id: int) -> bool:
        """Delete a row; links pointing at it from other resources are cleared (assumed integrity)."""
        with self._lock:
            cur = self._db.execute(f'DELETE FROM "{resource}" WHERE id = ?', (row_id,))
            if cur.rowcount == 0:
                return False
            self._counts[resource] -= 1
            pkey = self.pkey(resource, row_id)
            for other, spec in self.resources.items():
                for link, fspec in spec.links.items():
                    if resource in fspec.targets:
                        for rid, _ in list(self.rows_where(other, [Condition((link,), pkey)])):
                            self.update(other, rid, {link: None})
            return True

    # ---- reads --------------------------------------------------------------------------------
    def get(self, resource: str, row_id: int) -> dict[str, Any] | None:
        with self._lock:
            found = self._db.execute(f'SELECT data FROM "{resource}" WHERE id = ?', (row_id,)).fetchone()
        return json.loads(found[0]) if found else None

    def exists(self, resource: str, pkey: str) -> bool:
        row_id = self.row_id(resource, pkey)
        if row_id is None:
            return False
        with self._lock:
            return self._db.execute(f'SELECT 1 FROM "{resource}" WHERE id = ?', (row_id,)).fetchone() is not None

    def count(self, resource: str, where: Sequence[Condition] = ()) -> int:
        if not where:
            return self._counts[resource]
        sql, args = self._where(where)
        with self._lock:
            return int(self._db.execute(f'SELECT COUNT(*) FROM "{resource}" WHERE {sql}', args).fetchone()[0])

    def page(self, resource: str, *, after: int = 0, limit: int = 25, where: Sequence[Condition] = ()) -> list[Row]:
        """Rows with id > ``after`` in id order: keyset paging, O(page) at any depth."""
        sql, args = self._where(where)
        with self._lock:
            found = self._db.execute(
                f'SELECT id, data FROM "{resource}" WHERE id > ? AND {sql} ORDER BY id LIMIT ?',
                (after, *args, limit),
            ).fetchall()
        return [(int(rid), json.loads(data)) for rid, data in found]

    def dump(self, resource: str, *, offset: int = 0, limit: int = 100) -> list[Row]:
        """Rows by id with an offset (control endpoints; O(offset), fine for inspection)."""
        with self._lock:
            found = self._db.execute(
                f'SELECT id, data FROM "{resource}" ORDER BY id LIMIT ? OFFSET ?', (limit, offset)
            ).fetchall()
        return [(int(rid), json.loads(data)) for rid, data in found]

    def rows_where(self, resource: str, where: Sequence[Condition] = ()) -> Iterator[Row]:
        after = 0
        while batch := self.page(resource, after=after, limit=1000, where=where):
            yield from batch
            after = batch[-1][0]

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    # ---- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _index_values(spec: ResourceSpec, data: Mapping[str, Any]) -> list[str | None]:
        out: list[str | None] = []
        for name in spec.index_fields:
            value = data.get(name)
            if isinstance(value, Mapping):
                value = value.get("PKey")
            out.append(None if value is None else str(value))
        return out

    @staticmethod
    def _where(where: Sequence[Condition]) -> tuple[str, list[str]]:
        if not where:
            return "1", []
        parts: list[str] = []
        args: list[str] = []
        for cond in where:
            if cond.contains:
                escaped = cond.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                parts.append("(" + " OR ".join(f"{_col(f)} LIKE ? ESCAPE '\\'" for f in cond.fields) + ")")
                args.extend(f"%{escaped}%" for _ in cond.fields)
            else:
                parts.append("(" + " OR ".join(f"{_col(f)} = ?" for f in cond.fields) + ")")
                args.extend(cond.value for _ in cond.fields)
        return " AND ".join(parts), args
