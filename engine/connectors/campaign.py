"""The Adobe Campaign Standard REST connector: resource metadata, paged reads, lookups by filter, writes.

Writes are one REST call per record (Campaign has no batch endpoint), sent concurrently; the shared
``HttpClient`` limiter caps how many are in flight. Links to other resources go on the wire as
``{"PKey": "..."}`` and arrive in the payload already built.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from mapsync.dsl.schema import Catalog, FieldSchema, TableSchema
from mapsync.dsl.types import value_type_for
from mapsync.engine.config import CampaignSettings
from mapsync.engine.connectors.base import WriteOp, WriteOutcome, outcome_from_error
from mapsync.engine.errors import ConnectorError, TerminalError, TransientError
from mapsync.engine.http import HttpClient

__all__ = ["CAMPAIGN_HEADERS", "CampaignConnector", "campaign_headers"]

CAMPAIGN_HEADERS = {"Cache-Control": "no-cache", "Content-Type": "application/json;charset=utf-8",
                    "Accept": "application/json"}
DEFAULT_LINE_COUNT = 25
MAX_LINE_COUNT = 1000  # (assumed) the largest _lineCount worth asking for in one page


def campaign_headers(settings: CampaignSettings) -> dict[str, str]:
    """Headers every Campaign call carries; the API key is the (non-secret) client id."""
    return {**CAMPAIGN_HEADERS, "X-Api-Key": settings.client_id}


class CampaignConnector:
    """Campaign Standard through one ``HttpClient`` whose base URL is ``settings.api_base``."""

    def __init__(self, settings: CampaignSettings, http: HttpClient, catalog: Catalog) -> None:
        self.settings = settings
        self.http = http
        self.catalog = catalog

    def resource(self, name: str) -> TableSchema | None:
        return self.catalog.table("campaign", name)

    def path(self, resource: str) -> str:
        """The ``profileAndServicesExt`` view where there is one: it carries the custom (``cus*``) fields."""
        schema = self.resource(resource)
        if schema is None:
            return f"profileAndServicesExt/{resource}"
        return schema.ext_path or schema.path or f"profileAndServicesExt/{resource}"

    # -- reads -------------------------------------------------------------------------------------

    async def read(self, resource: str, page_size: int = MAX_LINE_COUNT) -> AsyncIterator[list[dict[str, Any]]]:
        params = {"_lineCount": str(max(1, min(MAX_LINE_COUNT, page_size))), "_forcePagination": "true"}
        url: str | None = f"{self.path(resource)}?{urlencode(params)}"
        while url is not None:
            body = (await self.http.request("GET", url)).json()
            yield list(body.get("content", []))
            url = (body.get("next") or {}).get("href")

    async def find(self, resource: str, key_field: str, value: str) -> list[dict[str, Any]]:
        """Records whose ``key_field`` equals ``value``, through the resource's ``by<Field>`` filter."""
        name, param = self._filter_for(resource, key_field)
        query = urlencode({param: value})
        rows: list[dict[str, Any]] = []
        url: str | None = f"{self.path(resource)}/{name}?{query}"
        while url is not None:
            body = (await self.http.request("GET", url)).json()
            rows.extend(r for r in body.get("content", []) if key_field not in r or r.get(key_field) == value)
            url = (body.get("next") or {}).get("href")
        return rows

    def _filter_for(self, resource: str, key_field: str) -> tuple[str, str]:
        schema = self.resource(resource)
        filters: Mapping[str, tuple[str, ...]] = schema.filters if schema is not None else {}
        if key_field == "email":
            return "byEmail", "email"
        for name, params in filters.items():
            if name in ("byEmail", "byText"):
                continue
            if key_field in params or name.lower() == f"by{key_field}".lower() or (
                    key_field.startswith("cus") and name.lower() == f"by{key_field[3:]}".lower()):
                base = params[0] if params else key_field
                return name, f"{base.removesuffix('_parameter')}_parameter"
        raise TerminalError(f"campaign: resource {resource!r} has no filter on {key_field!r} "
                            f"(known: {', '.join(filters) or 'none'})", service="campaign")

    # -- writes ------------------------------------------------------------------------------------

    async def write(self, ops: Sequence[WriteOp]) -> list[WriteOutcome]:
        # Bound the coroutines alive at once; the HttpClient limiter bounds what is on the wire.
        gate = asyncio.Semaphore(max(4, 2 * self.http.limits.concurrency))

        async def one(op: WriteOp) -> WriteOutcome:
            async with gate:
                return await self._write_one(op)

        return list(await asyncio.gather(*(one(op) for op in ops)))

    async def _write_one(self, op: WriteOp) -> WriteOutcome:
        path = self.path(op.table)
        payload = dict(op.payload)
        try:
            if op.op == "delete":
                if op.target_id is None:
                    return WriteOutcome(op.ref, False, message="a delete needs the record's PKey")
                resp = await self.http.request("DELETE", f"{path}/{quote(op.target_id, safe='@')}", accept=(404,))
                return WriteOutcome(op.ref, True, op.target_id, resp.status_code,
                                    message="already deleted" if resp.status_code == 404 else None)
            if op.target_id is not None and op.op in ("update", "upsert"):
                resp = await self.http.request("PATCH", f"{path}/{quote(op.target_id, safe='@')}", json=payload,
                                               idempotent=True)
                return WriteOutcome(op.ref, True, resp.json().get("PKey", op.target_id), resp.status_code)
            if op.op == "update":
                return WriteOutcome(op.ref, False, message="an update needs the record's PKey")
            return await self._create(op, path, payload)
        except ConnectorError as exc:
            return outcome_from_error(op.ref, exc, target_id=op.target_id)

    async def _create(self, op: WriteOp, path: str, payload: dict[str, Any]) -> WriteOutcome:
        if op.alternate_key is not None:
            payload.setdefault(op.alternate_key[0], op.alternate_key[1])
        try:
            resp = await self.http.request("POST", path, json=payload, idempotent=False)
        except TransientError as exc:
            # The create may have happened before the reply was lost: look for it by its key before failing.
            if op.alternate_key is not None:
                try:
                    found = await self.find(op.table, *op.alternate_key)
                except ConnectorError:
                    found = []
                if found:
                    return WriteOutcome(op.ref, True, found[0].get("PKey"), 200, message="created earlier")
            return outcome_from_error(op.ref, exc)
        return WriteOutcome(op.ref, True, resp.json().get("PKey"), resp.status_code)

    # -- schema ------------------------------------------------------------------------------------

    async def fetch_schema(self, resources: Sequence[str], *, skip_missing: bool = False) -> list[TableSchema]:
        """Snapshots of ``resources`` from their ``resourceType`` metadata in both namespaces.

        ``profileAndServicesExt`` shows every field (the ``cus*`` extension fields too), so its content wins;
        ``profileAndServices`` tells whether the resource also has a plain path. Filters come from the list
        the metadata's ``filters.href`` points at. The reply shape is the one
        ``emulators/campaign/resources.py`` documents (Adobe's "Metadata mechanism" page plus its assumptions).
        A resource neither namespace has raises ``TerminalError`` (404), or is left out with ``skip_missing``.
        """
        out = []
        for name in resources:
            views: dict[str, Mapping[str, Any]] = {}
            for namespace in _NAMESPACES:
                resp = await self.http.request("GET", f"{namespace}/resourceType/{quote(name)}", accept=(404,))
                if resp.status_code != 404:
                    views[namespace] = resp.json()
            if not views and skip_missing:
                continue
            if not views:
                raise TerminalError(f"campaign: no resource named {name!r} (neither profileAndServices nor "
                                    "profileAndServicesExt has it)", service="campaign", status=404)
            main = views.get("profileAndServicesExt") or views["profileAndServices"]
            plain = _data_path(views.get("profileAndServices"))
            ext = _data_path(views.get("profileAndServicesExt"))
            label = main.get("label")
            out.append(TableSchema(
                system="campaign", name=name, primary_key="PKey",
                fields=MappingProxyType(_fields(main.get("content") or {})),
                display_name=label if isinstance(label, str) and label and label != name else None,
                path=plain or ext, ext_path=ext if plain else None,
                filters=MappingProxyType(await self._filters(main)),
            ))
        return out

    async def _filters(self, metadata: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
        """filter name -> its parameters, from the filter list (``data``: ``.../byX?x_parameter=$value``)."""
        href = (metadata.get("filters") or {}).get("href")
        if not isinstance(href, str) or not href:
            return {}
        listing = (await self.http.request("GET", href)).json()
        out: dict[str, tuple[str, ...]] = {}
        for name, spec in (listing.items() if isinstance(listing, Mapping) else ()):
            data = spec.get("data") if isinstance(spec, Mapping) else None
            query = urlsplit(data).query if isinstance(data, str) else ""
            out[name] = tuple(key.removesuffix("_parameter") for key, _ in parse_qsl(query, keep_blank_values=True))
        return out


_NAMESPACES = ("profileAndServices", "profileAndServicesExt")
# resType (the technical type) -> snapshot type; "type" (the high-level one) decides links, enums, elements.
_RES_TYPES = {"string": "string", "memo": "memo", "long": "integer", "int32": "integer", "short": "integer",
              "byte": "integer", "int64": "bigint", "double": "double", "float": "double", "decimal": "decimal",
              "boolean": "boolean", "date": "date", "datetime": "datetime", "timestamp": "datetime",
              "uuid": "string"}


def _data_path(metadata: Mapping[str, Any] | None) -> str | None:
    """``"/profileAndServices/profile/"`` -> ``profileAndServices/profile``."""
    data = metadata.get("data") if metadata is not None else None
    return data.strip("/") or None if isinstance(data, str) else None


def _kind(spec: Mapping[str, Any]) -> str:
    high = str(spec.get("type", "")).lower()
    if high == "link":
        return "lookup"
    if high in ("enumeration", "enum"):
        return "enum"
    if high in ("item", "object") or (isinstance(spec.get("content"), Mapping) and spec["content"]):
        return "object"
    return _RES_TYPES.get(str(spec.get("resType", "")).lower()) or _RES_TYPES.get(high) or "string"


def _enum_values(raw: Any) -> tuple[str, ...]:
    """The API values of an enumeration: a list of strings, of ``{"value"|"name": ...}``, or a dict keyed by value."""
    if isinstance(raw, Mapping):
        return tuple(str(k) for k in raw)
    out = []
    for item in raw or ():
        value = item.get("value", item.get("name")) if isinstance(item, Mapping) else item
        if value is not None:
            out.append(str(value))
    return tuple(out)


def _fields(content: Mapping[str, Any]) -> dict[str, FieldSchema]:
    out: dict[str, FieldSchema] = {}
    for key, spec in content.items():
        name = str(spec.get("apiName") or key)
        kind = _kind(spec)
        nested = _fields(spec.get("content") or {}) if kind == "object" else {}
        label = spec.get("label")
        target = spec.get("resTarget", spec.get("target"))
        length = spec.get("length")
        out[name] = FieldSchema(
            name=name, type=kind, value_type=value_type_for(kind),
            # Campaign labels every field; a label that only repeats the name says nothing.
            display_name=label if isinstance(label, str) and label and label != name else None,
            max_length=length if kind in ("string", "memo") and isinstance(length, int) and length > 0 else None,
            required=bool(spec.get("mandatory")), read_only=bool(spec.get("readOnly")),
            values=_enum_values(spec.get("values")) if kind == "enum" else (),
            targets=((target,) if isinstance(target, str) else tuple(target or ())) if kind == "lookup" else (),
            fields=MappingProxyType(nested),
        )
    return out
