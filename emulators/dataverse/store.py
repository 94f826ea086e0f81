"""In-memory Dataverse tables with change tracking, compact enough for a million contacts.

A row is kept *encoded*: ``marshal.dumps`` of its full tuple in the table's column order (wire names,
lookups as ``_x_value``, then hidden columns: the row's slot in insertion order and, per lookup, the logical
name of the table it points at). One ``bytes`` object per row costs a fraction of a tuple of ~80 slots
plus one Python object per value (an unset column is one byte, a short string its length plus a few), and
``marshal.loads`` gives the tuple back in about a microsecond. Rows holding a value marshal cannot encode
(a ``Decimal`` from a Python caller) stay plain tuples. Everything outside this module sees full tuples.

A global version counter (Dataverse's ``versionnumber``) orders every change; a version log (an ``array``
of versions and a list of ids, appended on every write and deleted rows' tombstones) answers "what changed
since version v" by bisection. Change sets are atomic through an undo journal (``transaction()``).
``$orderby`` paging keeps the sorted id list of a query and resumes each page by bisecting on the last
row's sort key (keyset paging), patching the list with the rows written since instead of re-sorting.
"""

from __future__ import annotations

import marshal
import re
import uuid
from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

from mapsync.emulators.dataverse.errors import DataverseError
from mapsync.emulators.dataverse.metadata import (
    ColumnDef,
    TableDef,
    delete_behaviour,
    load_tables,
    nav_properties,
)
from mapsync.emulators.dataverse.odata import format_datetime, is_guid

__all__ = ["DELTA_RETENTION", "DataverseStore", "OrderKey"]

DELTA_RETENTION = timedelta(days=7)
_BIND = re.compile(r"^(?:.*/)?([A-Za-z_][A-Za-z0-9_]*)\(([0-9a-fA-F-]{36})\)$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$")
_STRINGY = frozenset({"string", "memo", "enum", "multichoice"})
_SORT_CACHE_SIZE = 4  # sorted id lists kept per store (each is 8 bytes per matching row)


class _SortCache:
    """The ids matching one ordered query, in order, as of the table's ``writes``-th write."""

    __slots__ = ("ids", "undos", "writes")

    def __init__(self, ids: list[str], writes: int, undos: int) -> None:
        self.ids, self.writes, self.undos = ids, writes, undos


