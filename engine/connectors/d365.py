"""The Dataverse (Dynamics 365) Web API connector: schema, paged reads, change tracking, batched writes.

Reads follow ``@odata.nextLink`` verbatim (Dataverse has no ``$skip``). Change tracking returns rows and
``$deletedEntity`` tombstones, then a delta link; an expired delta token raises ``ChangeTrackingExpired``
so the executor does a full read. Many creates or upserts of one table go through the bulk messages
``CreateMultiple`` / ``UpsertMultiple`` where the table supports them (``d365_bulk``: one request per 1,000
rows, a failed request split until its bad rows are alone). Other writes go in ``$batch`` requests with
``Prefer: odata.continue-on-error`` and every record its own part (no change set), so one bad row fails alone;
parts that failed transiently are sent again, the others become per-record outcomes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from mapsync.dsl.schema import Catalog, FieldSchema, TableSchema
from mapsync.dsl.types import ValueType as V
from mapsync.dsl.types import value_type_for
from mapsync.engine.config import D365Settings
from mapsync.engine.connectors.base import (
    ChangePage,
    ChangeTrackingExpired,
    WriteOp,
    WriteOutcome,
    outcome_from_error,
)
from mapsync.engine.connectors.d365_bulk import (
    BULK_MIN_WRITES,
    BULK_SIZE,
    DUPLICATE_CODES,
    BulkMessage,
    BulkRow,
    MessageAvailability,
    bisect_write,
)
from mapsync.engine.connectors.odata import (
    BatchPart,
    build_batch,
    entity_id_from,
    key_segment,
    literal,
    odata_quote,
    parse_batch,
)
from mapsync.engine.errors import ConnectorError, RequestError, TerminalError, TransientError
from mapsync.engine.http import (
    HttpClient,
    backoff_delay,
    error_from_status,
    is_transient_status,
    parse_retry_after,
)

__all__ = ["ODATA_HEADERS", "D365Connector"]

log = logging.getLogger("mapsync.d365")

ODATA_HEADERS = {
    "OData-MaxVersion": "4.0",
    "OData-Version": "4.0",
    "Accept": "application/json",
    "Content-Type": "application/json; charset=utf-8",
}
MAX_PAGE_SIZE = 5000
MAX_BATCH = 1000
ADOPT_CHUNK = 50  # keys per `$filter` (`key eq a or key eq b ...`) when adopting rows a bulk request found written
EXPIRED_MARKER = "Version stamp associated with the client has expired"
_EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"

# AttributeType (EntityDefinitions) -> snapshot type; DateTime becomes "date" for DateOnly columns.
_ATTRIBUTE_TYPES = {
    "String": "string", "Memo": "memo", "Integer": "integer", "BigInt": "bigint", "Decimal": "decimal",
    "Money": "money", "Double": "double", "Boolean": "boolean", "DateTime": "datetime",
    "Uniqueidentifier": "guid", "Picklist": "choice", "State": "choice", "Status": "choice",
    "Lookup": "lookup", "Customer": "lookup", "Owner": "lookup",
}
_EDM_TYPES = {
    "Edm.String": "string", "Edm.Int32": "integer", "Edm.Int64": "bigint", "Edm.Decimal": "decimal",
    "Edm.Double": "double", "Edm.Boolean": "boolean", "Edm.DateTimeOffset": "datetime", "Edm.Date": "date",
    "Edm.Guid": "guid",
}
_OPTION_CASTS = ("PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata",
                 "MultiSelectPicklistAttributeMetadata")


@dataclass(frozen=True, slots=True)
class _Prepared:
    index: int
    op: WriteOp
    part: BatchPart
    idempotent: bool


class D365Connector:
    """Dataverse through one ``HttpClient`` whose base URL is ``settings.api_base``."""

    def __init__(self, settings: D365Settings, http: HttpClient, catalog: Catalog, *,
                 batch_size: int | None = None, sleep: Any = asyncio.sleep, bulk_min: int = BULK_MIN_WRITES,
                 bulk_size: int = BULK_SIZE) -> None:
        self.settings = settings
        self.http = http
        self.catalog = catalog
        self.batch_size = max(1, min(MAX_BATCH, batch_size or settings.limits.batch_size))
        self.bulk_min = bulk_min  # creates/upserts of a table in one write call before the bulk messages are used
        self.bulk_size = max(1, bulk_size)
        self.messages = MessageAvailability(self._get_json)  # asked once per table and message (a run)
        self._sleep = sleep

    # -- addressing --------------------------------------------------------------------------------

    def table(self, name: str) -> TableSchema | None:
        return self.catalog.table("d365", name)

    def entity_set(self, table: str) -> str:
        schema = self.table(table)
        return schema.entity_set if schema is not None and schema.entity_set else f"{table}s"

    def _absolute(self, relative: str) -> str:
        return self.settings.api_base + relative

    async def _get_json(self, url: str, *, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        resp = await self.http.request("GET", url, headers={**ODATA_HEADERS, **(headers or {})})
        return resp.json()

    # -- reads -------------------------------------------------------------------------------------

    async def read(self, table: str, select: Sequence[str], filter: str | None = None,
                   page_size: int = MAX_PAGE_SIZE, *, orderby: str | None = None) -> AsyncIterator[list[dict[str, Any]]]:
        """Every row of ``table`` (``$select``/``$filter`` pushed down), one list per page."""
        params: dict[str, str] = {}
        if select:
            params["$select"] = ",".join(select)
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        url: str | None = f"{self.entity_set(table)}?{urlencode(params, safe='$,')}" if params else self.entity_set(table)
        prefer = {"Prefer": f"odata.maxpagesize={max(1, min(MAX_PAGE_SIZE, page_size))}"}
        while url is not None:
            body = await self._get_json(url, headers=prefer)
            yield list(body.get("value", []))
            url = body.get("@odata.nextLink")  # absolute, with $skiptoken: used verbatim

    async def read_modified_since(self, table: str, select: Sequence[str], cursor: datetime | str | None,
                                  page_size: int = MAX_PAGE_SIZE) -> AsyncIterator[list[dict[str, Any]]]:
        """Rows changed at or after ``cursor`` (tables without change tracking), oldest first."""
        cols = list(select)
        if "modifiedon" not in cols:
            cols.append("modifiedon")
        filt = None if cursor is None else f"modifiedon ge {literal(cursor) if isinstance(cursor, datetime) else cursor}"
        async for page in self.read(table, cols, filt, page_size, orderby="modifiedon asc"):
            yield page

    async def read_changes(self, table: str, select: Sequence[str], delta_link: str | None = None,
                           page_size: int = MAX_PAGE_SIZE) -> AsyncIterator[ChangePage]:
        """Changes since ``delta_link`` (or every row, when None); the last page carries the new delta link.

        ``$filter``/``$orderby`` cannot be combined with change tracking: filter the rows locally.
        """
        if delta_link is None:
            params = {"$select": ",".join(select)} if select else {}
            url: str | None = f"{self.entity_set(table)}?{urlencode(params, safe='$,')}" if params else self.entity_set(table)
        else:
            url = delta_link
        headers = {"Prefer": f"odata.track-changes,odata.maxpagesize={max(1, min(MAX_PAGE_SIZE, page_size))}"}
        while url is not None:
            try:
                body = await self._get_json(url, headers=headers)
            except TerminalError as exc:
                if EXPIRED_MARKER.lower() in str(exc).lower():
                    log.warning("change tracking token expired; doing a full read",
                                extra={"event": "d365.delta_expired", "table": table})
                    raise ChangeTrackingExpired(table, str(exc)) from exc
                raise
            rows, deleted = [], []
            for row in body.get("value", []):
                if row.get("reason") == "deleted" or str(row.get("@odata.context", "")).endswith("$deletedEntity"):
                    deleted.append(str(row.get("id")))
                else:
                    rows.append(row)
            url = body.get("@odata.nextLink")
            yield ChangePage(tuple(rows), tuple(deleted), None if url else body.get("@odata.deltaLink"))

    # -- writes ------------------------------------------------------------------------------------

    def _prepare(self, index: int, op: WriteOp) -> _Prepared:
        entity_set = self.entity_set(op.table)
        payload = dict(op.payload)
        if op.op == "delete":
            if op.target_id is None and op.alternate_key is None:
                raise RequestError("a delete needs target_id or alternate_key")
            url = self._absolute(entity_set + key_segment(op.target_id, op.alternate_key))
            return _Prepared(index, op, BatchPart("DELETE", url), True)
        if op.op == "create":
            headers = {}
            if op.alternate_key is not None:
                payload.setdefault(op.alternate_key[0], op.alternate_key[1])
            if op.target_id is not None:
                schema = self.table(op.table)
                payload.setdefault(schema.primary_key if schema else f"{op.table}id", op.target_id)
            # A create is safe to repeat only when a unique key turns the repeat into a duplicate error.
            safe = op.alternate_key is not None or op.target_id is not None
            return _Prepared(index, op, BatchPart("POST", self._absolute(entity_set), payload, headers), safe)
        if op.target_id is None and op.alternate_key is None:
            raise RequestError(f"an {op.op} needs target_id or alternate_key")
        url = self._absolute(entity_set + key_segment(op.target_id, op.alternate_key))
        headers = {"If-Match": "*"} if op.op == "update" else {}  # update must not create; upsert may
        return _Prepared(index, op, BatchPart("PATCH", url, payload, headers), True)

    async def write(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        """One outcome per op, same order. Batches run concurrently, bounded by the HTTP limiter."""
        outcomes: list[WriteOutcome | None] = [None] * len(ops)
        prepared: list[_Prepared] = []
        for i, op in enumerate(ops):
            try:
                prepared.append(self._prepare(i, op))
            except RequestError as exc:
                outcomes[i] = WriteOutcome(ref=op.ref, ok=False, message=str(exc))
        bulk, prepared = await self._route(prepared)
        chunks = [prepared[i:i + self.batch_size] for i in range(0, len(prepared), self.batch_size)]
        results = await asyncio.gather(*(self._write_chunk(chunk) for chunk in chunks),
                                       *(self._write_bulk(message, rows[i:i + self.bulk_size])
                                         for message, rows in bulk for i in range(0, len(rows), self.bulk_size)))
        for chunk_result in results:
            for index, outcome in chunk_result:
                outcomes[index] = outcome
        missing = [i for i, o in enumerate(outcomes) if o is None]
        assert not missing, f"no outcome for ops {missing}"
        return [o for o in outcomes if o is not None]

    # -- bulk messages (d365_bulk) -------------------------------------------------------------------

    async def _route(self, prepared: list[_Prepared]) -> tuple[list[tuple[BulkMessage, list[BulkRow]]], list[_Prepared]]:
        """Split off the creates and upserts that go through a bulk message: many of one table, each safe to
        repeat (addressed by alternate key or id), the table supporting the message. The rest: ``$batch``."""
        groups: dict[tuple[str, BulkMessage], list[_Prepared]] = {}
        for item in prepared:
            if item.idempotent and item.op.op in ("create", "upsert"):
                message: BulkMessage = "CreateMultiple" if item.op.op == "create" else "UpsertMultiple"
                groups.setdefault((item.op.table, message), []).append(item)
        bulk: list[tuple[BulkMessage, list[BulkRow]]] = []
        routed: set[int] = set()
        for (table, message), items in groups.items():
            if len(items) >= self.bulk_min and await self.messages.available(table, message):
                bulk.append((message, [BulkRow(i.index, i.op, self._target(i)) for i in items]))
                routed.update(i.index for i in items)
        return bulk, [i for i in prepared if i.index not in routed]

    def _target(self, item: _Prepared) -> dict[str, Any]:
        """One ``Targets`` item: the columns, ``@odata.type``, and for an upsert the record's ``@odata.id``."""
        target = {**(item.part.body or {}), "@odata.type": f"Microsoft.Dynamics.CRM.{item.op.table}"}
        if item.op.op == "upsert":
            op = item.op
            address = f"({op.target_id})" if op.target_id is not None else \
                f"({op.alternate_key[0]}={odata_quote(str(op.alternate_key[1]))})"  # type: ignore[index]
            target["@odata.id"] = self.entity_set(op.table) + address
        return target

    async def _write_bulk(self, message: BulkMessage, rows: list[BulkRow]) -> list[tuple[int, WriteOutcome]]:
        return await bisect_write(rows, lambda part: self._send_bulk(message, part), self._adopt, self._alone)

    async def _send_bulk(self, message: BulkMessage, rows: Sequence[BulkRow]) -> list[str | None] | ConnectorError:
        """One bulk request: the new ids in order (None each for ``UpsertMultiple``, which answers none)."""
        url = f"{self.entity_set(rows[0].op.table)}/Microsoft.Dynamics.CRM.{message}"
        try:  # every row is safe to repeat (_route), so a lost reply may be resent by the HTTP layer
            resp = await self.http.request("POST", url, json={"Targets": [r.target for r in rows]},
                                           headers=ODATA_HEADERS, idempotent=True)
        except ConnectorError as exc:
            return exc
        if message == "UpsertMultiple":
            return [None] * len(rows)
        try:
            ids = resp.json().get("Ids")
        except ValueError:
            ids = None
        if not isinstance(ids, list) or len(ids) != len(rows):
            return TransientError(f"d365: {message} reply has no id for each of its {len(rows)} records",
                                  service="d365", status=resp.status_code)
        return [str(i) for i in ids]

    async def _adopt(self, rows: Sequence[BulkRow]) -> dict[int, str]:
        """Of ``rows``, those the table already holds (by alternate key or id): their ids by index. A lookup
        that fails answers nothing, so the request is split instead."""
        table = rows[0].op.table
        schema = self.table(table)
        pk = schema.primary_key if schema else f"{table}id"
        by_column: dict[str, dict[str, int]] = {}
        for r in rows:
            column, value = r.op.alternate_key if r.op.alternate_key is not None else (pk, r.op.target_id)
            by_column.setdefault(column, {})[str(value).lower() if column == pk else str(value)] = r.index
        found: dict[int, str] = {}
        try:
            for column, wanted in by_column.items():
                values = list(wanted)
                for start in range(0, len(values), ADOPT_CHUNK):
                    chunk = values[start:start + ADOPT_CHUNK]
                    query = urlencode({"$select": f"{pk},{column}" if column != pk else pk,
                                       "$filter": " or ".join(f"{column} eq {self._value(table, column, v)}" for v in chunk)},
                                      safe="$,")
                    for row in (await self._get_json(f"{self.entity_set(table)}?{query}")).get("value", []):
                        value = str(row.get(column, ""))
                        index = wanted.get(value.lower() if column == pk else value)
                        if index is not None and row.get(pk):
                            found[index] = str(row[pk])
        except ConnectorError:
            return {}
        return found

    async def _alone(self, row: BulkRow, error: ConnectorError) -> WriteOutcome:
        """The outcome of a row whose one-row request failed: adopted when it exists already, else the error."""
        op = row.op
        if op.op == "create" and op.alternate_key is not None and (error.code in DUPLICATE_CODES or error.status == 412):
            existing = await self._find_by_key(op.table, op.alternate_key)
            if existing is not None:
                return WriteOutcome(op.ref, True, existing, error.status, error.code, "already existed")
        return WriteOutcome(op.ref, False, op.target_id, error.status, error.code, str(error), False)

    def _value(self, table: str, column: str, value: str) -> str:
        schema = self.table(table)
        field = schema.fields.get(column) if schema else None
        # A text column compares with a quoted string even when the text looks like a GUID or a number.
        return odata_quote(value) if field is not None and field.value_type is V.TEXT else literal(value)

    async def _write_chunk(self, chunk: list[_Prepared]) -> list[tuple[int, WriteOutcome]]:
        done: list[tuple[int, WriteOutcome]] = []
        pending = chunk
        attempt = 0
        while pending:
            attempt += 1
            replies = await self._send_batch(pending)
            retry: list[_Prepared] = []
            wait = 0.0
            for item, reply in zip(pending, replies, strict=True):
                if isinstance(reply, ConnectorError):
                    retriable = False  # the HTTP layer already retried the whole batch
                    outcome = outcome_from_error(item.op.ref, reply, target_id=item.op.target_id)
                else:
                    outcome, retriable, ra = await self._outcome(item, reply)
                    if retriable and attempt <= self.http.limits.max_retries and (item.idempotent or reply.status == 429):
                        retry.append(item)
                        wait = max(wait, ra if ra is not None else backoff_delay(attempt, random.random))
                        continue
                done.append((item.index, outcome))
            if retry:
                log.warning("d365 $batch: %d parts failed transiently; resending in %.2fs", len(retry), wait,
                            extra={"event": "d365.batch_retry", "parts": len(retry), "attempt": attempt, "wait": wait})
                await self._sleep(wait)
            pending = retry
        return done

    async def _send_batch(self, items: list[_Prepared]) -> list[Any]:
        content_type, body = build_batch([i.part for i in items])
        headers = {"OData-MaxVersion": "4.0", "OData-Version": "4.0", "Accept": "application/json",
                   "Content-Type": content_type, "Prefer": "odata.continue-on-error"}
        try:
            resp = await self.http.request("POST", "$batch", content=body, headers=headers,
                                           idempotent=all(i.idempotent for i in items))
            replies: list[Any] = list(parse_batch(resp.headers.get("content-type", ""), resp.content))
        except ConnectorError as exc:
            return [exc] * len(items)
        if len(replies) < len(items):  # a reply cut short: those parts are unknown, and safe to resend only if idempotent
            lost = TransientError("d365: $batch reply has no part for this record", service="d365")
            replies += [lost] * (len(items) - len(replies))
        return replies[:len(items)]

    async def _outcome(self, item: _Prepared, reply: Any) -> tuple[WriteOutcome, bool, float | None]:
        op = item.op
        if reply.status < 300:
            target = entity_id_from(reply.headers.get("odata-entityid")) or op.target_id
            if target is None and reply.body:
                schema = self.table(op.table)
                try:
                    target = json.loads(reply.body).get(schema.primary_key if schema else "")
                except ValueError:
                    target = None
            return WriteOutcome(op.ref, True, target, reply.status), False, None
        if op.op == "delete" and reply.status == 404:
            return WriteOutcome(op.ref, True, op.target_id, 404, message="already deleted"), False, None
        error = error_from_status("d365", item.part.method, item.part.url.split("?")[0], reply.status, reply.body,
                                  reply.headers)
        if op.op == "create" and op.alternate_key is not None and (error.code in DUPLICATE_CODES or reply.status == 412):
            existing = await self._find_by_key(op.table, op.alternate_key)
            if existing is not None:
                return WriteOutcome(op.ref, True, existing, reply.status, error.code, "already existed"), False, None
        transient = is_transient_status(reply.status)
        retry_after = parse_retry_after(reply.headers.get("retry-after"))
        outcome = WriteOutcome(op.ref, False, op.target_id, reply.status, error.code, str(error), transient)
        return outcome, transient, retry_after

    async def total_count(self, table: str) -> int | None:
        """About how many rows ``table`` has (``RetrieveTotalRecordCount``: a snapshot up to a day old), for the
        progress display; None when the org will not say. Never worth failing a run over."""
        try:
            body = await self._get_json(f"RetrieveTotalRecordCount(EntityNames=['{table}'])")
        except ConnectorError:
            return None
        counts = body.get("EntityRecordCountCollection") or {}
        found = dict(zip(counts.get("Keys") or [], counts.get("Values") or [], strict=False))
        value = found.get(table)
        return int(value) if isinstance(value, int) and value >= 0 else None

    async def find(self, table: str, key_field: str, key: str) -> str | None:
        """The id of the row whose ``key_field`` is ``key``; None when there is none. A lookup that fails
        raises ``ConnectorError``: "could not ask" is never taken for "not there"."""
        schema = self.table(table)
        pk = schema.primary_key if schema else f"{table}id"
        field = schema.fields.get(key_field) if schema else None
        # A text column compares with a quoted string even when the text looks like a GUID or a number.
        value = "'" + key.replace("'", "''") + "'" if field is not None and field.value_type is V.TEXT else literal(key)
        query = urlencode({"$select": pk, "$filter": f"{key_field} eq {value}", "$top": "1"}, safe="$,")
        rows = (await self._get_json(f"{self.entity_set(table)}?{query}")).get("value", [])
        return str(rows[0][pk]) if rows and rows[0].get(pk) else None

    async def _find_by_key(self, table: str, key: tuple[str, str]) -> str | None:
        schema = self.table(table)
        pk = schema.primary_key if schema else f"{table}id"
        # urlencode, never string concatenation: a key holding `&`, `#`, `%` or `+` must stay one value.
        url = f"{self.entity_set(table)}?{urlencode({'$select': pk, '$filter': f'{key[0]} eq {literal(key[1])}'}, safe='$,')}"
        try:
            body = await self._get_json(url)
        except ConnectorError:
            return None
        rows = body.get("value", [])
        return str(rows[0][pk]) if rows else None

    # -- schema ------------------------------------------------------------------------------------

    async def fetch_schema(self, tables: Sequence[str], *, skip_missing: bool = False) -> list[TableSchema]:
        """Snapshots of ``tables`` from ``$metadata`` (types, lengths, keys, entity sets) and EntityDefinitions
        (display names, required level, ranges, alternate keys, change tracking, option-set labels).

        A table the org does not have raises ``TerminalError`` (404), or is left out with ``skip_missing``."""
        resp = await self.http.request("GET", "$metadata", headers={"Accept": "application/xml"})
        csdl = _parse_csdl(resp.content)
        # $metadata lists every table of the org: one it does not have has no EntityDefinitions either.
        names = [name for name in tables if not (skip_missing and name not in csdl)]
        # Tables (and their option-set reads) go concurrently; the HttpClient limiter bounds what is in flight.
        return list(await asyncio.gather(*(self._fetch_table(name, csdl.get(name, {})) for name in names)))

    async def _fetch_table(self, name: str, csdl_props: Mapping[str, Any]) -> TableSchema:
        base = f"EntityDefinitions(LogicalName='{name}')"
        entity = await self._get_json(f"{base}?$expand=Attributes,Keys")
        if "Attributes" not in entity:  # a service that does not expand: the collection is addressable too
            entity["Attributes"] = (await self._get_json(f"{base}/Attributes")).get("value", [])
        options: dict[str, list[tuple[int, str]]] = {}
        for body in await asyncio.gather(*(self._option_sets(base, cast) for cast in _OPTION_CASTS)):
            for attr in body.get("value", []):
                opts = (attr.get("OptionSet") or {}).get("Options") or []
                options[attr["LogicalName"]] = [(int(o["Value"]), _label(o.get("Label")) or str(o["Value"])) for o in opts]
        fields: dict[str, FieldSchema] = {}
        primary_key = entity.get("PrimaryIdAttribute") or f"{name}id"
        for attr in _in_column_order(entity.get("Attributes", [])):
            if attr.get("AttributeOf") or attr.get("IsValidForRead") is False:
                continue  # helper columns (…name, …yominame) that Dataverse derives from another one
            f = _field_from_attribute(attr, csdl_props, options)
            if f is not None:
                fields[f.name] = f
        keys = {k.get("LogicalName") or k.get("SchemaName"): tuple(k.get("KeyAttributes") or [])
                for k in entity.get("Keys") or []}
        return TableSchema(
            system="d365", name=name, primary_key=primary_key, fields=MappingProxyType(fields),
            display_name=_label(entity.get("DisplayName")), primary_name=entity.get("PrimaryNameAttribute"),
            entity_set=entity.get("EntitySetName") or csdl_props.get("@entity_set"),
            is_activity=bool(entity.get("IsActivity")), change_tracking=bool(entity.get("ChangeTrackingEnabled")),
            alternate_keys=MappingProxyType({k: v for k, v in keys.items() if k and v}),
        )

    async def _option_sets(self, base: str, cast: str) -> Mapping[str, Any]:
        try:
            return await self._get_json(f"{base}/Attributes/Microsoft.Dynamics.CRM.{cast}"
                                        "?$select=LogicalName&$expand=OptionSet")
        except TerminalError:
            return {}  # a metadata type the service (or table) does not have


