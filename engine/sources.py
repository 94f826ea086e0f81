"""Where a flow's records come from: one adapter per kind of source, all yielding ``SourceBatch`` values.

A batch carries the rows of one page, the source keys deleted since the last run, and the cursor that
may be stored once this batch and every batch before it are acknowledged. The executor never looks
inside a cursor.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mapsync.engine.connectors.base import ChangeTrackingExpired
from mapsync.engine.connectors.d365 import D365Connector
from mapsync.engine.connectors.events import EventsConnector
from mapsync.engine.errors import ConfigError

__all__ = ["D365TableSource", "EventFeedSource", "Source", "SourceBatch", "source_for"]

log = logging.getLogger("mapsync.source")


@dataclass(frozen=True, slots=True)
class SourceBatch:
    rows: Sequence[dict[str, Any]] = ()
    deleted: Sequence[str] = ()
    cursor: str | None = None  # store once this batch is acknowledged; None: keep the stored one
    prefiltered: bool = False  # the pushed-down filter already ran at the source: apply only the residual
    full: bool = False  # part of a full read (mirror mode may delete what a full read did not see)
    notes: tuple[str, ...] = field(default=())


class Source(Protocol):
    # True: ``fetch_many`` answers records as they are now, and a key it leaves out is gone from the source.
    # False: the source cannot be asked by key (dead letters then keep the only copy of a record).
    fetches_current: bool

    def batches(self, cursor: str | None, *, full: bool) -> AsyncIterator[SourceBatch]: ...

    async def fetch(self, key: str) -> dict[str, Any] | None: ...

    async def fetch_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    async def expected_total(self) -> int | None:
        """About how many records a full read brings (progress display only); None when unknown."""
        ...


class D365TableSource:
    """A Dataverse table: change tracking when the table has it, else a ``modifiedon`` watermark.

    Dataverse refuses ``$filter`` together with change tracking, and a delta link keeps the ``$select``
    of the read that produced it. So a full read of a tracked table is one tracked read of the mapped
    columns, filtered locally, whose last page yields the delta link of the next run. Tables without
    change tracking get the pushed-down ``$filter`` on their full read.
    """

    fetches_current = True
    FETCH_CHUNK = 50  # keys per `$filter` (`key eq a or key eq b ...`): well inside Dataverse's URL limit

    def __init__(self, connector: D365Connector, table: str, select: Sequence[str], key: str,
                 pushdown: str | None, page_size: int = 5000) -> None:
        self.connector = connector
        self.table = table
        self.key = key
        self.select = list(select)
        self.pushdown = pushdown
        self.page_size = page_size
        schema = connector.table(table)
        self.change_tracking = bool(schema and schema.change_tracking)

    async def batches(self, cursor: str | None, *, full: bool) -> AsyncIterator[SourceBatch]:
        if not self.change_tracking:
            async for batch in self._by_modifiedon(None if full else cursor):
                yield batch
            return
        if cursor is not None and not full:
            try:
                async for page in self.connector.read_changes(self.table, self.select, cursor, self.page_size):
                    yield SourceBatch(page.rows, page.deleted, cursor=page.delta_link)
                return
            except ChangeTrackingExpired:
                log.warning("change tracking token of %s expired; doing a full read", self.table,
                            extra={"event": "source.full_read_fallback", "table": self.table})
        async for page in self.connector.read_changes(self.table, self.select, None, self.page_size):
            yield SourceBatch(page.rows, page.deleted, cursor=page.delta_link, full=True)

    async def _by_modifiedon(self, cursor: str | None) -> AsyncIterator[SourceBatch]:
        if cursor is None:
            select = [*self.select, *(["modifiedon"] if "modifiedon" not in self.select else [])]
            pages = self.connector.read(self.table, select, self.pushdown, self.page_size, orderby="modifiedon asc")
        else:
            pages = self.connector.read_modified_since(self.table, self.select, cursor, self.page_size)
        async for rows in pages:
            stamps = [r.get("modifiedon") for r in rows if r.get("modifiedon")]
            # `ge` on the newest stamp re-reads the rows at that instant: idempotent writes make that safe.
            yield SourceBatch(rows, cursor=max(stamps) if stamps else None, full=cursor is None,
                              prefiltered=cursor is None and self.pushdown is not None)

    async def fetch(self, key: str) -> dict[str, Any] | None:
        return (await self.fetch_many([key])).get(key)

    async def expected_total(self) -> int | None:
        return await self.connector.total_count(self.table)

    async def fetch_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The current rows of ``keys`` (the flow's key column), by key; a missing key is not in the table."""
        from mapsync.engine.connectors.odata import literal

        found: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), self.FETCH_CHUNK):
            chunk = wanted[start:start + self.FETCH_CHUNK]
            filt = " or ".join(f"{self.key} eq {literal(k)}" for k in chunk)
            async for rows in self.connector.read(self.table, self.select, filt, len(chunk)):
                for row in rows:
                    if row.get(self.key) is not None:
                        found[str(row[self.key])] = row
        return found