class _Table:
    __slots__ = ("alt", "cols", "defn", "idx", "lookup_target_idx", "min_valid_version", "nav", "order",
                 "pk_idx", "pos_idx", "refs", "rows", "stamp_idx", "stamp_seconds", "stamps", "tombstones", "undos",
                 "ver_idx", "vlog_ids", "vlog_versions", "width")

    def __init__(self, defn: TableDef, stamps: dict[int, str], stamp_seconds: dict[str, int]) -> None:
        self.defn = defn
        self.stamps, self.stamp_seconds = stamps, stamp_seconds  # shared by the store's tables
        wire = [c.wire_name for c in defn.columns]
        hidden = ["@pos"] + [f"{c.wire_name}@target" for c in defn.columns if c.type == "lookup"]
        self.cols: tuple[str, ...] = tuple(wire + hidden)
        self.width = len(self.cols)
        self.idx: dict[str, int] = {name: i for i, name in enumerate(self.cols)}
        self.pos_idx = self.idx["@pos"]
        self.ver_idx = self.idx["versionnumber"]
        self.pk_idx = self.idx[defn.primary_key]
        self.stamp_idx = (self.idx["createdon"], self.idx["modifiedon"])
        self.lookup_target_idx = {c.wire_name: self.idx[f"{c.wire_name}@target"] for c in defn.columns
                                  if c.type == "lookup"}
        self.nav = nav_properties(defn)
        self.rows: dict[str, bytes | tuple[Any, ...]] = {}  # id -> encoded row
        self.order: list[str | None] = []
        self.tombstones: dict[str, int] = {}
        self.vlog_versions = array("q")
        self.vlog_ids: list[str] = []
        self.undos = 0  # rolled-back writes change rows without a version: sorted caches must notice
        self.alt: dict[str, dict[tuple[Any, ...], str]] = {name: {} for name, _cols in defn.alternate_keys}
        # Lookups whose target's deletion reaches this table: wire name -> (behaviour, {target id: {row ids}}).
        self.refs: dict[str, tuple[str, dict[str, set[str]]]] = {
            c.wire_name: (behaviour, {}) for c in defn.columns
            if (behaviour := delete_behaviour(defn, c)) is not None}
        self.min_valid_version = 0

    # encoded rows -----------------------------------------------------------------------------------
    def encode(self, row: tuple[Any, ...]) -> bytes | tuple[Any, ...]:
        """The row as stored. The id is left out (it is the row's key) and the two timestamps, which are
        always ``DataverseStore._stamp()`` strings, become their epoch second (5 bytes instead of 22)."""
        slim = list(row)
        slim[self.pk_idx] = None
        for i in self.stamp_idx:
            slim[i] = self.stamp_seconds.get(row[i])
            if slim[i] is None:  # not one of our stamps (cannot happen through the API): keep it as is
                return row
        try:
            return marshal.dumps(tuple(slim))
        except ValueError:  # e.g. a Decimal: kept as it is, decoded by identity
            return row

    def decode(self, packed: bytes | tuple[Any, ...], rid: str) -> tuple[Any, ...]:
        if type(packed) is not bytes:
            return packed  # type: ignore[return-value]
        row = list(marshal.loads(packed))
        row[self.pk_idx] = rid
        stamps = self.stamps
        for i in self.stamp_idx:
            row[i] = stamps[row[i]]
        return tuple(row)

    def get(self, rid: str) -> tuple[Any, ...] | None:
        """The full row of ``rid``, or None."""
        packed = self.rows.get(rid)
        return None if packed is None else self.decode(packed, rid)

    def index_refs(self, rid: str, row: tuple[Any, ...], add: bool) -> None:
        for wire, (_behaviour, by_target) in self.refs.items():
            target = row[self.idx[wire]]
            if target is None:
                continue
            if add:
                by_target.setdefault(target, set()).add(rid)
            elif (holders := by_target.get(target)) is not None:
                holders.discard(rid)
                if not holders:
                    del by_target[target]

    def alt_values(self, row: tuple[Any, ...]) -> list[tuple[str, tuple[Any, ...]]]:
        out = []
        for name, cols in self.defn.alternate_keys:
            values = tuple(_key_norm(row[self.idx[c]]) for c in cols)
            if all(v is not None for v in values):
                out.append((name, values))
        return out


class OrderKey:
    """A row's position in an ``$orderby``: per column ``(has value, value)`` (strings case-folded), each
    ascending or descending, then the primary key ascending, as Dataverse appends it to make paging stable.
    Nulls come first ascending and last descending."""

    __slots__ = ("desc", "key", "rid")

    def __init__(self, key: tuple[Any, ...], rid: str, desc: tuple[bool, ...]) -> None:
        self.key, self.rid, self.desc = key, rid, desc

    def __lt__(self, other: OrderKey) -> bool:
        for a, b, desc in zip(self.key, other.key, self.desc, strict=True):
            if a != b:
                a_set, b_set = a is not None, b is not None
                less = (a_set < b_set) if a_set != b_set else a < b
                return less != desc
        return self.rid < other.rid


def _key_norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


