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
from urllib.parse import quote, urlencode

from dsl.schema import Catalog, FieldSchema, TableSchema
from dsl.types import value_type_for
from engine.config import CampaignSettings
from engine.connectors.base import WriteOp, WriteOutcome, outcome_from_error
from engine.errors import ConnectorError, TerminalError, TransientError
from engine.http import HttpClient

__all__ = ["CAMPAIGN_HEADERS", "CampaignConnector", "campaign_headers"]

CAMPAIGN_HEADERS = {"Cache-Control": "no-cache", "Content-Type": "application/json;charset=utf-8",
                    "Accept": "application/json"}
DEFAULT_LINE_COUNT = 25
MAX_LINE_COUNT = 1000  # (assumed) the largest _lineCount worth asking for in one page
_TYPES = {"string": "string", "memo": "memo", "int64": "bigint", "int32": "integer", "long": "integer",
          "integer": "integer", "short": "integer", "byte": "integer", "double": "double", "float": "double",
          "decimal": "decimal", "boolean": "boolean", "date": "date", "datetime": "datetime", "timestamp": "datetime",
          "enum": "enum", "link": "lookup", "lookup": "lookup", "object": "object", "uuid": "string"}


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

    async def fetch_schema(self, resources: Sequence[str]) -> list[TableSchema]:
        """Snapshots of ``resources`` from ``resourceType`` metadata (fields, types, lengths, enums, links)."""
        out = []
        for name in resources:
            known = self.resource(name)
            namespace = "profileAndServicesExt" if known is None or known.ext_path or (
                known.path or "").startswith("profileAndServicesExt") else "profileAndServices"
            body = (await self.http.request("GET", f"{namespace}/resourceType/{name}")).json()
            fields = _fields(body.get("content") or {})
            path = known.path if known is not None else None
            ext_path = known.ext_path if known is not None else None
            filters = body.get("filters")
            parsed_filters = (
                {k: tuple(v.get("parameters", v) if isinstance(v, Mapping) else v) for k, v in filters.items()}
                if isinstance(filters, Mapping) else (dict(known.filters) if known is not None else {})
            )
            label = body.get("label")
            out.append(TableSchema(
                system="campaign", name=name, primary_key="PKey", fields=MappingProxyType(fields),
                display_name=label if label and label != name else (known.display_name if known else None),
                path=body.get("path", path), ext_path=body.get("extPath", ext_path),
                filters=MappingProxyType(parsed_filters),
            ))
        return out


def _fields(content: Mapping[str, Any]) -> dict[str, FieldSchema]:
    out: dict[str, FieldSchema] = {}
    for name, spec in content.items():
        kind = _TYPES.get(str(spec.get("type", "string")).lower(), "string")
        nested = _fields(spec.get("content") or {}) if kind == "object" else {}
        label = spec.get("label")
        target = spec.get("target")
        out[name] = FieldSchema(
            name=name, type=kind, value_type=value_type_for(kind),
            display_name=label if label and label != name else None,
            max_length=spec.get("length") if kind in ("string", "memo") else None,
            required=bool(spec.get("mandatory")), read_only=bool(spec.get("readOnly")),
            values=tuple(spec.get("values") or ()) if kind == "enum" else (),
            targets=((target,) if isinstance(target, str) else tuple(target or ())) if kind == "lookup" else (),
            fields=MappingProxyType(nested) if nested else MappingProxyType({}),
        )
    return out