class EventFeedSource:
    """One kind of email event (send, open, click, bounce) out of the events journal.

    Journal pages are small and hold every kind of event, so events are gathered over pages into batches of
    exactly ``min_batch`` (a full bulk request; the last batch of a read may be smaller). A batch may end inside
    a page: its cursor is then the position of the page before, so the page's other events are read again
    after a crash rather than lost; a batch that ends with its last page carries that page's position.
    """

    def __init__(self, connector: EventsConnector, feed: str, min_batch: int = 1000) -> None:
        self.connector = connector
        self.feed = feed
        self.min_batch = min_batch

    async def batches(self, cursor: str | None, *, full: bool) -> AsyncIterator[SourceBatch]:
        since = None if full else cursor
        rows: list[dict[str, Any]] = []
        done: str | None = None  # the position every event before which is in `rows` or an earlier batch
        notes: tuple[str, ...] = ()
        async for page in self.connector.read(since):
            rows.extend(e for e in (item.get("event") or {} for item in page.events) if e.get("type") == self.feed)
            if self.connector.last_gap is not None:
                notes = (str(self.connector.last_gap),)
            while len(rows) >= self.min_batch:
                batch, rows = rows[:self.min_batch], rows[self.min_batch:]
                yield SourceBatch(batch, cursor=done if rows else page.position or done, full=since is None,
                                  notes=notes)
            done = page.position or done
        if rows or done is not None:
            yield SourceBatch(rows, cursor=done, full=since is None, notes=notes)

    fetches_current = False  # the journal cannot be queried by event id; dead letters keep the whole event

    async def fetch(self, key: str) -> dict[str, Any] | None:
        return None

    async def fetch_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}

    async def expected_total(self) -> int | None:
        return None  # the journal does not say how many events it holds


class CampaignResourceSource:
    """A Campaign resource (profiles, custom resources). Campaign has no change feed for them, so every run
    reads the resource in full; a record the key map knows and the read did not return was deleted."""

    fetches_current = False  # dead letters keep the record as it was read

    def __init__(self, connector: Any, resource: str) -> None:
        self.connector = connector
        self.resource = resource

    async def batches(self, cursor: str | None, *, full: bool) -> AsyncIterator[SourceBatch]:
        async for rows in self.connector.read(self.resource):
            yield SourceBatch(rows, full=True)

    async def fetch_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}

    async def expected_total(self) -> int | None:
        return None


def source_for(flow: Any, connectors: Any) -> Source:
    """The adapter for a compiled flow's source, or a ConfigError naming the missing service settings."""
    system, table = flow.source.system, flow.source.name
    if system == "d365":
        if connectors.d365 is None:
            raise ConfigError(f"flow {flow.name} reads Dynamics 365, but the environment has no `d365` settings",
                              setting="d365")
        return D365TableSource(connectors.d365, table, flow.select, flow.key_source_wire, flow.pushdown)
    if system == "campaign" and table.startswith("events."):
        if connectors.events is None:
            raise ConfigError(f"flow {flow.name} reads email events, but the environment has no `events` settings",
                              setting="events")
        return EventFeedSource(connectors.events, table.split(".", 1)[1])
    if system == "campaign":
        if connectors.campaign is None:
            raise ConfigError(f"flow {flow.name} reads Campaign, but the environment has no `campaign` settings",
                              setting="campaign")
        return CampaignResourceSource(connectors.campaign, table)
    raise ConfigError(f"flow {flow.name}: reading from {system}.{table} is not supported", setting="mappings")