class DataverseStore:
    """Rows of every table in the snapshots. Public methods speak the Web API's JSON shape (wire names)."""

    def __init__(
        self,
        catalog: Any = None,
        *,
        clock: Callable[[], datetime] | None = None,
        retention: timedelta = DELTA_RETENTION,
    ) -> None:
        self.tables: dict[str, TableDef] = load_tables(catalog)
        self.by_entity_set: dict[str, TableDef] = {t.entity_set: t for t in self.tables.values()}
        self._clock = clock or (lambda: datetime.now(UTC))
        self.retention = retention
        self._version = 0
        self._journal: list[tuple[_Table, str, tuple[Any, ...] | None, int | None]] | None = None
        self._stamp_cache: tuple[int, str] = (-1, "")
        # Every createdon/modifiedon string ever stamped and its epoch second, so rows store the number.
        self._stamps: dict[int, str] = {}
        self._stamp_seconds: dict[str, int] = {}
        self._t: dict[str, _Table] = {}
        self._sorted: OrderedDict[tuple[Any, ...], _SortCache] = OrderedDict()
        self._allowed: dict[int, frozenset[int]] = {}  # id(ColumnDef) -> its option values
        self.reset()

    # -- public API -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop every row and tombstone; delta tokens issued before become expired."""
        self._t = {name: _Table(d, self._stamps, self._stamp_seconds) for name, d in self.tables.items()}
        self._sorted.clear()
        # Tokens carry the version they were issued at; bumping the counter splits old from new ones.
        self._version += 1
        for t in self._t.values():
            t.min_valid_version = self._version

    def table(self, name: str) -> TableDef:
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"unknown Dataverse table {name!r}") from None

    def insert(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        """Create a row as a CRM user would: id assigned if missing, createdon/modifiedon, versionnumber."""
        return self.as_dict(table, self.create(table, row, trusted=True))

    def update(self, table: str, id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change some columns of an existing row (bumps ``modifiedon`` and the version)."""
        t = self._table(table)
        rid = id.lower()
        if rid not in t.rows:
            raise DataverseError("not_found", table=table, id=rid)
        return self.as_dict(table, self.modify(table, rid, changes, trusted=True))

    def delete(self, table: str, id: str) -> None:
        t = self._table(table)
        rid = id.lower()
        if rid not in t.rows:
            raise DataverseError("not_found", table=table, id=rid)
        with self.transaction():
            self._delete_row(t, rid)

    def get(self, table: str, id: str) -> dict[str, Any] | None:
        row = self._table(table).get(id.lower())
        return None if row is None else self.as_dict(table, row)

    def rows(self, table: str) -> Iterator[dict[str, Any]]:
        for row in self.all_rows(table):
            yield self.as_dict(table, row)

    def rows_page(self, table: str, offset: int, limit: int) -> list[dict[str, Any]]:
        """Rows ``offset`` to ``offset + limit`` in insertion order; the rows skipped are not decoded."""
        t = self._table(table)
        live = (rid for rid in t.order if rid is not None)
        return [self.as_dict(table, t.decode(t.rows[rid], rid)) for rid in islice(live, offset, offset + limit)]

    def count(self, table: str) -> int:
        return len(self._table(table).rows)

    def dump(self, table: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """``{table: [rows sorted by primary key]}`` for one table or all, for comparing whole states."""
        names = [table] if table is not None else sorted(self._t)
        out = {}
        for name in names:
            pk = self.tables[name].primary_key
            out[name] = sorted(self.rows(name), key=lambda r, pk=pk: r[pk])
        return out

    def expire_change_tracking(self, table: str | None = None) -> None:
        """Make every delta token issued so far too old (as if the retention period had passed)."""
        self._version += 1
        for name in [table] if table else list(self._t):
            self._t[name].min_valid_version = self._version

    @property
    def version(self) -> int:
        return self._version

    # -- internal API used by the Web API layer (full row tuples) ---------------------------------
    def now(self) -> datetime:
        return self._clock()

    def column_index(self, table: str) -> dict[str, tuple[int, str, str]]:
        t = self._table(table)
        return {c.wire_name: (t.idx[c.wire_name], c.type, c.edm) for c in t.defn.columns}

    def row(self, table: str, id: str) -> tuple[Any, ...] | None:
        return self._table(table).get(id.lower())

    def find_by_key(self, table: str, values: Mapping[str, Any]) -> str | None:
        """Id of the row whose alternate key (exactly ``values``' columns) matches, or None."""
        t = self._table(table)
        for name, cols in t.defn.alternate_keys:
            if set(cols) == set(values):
                key = tuple(_key_norm(values[c]) for c in cols)
                return t.alt[name].get(key)
        raise DataverseError("bad_key")

    def has_key(self, table: str, columns: set[str]) -> bool:
        return any(set(cols) == columns for _n, cols in self._table(table).defn.alternate_keys)

    def as_dict(self, table: str, row: tuple[Any, ...], names: list[tuple[str, int]] | None = None) -> dict[str, Any]:
        t = self._t[table]
        if names is None:
            names = [(c.wire_name, t.idx[c.wire_name]) for c in t.defn.columns]
        return {name: row[i] for name, i in names}

    def lookup_target(self, table: str, row: tuple[Any, ...], wire: str) -> str | None:
        t = self._t[table]
        return row[t.lookup_target_idx[wire]]

    def create(self, table: str, payload: Mapping[str, Any], *, trusted: bool = False,
               key_values: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
        t = self._table(table)
        values = self._prepare(t, payload, trusted=trusted)
        if key_values:
            values.update({k: self._coerce(t, t.defn.column(k), v) for k, v in key_values.items()})  # type: ignore[arg-type]
        pk = t.defn.primary_key
        rid = values.get(pk)
        if rid is None:
            rid = str(uuid.uuid4())
        elif rid in t.rows:
            raise DataverseError("exists")
        values[pk] = rid
        self._computed(t, values, None)
        stamp = self._stamp()
        values["createdon"] = values["modifiedon"] = stamp
        row: list[Any] = [None] * t.width
        idx = t.idx
        for name, v in values.items():
            row[idx[name]] = v
        row[t.pos_idx] = len(t.order)
        row[t.ver_idx] = self._next_version()
        new = tuple(row)
        self._check_alt(t, rid, new)
        self._apply(t, rid, t.encode(new), new)
        return new

    def modify(self, table: str, rid: str, payload: Mapping[str, Any], *, trusted: bool = False) -> tuple[Any, ...]:
        t = self._table(table)
        values = self._prepare(t, payload, trusted=trusted)
        values.pop(t.defn.primary_key, None)
        old = t.get(rid)
        assert old is not None
        self._computed(t, values, old)
        row = list(old)
        for name, v in values.items():
            row[t.idx[name]] = v
        row[t.idx["modifiedon"]] = self._stamp()
        row[t.ver_idx] = self._next_version()
        new = tuple(row)
        self._check_alt(t, rid, new)
        self._apply(t, rid, t.encode(new), new)
        return new

    def remove(self, table: str, rid: str) -> None:
        with self.transaction():
            self._delete_row(self._table(table), rid)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes in the block happen, or none (the block raised): a Web API change set."""
        if self._journal is not None:  # nested: the outer transaction owns the undo journal
            yield
            return
        self._journal = []
        try:
            yield
        except BaseException:
            for entry in reversed(self._journal):
                self._undo(*entry)
            raise
        finally:
            self._journal = None

    # paging ----------------------------------------------------------------------------------------
    def scan(self, table: str, predicate: Callable[[tuple[Any, ...]], bool] | None, start: int,
             limit: int) -> tuple[list[tuple[Any, ...]], int | None]:
        """Up to ``limit`` matching rows in insertion order from slot ``start``, and the slot of the next
        matching row (None when there is none): reading one row ahead means no empty last page."""
        t = self._table(table)
        order, rows, out = t.order, t.rows, []
        for i in range(start, len(order)):
            rid = order[i]
            if rid is None:
                continue
            row = t.decode(rows[rid], rid)
            if predicate is None or predicate(row):
                if len(out) == limit:
                    return out, i
                out.append(row)
        return out, None

    def all_rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        t = self._table(table)
        rows = t.rows
        for rid in t.order:
            if rid is not None:
                yield t.decode(rows[rid], rid)

    def ordered_page(self, table: str, order: Sequence[tuple[str, bool]], predicate: Callable[[tuple[Any, ...]], bool] | None,
                     query: str, after: tuple[list[Any], str] | None, limit: int,
                     ) -> tuple[list[tuple[Any, ...]], tuple[list[Any], str] | None]:
        """One page of an ``$orderby`` query: up to ``limit`` rows sorted by ``order`` (wire name,
        descending) then the primary key, after the row whose ``(sort key, id)`` is ``after`` (keyset
        paging: a row written between pages is neither skipped nor repeated unless its key moved past the
        cursor). ``query`` names the filter, so that the sorted id list can be reused across pages.
        Returns the rows and the cursor of the last one when more follow. Cursors are JSON-friendly."""
        t = self._table(table)
        cols = tuple((t.idx[name], desc, t.defn.column(name).type in _STRINGY)  # type: ignore[union-attr]
                     for name, desc in order)
        desc = tuple(d for _i, d, _s in cols)
        ids = self._sorted_ids(t, table, cols, predicate, query)
        start = 0
        if after is not None:
            probe = OrderKey(tuple(after[0]), after[1], desc)
            try:
                start = bisect_right(ids, probe, key=lambda rid: self._order_key(t, rid, cols, desc))
            except TypeError:  # a cookie whose key values are not of the columns' types: not one of ours
                raise DataverseError("query_syntax", detail="The $skiptoken value is not valid.") from None
        page_ids = ids[start:start + limit + 1]
        more = len(page_ids) > limit
        rows = [t.get(rid) for rid in page_ids[:limit]]
        if not more or not rows:
            return rows, None  # type: ignore[return-value]
        last = self._order_key(t, page_ids[limit - 1], cols, desc)
        return rows, ([_jsonable(v) for v in last.key], last.rid)  # type: ignore[return-value]

    def _order_key(self, t: _Table, rid: str, cols: tuple[tuple[int, bool, bool], ...],
                   desc: tuple[bool, ...]) -> OrderKey:
        return OrderKey(_sort_values(t.decode(t.rows[rid], rid), cols), rid, desc)

    def _sorted_ids(self, t: _Table, table: str, cols: tuple[tuple[int, bool, bool], ...],
                    predicate: Callable[[tuple[Any, ...]], bool] | None, query: str) -> list[str]:
        """The ids matching ``predicate`` in query order, from the cache when the table has not changed,
        patched when only a few rows were written since, sorted afresh otherwise."""
        cache_key = (table, cols, query)
        cached = self._sorted.get(cache_key)
        writes = len(t.vlog_ids)
        rows = t.rows
        desc = tuple(d for _i, d, _s in cols)
        if cached is not None and cached.undos == t.undos:
            if cached.writes == writes:
                self._sorted.move_to_end(cache_key)
                return cached.ids
            changed = set(t.vlog_ids[cached.writes:])
            if len(changed) <= max(1000, len(cached.ids) // 50):
                ids = [rid for rid in cached.ids if rid not in changed]
                keyof = lambda rid: self._order_key(t, rid, cols, desc)  # noqa: E731
                for rid in changed:
                    packed = rows.get(rid)
                    if packed is not None and (predicate is None or predicate(t.decode(packed, rid))):
                        ids.insert(bisect_right(ids, keyof(rid), key=keyof), rid)
                cached.ids, cached.writes = ids, writes
                self._sorted.move_to_end(cache_key)
                return ids
        # Each matching row is decoded once; only its sort values are kept while sorting.
        keyed: list[tuple[str, tuple[Any, ...]]] = []
        for rid in t.order:
            if rid is None:
                continue
            row = t.decode(rows[rid], rid)
            if predicate is None or predicate(row):
                keyed.append((rid, _sort_values(row, cols)))
        keyed.sort(key=lambda e: e[0])  # the primary key breaks ties ...
        for j in range(len(cols) - 1, -1, -1):  # ... then stable sorts from the last order column to the first
            keyed.sort(key=lambda e, j=j: (e[1][j] is not None, e[1][j]), reverse=desc[j])
        ids = [rid for rid, _v in keyed]
        del keyed
        self._sorted[cache_key] = _SortCache(ids, writes, t.undos)
        self._sorted.move_to_end(cache_key)
        while len(self._sorted) > _SORT_CACHE_SIZE:
            self._sorted.popitem(last=False)
        return ids

    def delta_token(self, table: str) -> str:
        stamp = self._clock().astimezone(UTC).strftime("%m/%d/%Y %H:%M:%S")
        return f"{self._version}!{stamp}"

    def parse_delta_token(self, table: str, token: str) -> int:
        """The version a delta token stands for; ``delta_expired`` when it is too old or not ours."""
        t = self._table(table)
        m = re.fullmatch(r"(\d+)!(\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2})", token)
        if m is None:
            raise DataverseError("delta_expired")
        version = int(m.group(1))
        issued = datetime.strptime(m.group(2), "%m/%d/%Y %H:%M:%S").replace(tzinfo=UTC)
        if version < t.min_valid_version or version > self._version or self._clock() - issued > self.retention:
            raise DataverseError("delta_expired")
        return version

    def changes(self, table: str, since: int, upto: int, limit: int) -> tuple[list[tuple[str, Any]], int | None]:
        """Changes with ``since < version <= upto`` in version order: ("row", tuple) or ("deleted", id).
        Returns up to ``limit`` of them and the version to resume after (None when done)."""
        t = self._table(table)
        versions, ids = t.vlog_versions, t.vlog_ids
        i = bisect_right(versions, since)
        end = bisect_right(versions, upto)
        out: list[tuple[str, Any]] = []
        while i < end and len(out) < limit:
            v, rid = versions[i], ids[i]
            i += 1
            packed = t.rows.get(rid)
            row = None if packed is None else t.decode(packed, rid)
            if row is not None and row[t.ver_idx] == v:
                out.append(("row", row))
            elif row is None and t.tombstones.get(rid) == v:
                out.append(("deleted", rid))
        # Resume after the last version looked at; stale entries in between are skipped again cheaply.
        return out, (versions[i - 1] if i < end else None)

    # -- internals --------------------------------------------------------------------------------
    def _table(self, name: str) -> _Table:
        try:
            return self._t[name]
        except KeyError:
            raise KeyError(f"unknown Dataverse table {name!r}") from None

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _stamp(self) -> str:
        now = self._clock()
        second = int(now.timestamp())
        if self._stamp_cache[0] != second:  # one shared string per second keeps a million rows small
            text = self._stamps.get(second) or format_datetime(now)
            self._stamps[second], self._stamp_seconds[text] = text, second
            self._stamp_cache = (second, text)
        return self._stamp_cache[1]

    def _computed(self, t: _Table, values: dict[str, Any], old: tuple[Any, ...] | None) -> None:
        """Columns Dataverse computes on save: ``fullname`` from first and last name."""
        if "fullname" in t.idx and ("firstname" in values or "lastname" in values or old is None):
            def pick(name: str) -> Any:
                if name in values:
                    return values[name]
                return old[t.idx[name]] if old is not None and name in t.idx else None

            values["fullname"] = " ".join(p for p in (pick("firstname"), pick("lastname")) if p) or None

    def _check_alt(self, t: _Table, rid: str, row: tuple[Any, ...]) -> None:
        for name, values in t.alt_values(row):
            holder = t.alt[name].get(values)
            if holder is not None and holder != rid:
                cols = dict(t.defn.alternate_keys)[name]
                shown = ",".join(str(row[t.idx[c]]) for c in cols)
                raise DataverseError("duplicate_key", values=f"({shown})", key=f"'{name}'")

    def _unindex_alt(self, t: _Table, rid: str, row: tuple[Any, ...]) -> None:
        for name, values in t.alt_values(row):
            if t.alt[name].get(values) == rid:
                del t.alt[name][values]

    def _delete_row(self, t: _Table, rid: str) -> None:
        """Delete a row and do what its relationships say to the rows pointing at it (cascade, remove link)."""
        self._apply(t, rid, None)
        for other in self._t.values():
            for wire, (behaviour, by_target) in other.refs.items():
                for holder in sorted(by_target.get(rid, ())):
                    row = other.get(holder)
                    if row is None or row[other.lookup_target_idx[wire]] != t.defn.name:
                        continue  # the same id in another table (a polymorphic lookup)
                    if behaviour == "cascade":
                        self._delete_row(other, holder)
                    else:
                        self.modify(other.defn.name, holder, {wire: None}, trusted=True)

    def _apply(self, t: _Table, rid: str, new: bytes | tuple[Any, ...] | None,
               new_row: tuple[Any, ...] | None = None) -> None:
        """Store the encoded row ``new`` (``new_row`` decoded) under ``rid``, None deletes it; log it."""
        old = t.rows.get(rid)
        old_tomb = t.tombstones.get(rid)
        if self._journal is not None:
            self._journal.append((t, rid, old, old_tomb))
        old_row = None if old is None else t.decode(old, rid)
        if old_row is not None and t.alt:
            self._unindex_alt(t, rid, old_row)
        if t.refs:
            if old_row is not None:
                t.index_refs(rid, old_row, add=False)
            if new_row is not None:
                t.index_refs(rid, new_row, add=True)
        if new is not None:
            assert new_row is not None
            if old is None:  # create() reserved the next slot in insertion order
                t.order.append(rid)
            t.rows[rid] = new
            for name, values in t.alt_values(new_row):
                t.alt[name][values] = rid
            if old_tomb is not None:
                del t.tombstones[rid]
            t.vlog_versions.append(new_row[t.ver_idx])
        else:
            assert old_row is not None
            del t.rows[rid]
            t.order[old_row[t.pos_idx]] = None
            version = self._next_version()
            t.tombstones[rid] = version
            t.vlog_versions.append(version)
        t.vlog_ids.append(rid)

    def _undo(self, t: _Table, rid: str, old: bytes | tuple[Any, ...] | None, old_tomb: int | None) -> None:
        t.undos += 1
        cur = t.rows.get(rid)
        if cur is not None:
            cur_row = t.decode(cur, rid)
            self._unindex_alt(t, rid, cur_row)
            t.index_refs(rid, cur_row, add=False)
            del t.rows[rid]
            t.order[cur_row[t.pos_idx]] = None
        if old is not None:
            old_row = t.decode(old, rid)
            t.rows[rid] = old
            t.order[old_row[t.pos_idx]] = rid
            for name, values in t.alt_values(old_row):
                t.alt[name][values] = rid
            t.index_refs(rid, old_row, add=True)
        if old_tomb is None:
            t.tombstones.pop(rid, None)
        else:
            t.tombstones[rid] = old_tomb

    # -- payload validation ---------------------------------------------------------------------------
    def _prepare(self, t: _Table, payload: Mapping[str, Any], *, trusted: bool) -> dict[str, Any]:
        """Validate and convert a JSON payload into stored values by wire name (lookups included)."""
        d = t.defn
        out: dict[str, Any] = {}
        for key, value in payload.items():
            if key[:1] == "@":
                continue
            if key.endswith("@odata.bind"):
                nav = key[: -len("@odata.bind")]
                found = t.nav.get(nav)
                if found is None and trusted:
                    col = d.column(f"_{nav}_value")
                    found = (col, col.targets[0]) if col is not None and col.targets else None
                if found is None:
                    raise DataverseError("bad_bind", entity_set=d.entity_set, name=nav)
                col, target = found
                out[col.wire_name], out[f"{col.wire_name}@target"] = self._resolve_bind(target, value)
                continue
            if "@" in key:
                if trusted and key.endswith("@Microsoft.Dynamics.CRM.lookuplogicalname"):
                    continue
                raise DataverseError("invalid_property", name=key, table=d.name)
            col = d.column(key)
            if col is None or (col.type == "lookup" and not trusted):
                raise DataverseError("invalid_property", name=key, table=d.name)
            if col.type == "lookup":
                target = payload.get(f"{key}@Microsoft.Dynamics.CRM.lookuplogicalname")
                out[key], out[f"{key}@target"] = self._trusted_lookup(col, value, target)
                continue
            if col.read_only:
                continue  # Dataverse ignores writes to system columns such as createdon
            out[key] = self._coerce(t, col, value)
        return out

    def _resolve_bind(self, target: str, value: Any) -> tuple[str | None, str | None]:
        if value is None:
            return None, None
        m = _BIND.match(str(value)) if isinstance(value, str) else None
        if m is None:
            raise DataverseError("bad_value", value=str(value)[:100], edm="Edm.EntityReference")
        entity_set, rid = m.group(1), m.group(2).lower()
        tdef = self.by_entity_set.get(entity_set)
        if tdef is None:
            raise DataverseError("segment_not_found", segment=entity_set)
        if tdef.name != target:
            raise DataverseError("bad_value", value=str(value), edm=f"Microsoft.Dynamics.CRM.{target}")
        if rid not in self._t[tdef.name].rows:
            raise DataverseError("not_found", table=tdef.name, id=rid)
        return rid, tdef.name

    def _trusted_lookup(self, col: ColumnDef, value: Any, target: str | None) -> tuple[str | None, str | None]:
        if value is None:
            return None, None
        rid = str(value).lower()
        candidates = [target] if target else list(col.targets)
        for name in candidates:
            if name in self._t and rid in self._t[name].rows:
                return rid, name
        raise DataverseError("not_found", table=candidates[0] if candidates else "unknown", id=rid)

    def _coerce(self, t: _Table, col: ColumnDef | None, value: Any) -> Any:
        if col is None:
            raise DataverseError("invalid_property", name="?", table=t.defn.name)
        if value is None:
            return None
        kind = col.type
        if kind in ("string", "memo", "enum"):
            if not isinstance(value, str):
                raise DataverseError("bad_value", value=str(value), edm="Edm.String")
            if col.max_length is not None and len(value) > col.max_length:
                raise DataverseError("max_length", name=col.name, table=t.defn.name, max_length=col.max_length)
            return value
        if kind in ("integer", "bigint", "choice"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataverseError("bad_value", value=str(value), edm=col.edm)
            if kind == "choice" and col.options and value not in self._options(col):
                raise DataverseError("option_out_of_range", value=value, name=col.name, table=t.defn.name,
                                     accepted=",".join(str(v) for v, _l in col.options))
            if kind == "integer" and not -2147483648 <= value <= 2147483647:
                raise DataverseError("bad_value", value=str(value), edm="Edm.Int32")
            self._range(t, col, value)
            return value
        if kind in ("decimal", "money", "double"):
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                raise DataverseError("bad_value", value=str(value), edm=col.edm)
            self._range(t, col, value)
            return float(value) if kind == "double" else value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise DataverseError("bad_value", value=str(value), edm="Edm.Boolean")
            return value
        if kind == "guid":
            if not isinstance(value, str) or not is_guid(value):
                raise DataverseError("bad_value", value=str(value), edm="Edm.Guid")
            return value.lower()
        if kind in ("datetime", "date"):
            if not isinstance(value, str) or not _DATE_TIME.match(value):
                raise DataverseError("bad_value", value=str(value), edm=col.edm)
            try:
                if kind == "date":
                    return date.fromisoformat(value[:10]).isoformat()
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else \
                    datetime.fromisoformat(value + "T00:00:00+00:00")
            except ValueError:
                raise DataverseError("bad_value", value=value, edm=col.edm) from None
            return format_datetime(parsed)
        if kind == "multichoice":
            if not isinstance(value, str):
                raise DataverseError("bad_value", value=str(value), edm="Edm.String")
            allowed = self._options(col)
            for part in filter(None, value.split(",")):
                if not part.strip().lstrip("-").isdigit() or (allowed and int(part) not in allowed):
                    raise DataverseError("option_out_of_range", value=part, name=col.name, table=t.defn.name,
                                         accepted=",".join(str(v) for v in sorted(allowed)))
            return value
        return value

    def _options(self, col: ColumnDef) -> frozenset[int]:
        allowed = self._allowed.get(id(col))
        if allowed is None:  # ColumnDefs live as long as the store's catalog, so id() is stable
            allowed = self._allowed[id(col)] = frozenset(v for v, _l in col.options)
        return allowed

    def _range(self, t: _Table, col: ColumnDef, value: Any) -> None:
        if (col.minimum is not None and value < col.minimum) or (col.maximum is not None and value > col.maximum):
            raise DataverseError("number_out_of_range", value=value, name=col.name, table=t.defn.name)

    def __repr__(self) -> str:
        return f"DataverseStore(tables={sorted(self.tables)}, version={self._version})"


def _sort_values(row: tuple[Any, ...], cols: tuple[tuple[int, bool, bool], ...]) -> tuple[Any, ...]:
    """The row's values in the order columns, strings case-folded (Dataverse sorts case-insensitively)."""
    return tuple(row[i].casefold() if stringy and row[i] is not None else row[i] for i, _d, stringy in cols)


def _jsonable(value: Any) -> Any:
    """A sort-key value as a paging cookie can carry it (JSON has no Decimal)."""
    return float(value) if isinstance(value, Decimal) else value
