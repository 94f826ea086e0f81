"""The Campaign Standard REST API under ``/{ORGANIZATION}/campaign/`` (see docs/emulators.md).

Paths served (``<res>`` = ``profileAndServices/profile``, ``profileAndServicesExt/profile``,
``profileAndServicesExt/cus<Name>``)::

    GET    <res>?_lineCount=N[&_lineStart=T][&_forcePagination=true]   list, 25 by default
    GET    <res>/_count                                                {"count": N}
    GET    <res>/<filter>?<param>=x    (byEmail, byText, by<Field>)    filtered list; /_count as well
    POST   <res>                                                       201 + the created resource
    GET    <res>/<PKey>                                                one resource
    PATCH  <res>/<PKey>                                                {"PKey", "href"}
    DELETE <res>/<PKey>                                                200, empty body
    GET    profileAndServices[Ext]/resourceType/<name>                 field metadata from the snapshot
    GET    profileAndServices[Ext]/resourceType/<PKey>/filters         the resource's filters
    GET    workflow/execution/<workflowID>                             a workflow and its signal activities
    POST   workflow/execution/<PKey>/activities/activity/<PKey>/trigger   fire an External signal
    POST   workflow/execution/<workflowID>/commands                    start, pause, resume, stop

Every request first passes the Adobe I/O gateway check (bearer token + X-Api-Key), then a configurable
rate limit (429 + Retry-After); faults are injected by the server's middleware. ``next.href`` is absent
on tables above the big-table threshold unless ``_forcePagination=true``, as in Campaign.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mapsync.emulators.campaign.errors import (
    BIG_TABLE_THRESHOLD,
    LINE_COUNT_DEFAULT,
    CampaignApiError,
    error_response,
)
from mapsync.emulators.campaign.resources import FieldSpec, ResourceSpec
from mapsync.emulators.campaign.store import CampaignStore, Condition
from mapsync.emulators.campaign.workflows import Workflows
from mapsync.emulators.ims import gateway_client
from mapsync.emulators.limits import ServiceProtection
from mapsync.emulators.tokens import TokenIssuer

__all__ = ["Limiter", "campaign_routes", "render"]

NAMESPACES = ("profileAndServices", "profileAndServicesExt")
MAX_LINE_COUNT = 10_000  # assumed upper bound on _lineCount
MAX_SIGNAL_PAYLOAD = 64 * 1024  # documented: a signal's payload should not exceed 64 KB (the refusal is assumed)

# The current rate limit (swappable at run time by the control endpoints), or None for no limit.
Limiter = Callable[[], ServiceProtection | None]


def _default(spec: FieldSpec) -> Any:
    """What Campaign shows for a field never written: empty strings and false, not null (assumed)."""
    if spec.type in ("string", "memo"):
        return ""
    if spec.type == "boolean":
        return False
    if spec.type == "enum":
        return "unknown" if "unknown" in spec.values else ""
    if spec.type == "object":
        return {f.name: _default(f) for f in spec.fields}
    return None


def render(store: CampaignStore, spec: ResourceSpec, row_id: int, data: Mapping[str, Any], *, ext: bool, base: str) -> dict[str, Any]:
    """One stored row as the API shows it: every visible field, PKey, href, links as ``{PKey, href}``."""
    pkey = store.pkey(spec.name, row_id)
    path = spec.ext_path if ext and spec.ext_path else spec.path
    out: dict[str, Any] = {"PKey": pkey}
    for name, fspec in spec.visible(ext).items():
        if name == "PKey":
            continue
        value = data.get(name)
        if fspec.type == "lookup":
            target = store.resources.get(fspec.targets[0]) if fspec.targets else None
            if isinstance(value, Mapping) and target is not None:
                tpath = target.ext_path or target.path
                value = {"PKey": value["PKey"], "href": f"{base}/{tpath}/{value['PKey']}"}
            out[name] = value
        elif fspec.type == "object":
            default = _default(fspec)
            out[name] = {**default, **(value or {})}
        else:
            out[name] = _default(fspec) if value is None else value
    out["href"] = f"{base}/{path}/{pkey}"
    return out


def _line_start(after: int) -> str:
    return "@" + base64.urlsafe_b64encode(f"ls{after:x}".encode()).decode().rstrip("=")


def _parse_line_start(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token[1:] + "=" * (-len(token[1:]) % 4)).decode()
        if not token.startswith("@") or not raw.startswith("ls"):
            raise ValueError(token)
        return int(raw[2:], 16)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CampaignApiError("bad_parameter", "_lineStart") from None


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise CampaignApiError("bad_parameter", f"{name} must be a positive integer")
    return min(int(raw), maximum)


def campaign_routes(
    store: CampaignStore,
    issuer: TokenIssuer,
    *,
    organization: str,
    limiter: Limiter | None = None,
    big_table_threshold: int = BIG_TABLE_THRESHOLD,
    workflows: Workflows | None = None,
) -> list[Route]:
    paths: dict[int, dict[str, tuple[ResourceSpec, bool]]] = {}

    def by_path() -> dict[str, tuple[ResourceSpec, bool]]:
        """The resources by REST path, as the store serves them now (a reload may add or change some)."""
        found = paths.get(store.generation)
        if found is None:
            found = {}
            for spec in store.resources.values():
                if spec.path:
                    found[spec.path] = (spec, spec.path.startswith("profileAndServicesExt/"))
                if spec.ext_path:
                    found[spec.ext_path] = (spec, True)
            paths.clear()
            paths[store.generation] = found
        return found

    def link_exists(target: str, pkey: str) -> bool:
        return target in store.resources and store.exists(target, pkey)

    async def endpoint(request: Request) -> Response:
        try:
            client_id = gateway_client(request, issuer)
            protection = limiter() if limiter is not None else None
            if protection is None:
                return await checked(request)
            throttle = protection.begin(client_id)
            if throttle is not None:
                raise CampaignApiError("too_many_requests", headers={"Retry-After": str(throttle.retry_after)})
            started = time.perf_counter()
            try:
                return await checked(request)
            finally:
                protection.end(client_id, (time.perf_counter() - started) * 1000)
        except CampaignApiError as exc:
            return error_response(exc)

    async def checked(request: Request) -> Response:
        try:
            if request.path_params["org"] != organization:
                raise CampaignApiError("unknown_resource", f"organization '{request.path_params['org']}'")
            return await dispatch(request)
        except CampaignApiError as exc:
            return error_response(exc)

    async def dispatch(request: Request) -> Response:
        parts = [p for p in request.path_params["rest"].split("/") if p]
        org_base = f"{str(request.base_url).rstrip('/')}/{organization}/campaign"
        if parts[:2] == ["workflow", "execution"] and len(parts) >= 3 and workflows is not None:
            return await workflow(request, parts[2:], org_base)
        if len(parts) < 2 or parts[0] not in NAMESPACES:
            raise CampaignApiError("unknown_resource", "/".join(parts))
        if parts[1] == "resourceType" and request.method == "GET":
            if len(parts) == 3:
                return metadata(parts[0], parts[2], org_base)
            if len(parts) == 4 and parts[3] == "filters":
                return filter_list(parts[0], parts[2])
        found = by_path().get(f"{parts[0]}/{parts[1]}")
        if found is None:
            raise CampaignApiError("unknown_resource", "/".join(parts[:2]))
        spec, ext = found
        path = "/".join(parts[:2])
        rest = parts[2:]
        method = request.method
        if not rest:
            if method == "GET":
                return listing(request, spec, ext, path, org_base, None)
            if method == "POST":
                return await create(request, spec, ext, org_base)
            raise CampaignApiError("method_not_allowed")
        head = rest[0]
        if head == "_count" and len(rest) == 1 and method == "GET":
            return JSONResponse({"count": store.count(spec.name)})
        if head in spec.filters and method == "GET":
            where = [condition(request, spec, head)]
            if len(rest) == 2 and rest[1] == "_count":
                return JSONResponse({"count": store.count(spec.name, where)})
            if len(rest) == 1:
                return listing(request, spec, ext, f"{path}/{head}", org_base, where)
        if len(rest) == 1 and head.startswith("@"):
            row_id = store.row_id(spec.name, head)
            if method == "GET":
                data = store.get(spec.name, row_id) if row_id is not None else None
                if data is None:
                    raise CampaignApiError("not_found", head)
                return JSONResponse(render(store, spec, row_id or 0, data, ext=ext, base=org_base))
            if method == "PATCH":
                changes = spec.validate(await _json(request), ext=ext, partial=True, link_exists=link_exists)
                updated = store.update(spec.name, row_id, _normalise(spec, changes)) if row_id is not None else None
                if updated is None:
                    raise CampaignApiError("not_found", head)
                return JSONResponse({"PKey": head, "href": f"{org_base}/{path}/{head}"})
            if method == "DELETE":
                if row_id is None or not store.delete(spec.name, row_id):
                    raise CampaignApiError("not_found", head)
                return Response(status_code=200)
        raise CampaignApiError("unknown_resource", "/".join(parts))

    async def workflow(request: Request, rest: list[str], org_base: str) -> Response:
        assert workflows is not None
        key, method = rest[0], request.method
        if len(rest) == 1 and method == "GET":
            return JSONResponse(workflows.resource(key, org_base))
        if rest[1:] == ["commands"] and method == "POST":
            return JSONResponse(workflows.command(key, await _json(request)))
        if len(rest) == 5 and rest[1:3] == ["activities", "activity"] and rest[4] == "trigger" and method == "POST":
            if len(await request.body()) > MAX_SIGNAL_PAYLOAD:
                raise CampaignApiError("signal_rejected", "the payload exceeds 64 KB")
            return JSONResponse(workflows.trigger(key, rest[3], await _json(request)))
        raise CampaignApiError("unknown_resource", "workflow/execution/" + "/".join(rest))

    def condition(request: Request, spec: ResourceSpec, name: str) -> Condition:
        flt = spec.filters[name]
        value = next((request.query_params[p] for p in flt.params if p in request.query_params), None)
        if value is None:
            raise CampaignApiError("bad_parameter", f"{name} needs '{flt.params[0]}'")
        return Condition(flt.fields, value, contains=flt.contains)

    def listing(request: Request, spec: ResourceSpec, ext: bool, path: str, base: str, where: list[Condition] | None) -> Response:
        line_count = _int_param(request, "_lineCount", LINE_COUNT_DEFAULT, MAX_LINE_COUNT)
        start = request.query_params.get("_lineStart")
        after = _parse_line_start(start) if start else 0
        rows = store.page(spec.name, after=after, limit=line_count + 1, where=where or ())
        more = len(rows) > line_count
        rows = rows[:line_count]
        force = request.query_params.get("_forcePagination", "").lower() == "true"
        params = {k: v for k, v in request.query_params.items() if k not in ("_lineStart",)}
        body: dict[str, Any] = {
            "content": [render(store, spec, rid, data, ext=ext, base=base) for rid, data in rows],
            "count": {"href": f"{base}/{path}/_count?{urlencode(params)}".rstrip("?")},
            "serverSidePagination": True,
        }
        big = store.count(spec.name) > big_table_threshold
        if more and (force or not big):
            next_params = {**params, "_lineCount": str(line_count), "_lineStart": _line_start(rows[-1][0])}
            # Adobe's examples show the token raw ("_lineStart=@Qy2M..."): "@" is not percent-encoded.
            body["next"] = {"href": f"{base}/{path}?{urlencode(next_params, safe='@')}"}
        return JSONResponse(body)

    async def create(request: Request, spec: ResourceSpec, ext: bool, base: str) -> Response:
        fields = spec.validate(await _json(request), ext=ext, partial=False, link_exists=link_exists)
        row_id, data = store.insert(spec.name, _normalise(spec, fields))
        return JSONResponse(render(store, spec, row_id, data, ext=ext, base=base), status_code=201)

    def metadata(namespace: str, name: str, base: str) -> Response:
        spec = store.resources.get(name)
        if spec is None or spec.in_namespace(namespace) is None:
            raise CampaignApiError("unknown_resource", f"resourceType/{name}")
        return JSONResponse(spec.resource_type(namespace, base))

    def filter_list(namespace: str, pkey: str) -> Response:
        spec = next((r for r in store.resources.values() if r.metadata_pkey == pkey), None)
        if spec is None or spec.in_namespace(namespace) is None:
            raise CampaignApiError("not_found", f"resourceType/{pkey}")
        return JSONResponse(spec.filters_metadata(namespace))

    return [Route("/{org}/campaign/{rest:path}", endpoint, methods=["GET", "POST", "PATCH", "DELETE"])]


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise CampaignApiError("bad_json") from None


def _normalise(spec: ResourceSpec, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Null strings become empty strings, as Campaign stores them (assumed)."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        fspec = spec.fields[name]
        out[name] = "" if value is None and fspec.type in ("string", "memo") else value
    return out
