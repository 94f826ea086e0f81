"""Dataverse bulk operation messages: many creates (``CreateMultiple``) or upserts (``UpsertMultiple``) of one
table in one request, where the table supports them.

Availability is asked the way Microsoft documents it, once per table and message in a run: the
``sdkmessagefilters`` of the message whose ``primaryobjecttypecode`` is the table (one row: available; none:
not, and the writes go in ``$batch`` as before). A bulk request on a standard table is one transaction: when
one row fails, none is written and the reply carries that row's error without saying which row it was. So a
failed request is split in halves, each sent again, until every bad row is alone; those get the service's
error as their outcome (a dead letter), every other row is written exactly once. Only rows whose repeat cannot
make a second record go this way (a create by alternate key or id, an upsert by either): a request whose
reply was lost can be sent again, a row already written comes back as a duplicate key and is adopted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from mapsync.engine.connectors.base import WriteOp, WriteOutcome, outcome_from_error
from mapsync.engine.errors import ConnectorError, TransientError

__all__ = ["BULK_MIN_WRITES", "BULK_SIZE", "BulkMessage", "BulkRow", "MessageAvailability", "bisect_write"]

log = logging.getLogger("mapsync.d365")

BulkMessage = Literal["CreateMultiple", "UpsertMultiple"]
# Fewer writes than this of one table in one call go in `$batch`: a bulk request pays off when it is full.
BULK_MIN_WRITES = 100
# Targets per request. Microsoft: "1,000 records per request is a reasonable place to start" (standard tables).
BULK_SIZE = 1000
# Statuses about the caller, not a row (credentials, privileges): every row of the request shares them, so
# splitting the request would only repeat the same answer.
CALLER_STATUSES = frozenset({401, 403})
# "A record with matching key values already exists" (duplicate alternate key / duplicate record).
DUPLICATE_CODES = frozenset({"0x80060892", "0x80040237"})

GetJson = Callable[[str], Awaitable[dict[str, Any]]]


class MessageAvailability:
    """Which SDK messages a table supports, asked once per (table, message) for the connector's life (a run)."""

    def __init__(self, get_json: GetJson) -> None:
        self._get_json = get_json
        self._asked: dict[tuple[str, str], asyncio.Task[bool]] = {}

    async def available(self, table: str, message: str) -> bool:
        key = (table, message)
        if key not in self._asked:  # concurrent callers share the one question
            self._asked[key] = asyncio.ensure_future(self._ask(table, message))
        return await self._asked[key]

    async def _ask(self, table: str, message: str) -> bool:
        query = urlencode({"$select": "sdkmessagefilterid",
                           "$filter": "sdkmessageid/name eq @message and primaryobjecttypecode eq @table",
                           "@message": f"'{message}'", "@table": f"'{table}'"}, safe="$,@'/")
        try:
            body = await self._get_json(f"sdkmessagefilters?{query}")
        except ConnectorError as exc:
            log.warning("could not ask whether %s supports %s (%s); writing through $batch", table, message, exc,
                        extra={"event": "d365.message_unknown", "table": table, "sdk_message": message})
            return False
        found = bool(body.get("value"))
        log.info("%s %s %s", table, "supports" if found else "does not support", message,
                 extra={"event": "d365.message_available", "table": table, "sdk_message": message, "available": found})
        return found


@dataclass(frozen=True, slots=True)
class BulkRow:
    """One write of a bulk request: its position in the caller's list, the op, and its ``Targets`` item."""

    index: int
    op: WriteOp
    target: Mapping[str, Any]


Send = Callable[[Sequence[BulkRow]], Awaitable["list[str | None] | ConnectorError"]]
Adopt = Callable[[Sequence[BulkRow]], Awaitable[dict[int, str]]]
Single = Callable[[BulkRow, ConnectorError], Awaitable[WriteOutcome]]


async def bisect_write(rows: Sequence[BulkRow], send: Send, adopt: Adopt, single: Single) -> list[tuple[int, WriteOutcome]]:
    """Write ``rows`` in one request; on a whole-request failure caused by a row, split until the failing rows
    are alone. ``send`` answers the new ids (or the error), ``adopt`` the ids of rows a duplicate-key failure
    shows to exist already (by index), ``single`` the outcome of a row that failed alone."""
    reply = await send(rows)
    if not isinstance(reply, ConnectorError):
        return [(r.index, WriteOutcome(r.op.ref, True, target or r.op.target_id, 200)) for r, target in zip(rows, reply, strict=True)]
    if isinstance(reply, TransientError) or reply.status in CALLER_STATUSES:
        # Not a row's fault: every row shares the answer (a transient one is tried again by the writer).
        return [(r.index, outcome_from_error(r.op.ref, reply, target_id=r.op.target_id)) for r in rows]
    if len(rows) == 1:
        return [(rows[0].index, await single(rows[0], reply))]
    if reply.code in DUPLICATE_CODES or reply.status == 412:
        # Written earlier (a reply lost, a run killed before it recorded them): adopt those, send the rest.
        existing = await adopt(rows)
        if existing:
            adopted = [(r.index, WriteOutcome(r.op.ref, True, existing[r.index], reply.status, reply.code, "already existed"))
                       for r in rows if r.index in existing]
            rest = [r for r in rows if r.index not in existing]
            return adopted + (await bisect_write(rest, send, adopt, single) if rest else [])
    middle = len(rows) // 2
    halves = await asyncio.gather(bisect_write(rows[:middle], send, adopt, single),
                                  bisect_write(rows[middle:], send, adopt, single))
    return [*halves[0], *halves[1]]