def _label(label: Any) -> str | None:
    if not isinstance(label, Mapping):
        return None
    user = label.get("UserLocalizedLabel")
    if isinstance(user, Mapping) and user.get("Label"):
        return str(user["Label"])
    for loc in label.get("LocalizedLabels") or []:
        if loc.get("Label"):
            return str(loc["Label"])
    return None


def _in_column_order(attributes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Attributes by ``ColumnNumber`` (the order the table's columns were created in), so that a pull does
    not depend on the order the service happens to list them; the reply order breaks ties."""
    return sorted(attributes, key=lambda a: a["ColumnNumber"] if isinstance(a.get("ColumnNumber"), int) else 1 << 31)


def _number(value: Any) -> int | float | None:
    if value is None:
        return None
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


def _field_from_attribute(attr: Mapping[str, Any], csdl_props: Mapping[str, Any],
                          options: Mapping[str, list[tuple[int, str]]]) -> FieldSchema | None:
    name = attr["LogicalName"]
    odata_type = str(attr.get("@odata.type", ""))
    attr_type = attr.get("AttributeType")
    if "MultiSelectPicklist" in odata_type:
        kind = "multichoice"
    elif attr_type in _ATTRIBUTE_TYPES:
        kind = _ATTRIBUTE_TYPES[attr_type]
    else:
        wire = csdl_props.get(name) or csdl_props.get(f"_{name}_value")
        kind = _EDM_TYPES.get(wire[0]) if wire else None
        if kind is None:
            return None
    wire = csdl_props.get(name)
    if kind == "datetime" and ((wire and wire[0] == "Edm.Date") or attr.get("Format") == "DateOnly"
                               or (attr.get("DateTimeBehavior") or {}).get("Value") == "DateOnly"):
        kind = "date"
    required = (attr.get("RequiredLevel") or {}).get("Value") in ("ApplicationRequired", "SystemRequired")
    creatable, updatable = attr.get("IsValidForCreate"), attr.get("IsValidForUpdate")
    # The primary id may be given on create (IsValidForCreate) but is the record's identity, never a value a
    # mapping writes: snapshots mark it read-only.
    read_only = (bool(attr.get("IsReadOnly")) or bool(attr.get("IsPrimaryId"))
                 or (creatable is False and updatable is False))
    max_length = attr.get("MaxLength") if kind in ("string", "memo") else None
    if max_length is None and kind in ("string", "memo") and wire and wire[1]:
        max_length = wire[1]
    return FieldSchema(
        name=name, type=kind, value_type=value_type_for(kind), display_name=_label(attr.get("DisplayName")),
        max_length=max_length, required=required and not read_only, read_only=read_only,
        min=_number(attr.get("MinValue")), max=_number(attr.get("MaxValue")),
        precision=attr.get("Precision") if kind in ("decimal", "money", "double") else None,
        options=tuple(options.get(name, ())),
        targets=tuple(attr.get("Targets") or ()) if kind == "lookup" else (),
    )


def _parse_csdl(xml: bytes) -> dict[str, dict[str, Any]]:
    """EntityType name -> {property name: (Edm type, MaxLength)} plus ``@entity_set`` and ``@key``."""
    root = ET.fromstring(xml)
    types: dict[str, dict[str, Any]] = {}
    for schema in root.iter(f"{_EDM}Schema"):
        for et in schema.findall(f"{_EDM}EntityType"):
            props: dict[str, Any] = {}
            for prop in et.findall(f"{_EDM}Property"):
                length = prop.get("MaxLength")
                props[prop.get("Name", "")] = (prop.get("Type"), int(length) if length and length.isdigit() else None)
            key = et.find(f"{_EDM}Key/{_EDM}PropertyRef")
            if key is not None:
                props["@key"] = key.get("Name")
            types[et.get("Name", "")] = props
        for container in schema.findall(f"{_EDM}EntityContainer"):
            for es in container.findall(f"{_EDM}EntitySet"):
                type_name = (es.get("EntityType") or "").rsplit(".", 1)[-1]
                if type_name in types:
                    types[type_name]["@entity_set"] = es.get("Name")
    return types
