"""The Dataverse Web API (``/api/data/v9.2``) over a ``DataverseStore``: queries with paging and change
tracking, writes with upsert semantics, ``$batch``, metadata, auth (Entra tokens), service-protection
limits and fault injection. Wire behaviour is described in docs/emulators.md; error codes live in ``errors.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response

from mapsync.emulators.dataverse.annotations import (
    ASSOCIATED_NAVIGATION,
    FORMATTED_VALUE,
    LOOKUP_LOGICAL_NAME,
    AnnotationFilter,
    formatted_value,
)
from mapsync.emulators.dataverse.batch import BatchRequest, ChangeSet, PartResponse, parse_batch, render_batch
from mapsync.emulators.dataverse.bulk import BULK_ACTION, BULK_ROW_EXECUTION_MS, bulk_targets, target_payload
from mapsync.emulators.dataverse.errors import DataverseError, error_body
from mapsync.emulators.dataverse.messages import MESSAGE_SETS, message_reply
from mapsync.emulators.dataverse.metadata import (
    TableDef,
    csdl,
    definitions_list,
    definitions_reply,
    entity_metadata,
    navigation_name,
)
from mapsync.emulators.dataverse.odata import (
    FilterSyntaxError,
    FilterTypeError,
    compile_filter,
    is_guid,
    parse_filter,
    parse_orderby,
)
from mapsync.emulators.dataverse.organization import (
    RETRIEVE_CURRENT_ORGANIZATION,
    access_type,
    current_organization,
    organization_id,
)
from mapsync.emulators.dataverse.security import (
    USER_ID,
    DataverseSetup,
    privilege_count,
    privilege_name,
    system_user,
    user_privileges,
)
from mapsync.emulators.dataverse.store import DataverseStore
from mapsync.emulators.entra import entra_routes
from mapsync.emulators.faults import FaultInjector, FaultMiddleware
from mapsync.emulators.limits import ServiceProtection
from mapsync.emulators.tokens import TokenIssuer

__all__ = ["DataverseApi", "build_dataverse_app", "dataverse_fault_body", "dataverse_routes"]

log = logging.getLogger("mapsync.emulators.dataverse")

MAX_PAGE_SIZE = 5000
MAX_BATCH_REQUESTS = 1000
JSON_TYPE = "application/json; odata.metadata=minimal"
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", re.S)
_KEY_PAIR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*'|[^,]+)\s*(?:,|$)")
_TOTAL_COUNT = re.compile(r"^RetrieveTotalRecordCount\(EntityNames=(\[.*\]|@\w+)\)$", re.S)
_SYSTEM_USER = re.compile(r"^systemusers\(([0-9A-Fa-f-]{36})\)(/Microsoft\.Dynamics\.CRM\.RetrieveUserPrivileges\(\))?$")
_ACCESS_OF_METHOD = {"GET": "Read", "POST": "Create", "PATCH": "Write", "DELETE": "Delete"}
_DEF = re.compile(r"^EntityDefinitions(?:\((?:LogicalName=)?'?([^')]+)'?\))?"
                  r"(?:/(\w+)(?:\(LogicalName='([^']+)'\))?(?:/Microsoft\.Dynamics\.CRM\.(\w+))?)?$")


def dataverse_fault_body(status: int, retry_after: int) -> dict[str, Any]:
    """Error body of an injected fault, in Dataverse's shape."""
    if status == 429:
        return error_body("0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 seconds.")
    if status == 503:
        return DataverseError("unavailable").body()
    return DataverseError("unexpected").body()


@dataclass(slots=True)
class Inner:
    """One Web API response before it becomes an HTTP response or a batch part."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    entity_url: str | None = None
    bulk_rows: int = 0  # targets a bulk message wrote: their execution time is charged (bulk.py)


@dataclass(frozen=True, slots=True)
class _Prefer:
    max_page_size: int | None = None
    track_changes: bool = False
    return_representation: bool = False
    continue_on_error: bool = False
    annotations: str | None = None

    @property
    def annotation_filter(self) -> AnnotationFilter | None:
        return AnnotationFilter.parse(self.annotations) if self.annotations else None

    @classmethod
    def parse(cls, header: str) -> _Prefer:
        values: dict[str, Any] = {}
        for item in re.findall(r'(?:[^,"]|"[^"]*")+', header):  # a quoted value may hold commas
            name, _sep, value = item.strip().partition("=")
            name = name.strip().lower()
            if name == "odata.maxpagesize" and value.strip().isdigit():
                values["max_page_size"] = int(value.strip())
            elif name == "odata.track-changes":
                values["track_changes"] = True
            elif name == "return" and value.strip() == "representation":
                values["return_representation"] = True
            elif name == "odata.continue-on-error":
                values["continue_on_error"] = True
            elif name == "odata.include-annotations":
                values["annotations"] = value.strip().strip('"')
        return cls(**values)


def _json(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Inner:
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return Inner(status, [("Content-Type", JSON_TYPE), *(headers or [])], body)


def _error(err: DataverseError) -> Inner:
    return _json(err.status, err.body(), list(err.headers.items()))


def _cookie(state: dict[str, Any]) -> str:
    # Dataverse's $skiptoken is an XML paging cookie; ours carries its state in the same envelope.
    inner = base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()
    return f'<cookie pagenumber="{state["p"]}" pagingcookie="{inner}" istracking="False" />'


def _uncookie(token: str) -> dict[str, Any]:
    m = re.search(r'pagingcookie="([^"]+)"', token)
    try:
        state = json.loads(base64.urlsafe_b64decode(m.group(1).encode())) if m else None
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise DataverseError("query_syntax", detail="The $skiptoken value is not valid.")
    return state


class DataverseApi:
    """Handles Web API requests; ``handle`` is transport-free so ``$batch`` parts reuse it."""

    def __init__(self, store: DataverseStore, issuer: TokenIssuer, protection: ServiceProtection | None,
                 base: str = "/api/data/v9.2", *, authority: str = "https://login.microsoftonline.com/common",
                 tenant: str | None = None, setup: DataverseSetup | None = None) -> None:
        self.store = store
        self.setup = setup or DataverseSetup()  # the setup switches (security.py)
        self.client_id = ""  # the application the last admitted token was issued to: the application user's
        self.tenant = tenant  # when set, challenges name this tenant on the emulator's own Entra ID
        self.issuer = issuer
        self.protection = protection
        self.base = base.rstrip("/")
        self.authority = authority

    # -- HTTP entry point -------------------------------------------------------------------------------
    async def endpoint(self, request: Request) -> Response:
        root = f"{request.url.scheme}://{request.url.netloc}"
        auth = request.headers.get("authorization", "")
        check = self.issuer.check(auth[7:].strip() if auth.lower().startswith("bearer ") else "")
        user = check.client_id
        if user is None:
            return Response(b"", 401, headers={"WWW-Authenticate": self._challenge(root, check.problem),
                                               "REQ_ID": str(uuid.uuid4())})
        refused = self._refused_user(root)
        if refused is not None:
            return self._response(_error(refused))
        self.client_id = user
        if self.protection is not None:
            throttle = self.protection.begin(user)
            if throttle is not None:
                inner = _json(429, error_body(throttle.code, throttle.message), [("Retry-After", str(throttle.retry_after))])
                return self._response(inner)
        started = time.perf_counter()
        try:
            body = await request.body()
            path = request.url.path[len(self.base):].lstrip("/")
            headers = {k.lower(): v for k, v in request.headers.items()}
            inner = self.handle(request.method, unquote(path), request.url.query, headers, body, root)
        finally:
            if self.protection is not None:
                self.protection.end(user, (time.perf_counter() - started) * 1000)
        if self.protection is not None and inner.bulk_rows:
            self.protection.charge(user, inner.bulk_rows * BULK_ROW_EXECUTION_MS)
        if self.protection is not None:
            left, exec_left = self.protection.remaining(user)
            if left is not None:
                inner.headers.append(("x-ms-ratelimit-burst-remaining-xrm-requests", str(left)))
            if exec_left is not None:
                inner.headers.append(("x-ms-ratelimit-time-remaining-xrm-requests", f"{exec_left:.2f}"))
        return self._response(inner)

    def _refused_user(self, root: str) -> DataverseError | None:
        """Dataverse admits a token's application only through an enabled application user (security.py)."""
        state = self.setup.application_user
        if state == "missing":
            return DataverseError("not_a_member")
        if state == "disabled":
            return DataverseError("user_disabled", user=USER_ID, organization=organization_id(root))
        return None

    def _challenge(self, root: str, problem: str | None) -> str:
        """The ``WWW-Authenticate`` of a 401. Without a token Dataverse names the tenant's authority and
        itself (clients read the tenant from it); a token it refuses adds RFC 6750's ``error=invalid_token``.
        The body is empty and the description's wording is Dataverse's as seen in replies (assumed)."""
        authority = f"{root}/{self.tenant}" if self.tenant else self.authority
        where = f"authorization_uri={authority}/oauth2/authorize, resource_id={root}/"
        if problem == "missing":
            return f"Bearer {where}"
        return f'Bearer error=invalid_token, error_description="Error during token validation!", {where}'

    @staticmethod
    def _response(inner: Inner) -> Response:
        headers = {"OData-Version": "4.0", "REQ_ID": str(uuid.uuid4())}
        media = None
        for k, v in inner.headers:
            if k.lower() == "content-type":
                media = v
            else:
                headers[k] = v
        return Response(inner.body, inner.status, headers=headers, media_type=media)

    # -- dispatch ---------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, root: str,
               *, in_batch: bool = False) -> Inner:
        try:
            version = headers.get("odata-version")
            if version is not None and version.strip().upper() not in ("4.0", "V4.0", "4.01"):
                raise DataverseError("odata_version", value=version)
            params = dict(parse_qsl(query, keep_blank_values=True))
            prefer = _Prefer.parse(headers.get("prefer", ""))
            return self._route(method.upper(), path.strip("/"), params, headers, body, root, prefer, in_batch)
        except DataverseError as err:
            return _error(err)
        except FilterSyntaxError as err:
            return _error(DataverseError("query_syntax", detail=err.message))
        except FilterTypeError as err:
            return _error(DataverseError(err.kind, **err.fields))
        except Exception:  # never a traceback on the wire: the real service answers 500 with its body
            log.exception("unexpected error in the Dataverse emulator")
            return _error(DataverseError("unexpected"))

    def _route(self, method: str, path: str, params: dict[str, str], headers: Mapping[str, str], body: bytes,
               root: str, prefer: _Prefer, in_batch: bool) -> Inner:
        api = root + self.base
        if path == "":
            self._only(method, "GET", api)
            sets = [{"name": t.entity_set, "kind": "EntitySet", "url": t.entity_set} for t in self.store.tables.values()]
            return _json(200, {"@odata.context": f"{api}/$metadata", "value": sets})
        if path == "$metadata":
            self._only(method, "GET", f"{api}/$metadata")
            return Inner(200, [("Content-Type", "application/xml")], csdl(self.store.tables).encode())
        if path == "$batch":
            self._only(method, "POST", f"{api}/$batch")
            if in_batch:
                raise DataverseError("batch_malformed", detail="A batch cannot contain another batch.")
            return self._batch(headers, body, root, prefer)
        if path == "WhoAmI":
            self._only(method, "GET", f"{api}/WhoAmI")
            return _json(200, {"@odata.context": f"{api}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                               "BusinessUnitId": str(uuid.uuid5(uuid.NAMESPACE_URL, "bu")),
                               "UserId": str(uuid.uuid5(uuid.NAMESPACE_URL, "user")),
                               "OrganizationId": str(uuid.uuid5(uuid.NAMESPACE_URL, root))})
        m = RETRIEVE_CURRENT_ORGANIZATION.match(path)
        if m and access_type(m.group(1), params) is not None:
            self._only(method, "GET", f"{api}/{path}")
            return _json(200, current_organization(api, root, self.store))
        m = _SYSTEM_USER.match(path)
        if m:
            self._only(method, "GET", f"{api}/{path}")
            if m.group(1).lower() != USER_ID:
                raise DataverseError("not_found", table="systemuser", id=m.group(1))
            if m.group(2):
                return _json(200, user_privileges(api, self.store.tables, self.setup))
            return _json(200, system_user(api, self.client_id, self.setup, params.get("$select")))
        m = _TOTAL_COUNT.match(path)
        if m:
            self._only(method, "GET", f"{api}/{path}")
            names_text = params.get(m.group(1), "") if m.group(1).startswith("@") else m.group(1)
            return self._total_counts(re.findall(r"'([^']*)'", names_text), api)
        m = _DEF.match(path)
        if m:
            self._only(method, "GET", f"{api}/{path}")
            if m.group(1) is None:
                if m.group(2) is not None:
                    raise DataverseError("segment_not_found", segment=m.group(2))
                return _json(200, definitions_list(self.setup.tables(self.store.tables), params, api))
            return self._definitions(m.group(1), m.group(2), m.group(3), m.group(4), params, api)
        if path in MESSAGE_SETS:
            self._only(method, "GET", f"{api}/{path}")
            return _json(200, message_reply(path, params, self.store.tables, api, self.setup.supports))
        m = BULK_ACTION.match(path)
        if m and m.group(1) in self.store.by_entity_set:
            self._only(method, "POST", f"{api}/{path}")
            return self._bulk(self.setup.applied(self.store.by_entity_set[m.group(1)]), m.group(2), body, api)
        if "/" in path:
            raise DataverseError("segment_not_found", segment=path.split("/", 1)[1].split("(")[0])
        km = _KEY.match(path)
        entity_set = km.group(1) if km else path
        table = self.store.by_entity_set.get(entity_set)
        if table is None:
            raise DataverseError("segment_not_found", segment=entity_set)
        table = self.setup.applied(table)
        self._require(_ACCESS_OF_METHOD.get(method), table)
        if km is None:
            if method == "GET":
                return self._query(table, params, headers, prefer, api)
            if method == "POST":
                return self._create(table, body, prefer, api, in_batch)
            raise DataverseError("method_not_allowed", method=method)
        rid, key_values = self._parse_key(table, km.group(2))
        if method == "GET":
            return self._get_one(table, rid, key_values, params, prefer, api)
        if method == "PATCH":
            return self._upsert(table, rid, key_values, headers, body, prefer, api, in_batch)
        if method == "DELETE":
            return self._delete(table, rid, key_values)
        raise DataverseError("method_not_allowed", method=method)

    def _require(self, access: str | None, table: TableDef) -> None:
        """Refuse what the application user's role does not allow (0x80040220), as Dataverse does."""
        if access is None or not self.setup.removed_privileges:
            return
        privilege = privilege_name(access, table.name)
        if not self.setup.has(privilege):
            raise DataverseError("missing_privilege", user=USER_ID, privilege=privilege, table=table.name,
                                 count=privilege_count(self.store.tables, self.setup))

    @staticmethod
    def _only(method: str, allowed: str, uri: str) -> None:
        if method != allowed:
            raise DataverseError("no_resource", uri=uri)

    # -- keys -------------------------------------------------------------------------------------------
    def _parse_key(self, table: TableDef, text: str) -> tuple[str | None, dict[str, Any] | None]:
        text = text.strip()
        if is_guid(text):
            return text.lower(), None
        pairs: dict[str, Any] = {}
        pos = 0
        while pos < len(text):
            m = _KEY_PAIR.match(text, pos)
            if m is None:
                raise DataverseError("bad_key")
            raw = m.group(2).strip()
            if raw.startswith("'"):
                value: Any = raw[1:-1].replace("''", "'")
            elif re.fullmatch(r"-?\d+", raw):
                value = int(raw)
            else:
                value = raw
            pairs[m.group(1)] = value
            pos = m.end()
        if not pairs:
            raise DataverseError("bad_key")
        if list(pairs) == [table.primary_key] and isinstance(pairs[table.primary_key], str) and is_guid(pairs[table.primary_key]):
            return pairs[table.primary_key].lower(), None
        if not self.store.has_key(table.name, set(pairs)):
            raise DataverseError("bad_key")
        return None, pairs

    def _resolve(self, table: TableDef, rid: str | None, key_values: dict[str, Any] | None) -> str | None:
        if rid is not None:
            return rid if self.store.row(table.name, rid) is not None else None
        return self.store.find_by_key(table.name, key_values or {})

    def _not_found(self, table: TableDef, rid: str | None, key_values: dict[str, Any] | None) -> DataverseError:
        shown = rid if rid is not None else ",".join(f"{k}={v}" for k, v in (key_values or {}).items())
        return DataverseError("not_found", table=table.name, id=shown)

    # -- reads ------------------------------------------------------------------------------------------
    def _select(self, table: TableDef, params: dict[str, str]) -> tuple[list[tuple[str, int]], list[str]]:
        index = self.store.column_index(table.name)
        raw = params.get("$select")
        if raw:
            names = [n.strip() for n in raw.split(",") if n.strip()]
            for n in names:
                if n not in index:
                    raise DataverseError("no_property", name=n, table=table.name)
        else:
            names = [c.wire_name for c in table.columns]
        shown = list(dict.fromkeys([*names, table.primary_key]))
        return [(n, index[n][0]) for n in shown], names if raw else []

    def _render_row(self, table: TableDef, row: tuple[Any, ...], names: list[tuple[str, int]],
                    annotations: AnnotationFilter | None) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": f'W/"{row[self._ver_index(table)]}"'}
        for name, i in names:
            if annotations is not None and row[i] is not None:
                out.update(self._annotations(table, row, name, row[i], annotations))
            out[name] = row[i]
        return out

    def _annotations(self, table: TableDef, row: tuple[Any, ...], name: str, value: Any,
                     wanted: AnnotationFilter) -> dict[str, Any]:
        """The annotations of one property, written before it as Dataverse does."""
        col = table.column(name)
        if col is None:
            return {}
        out: dict[str, Any] = {}
        if col.type != "lookup":
            if wanted.wants(FORMATTED_VALUE) and (text := formatted_value(col, value)) is not None:
                out[f"{name}@{FORMATTED_VALUE}"] = text
            return out
        target = self.store.lookup_target(table.name, row, name)
        if wanted.wants(FORMATTED_VALUE) and target is not None and (label := self._primary_name(target, value)):
            out[f"{name}@{FORMATTED_VALUE}"] = label
        if wanted.wants(ASSOCIATED_NAVIGATION) and target is not None:
            out[f"{name}@{ASSOCIATED_NAVIGATION}"] = navigation_name(table, col, target)
        if wanted.wants(LOOKUP_LOGICAL_NAME):
            out[f"{name}@{LOOKUP_LOGICAL_NAME}"] = target
        return out

    def _primary_name(self, table_name: str, rid: str) -> str | None:
        target = self.store.tables.get(table_name)
        if target is None or target.primary_name is None:
            return None
        row = self.store.row(table_name, rid)
        return None if row is None else row[self.store.column_index(table_name)[target.primary_name][0]]

    def _ver_index(self, table: TableDef) -> int:
        return self.store.column_index(table.name)["versionnumber"][0]

    def _get_one(self, table: TableDef, rid: str | None, key_values: dict[str, Any] | None,
                 params: dict[str, str], prefer: _Prefer, api: str) -> Inner:
        found = self._resolve(table, rid, key_values)
        if found is None:
            raise self._not_found(table, rid, key_values)
        names, _ = self._select(table, params)
        row = self.store.row(table.name, found)
        assert row is not None
        annotations = prefer.annotation_filter
        body = {"@odata.context": f"{api}/$metadata#{table.entity_set}/$entity",
                **self._render_row(table, row, names, annotations)}
        return _json(200, body, [("Preference-Applied", annotations.applied)] if annotations else [])

    def _query(self, table: TableDef, params: dict[str, str], headers: Mapping[str, str], prefer: _Prefer,
               api: str) -> Inner:
        names, selected = self._select(table, params)
        annotations = prefer.annotation_filter
        page_size = min(prefer.max_page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE) or MAX_PAGE_SIZE
        applied = [f"odata.maxpagesize={page_size}"] if prefer.max_page_size else []
        if annotations is not None:
            applied.append(annotations.applied)
        if "$skip" in params:
            raise DataverseError("query_syntax", detail="The query parameter $skip is not supported.")
        if "$expand" in params and not (prefer.track_changes or "$deltatoken" in params):
            raise DataverseError("query_syntax", detail="$expand is not supported by the emulator.")
        tracking = prefer.track_changes or "$deltatoken" in params
        context_cols = f"({','.join(selected)})" if selected else ""
        if tracking:
            if not table.change_tracking:
                raise DataverseError("track_changes_disabled", table=table.name)
            for option in ("$filter", "$orderby", "$expand", "$top"):
                if option in params:
                    raise DataverseError("track_changes_option", option=option)
            if "$deltatoken" not in params:  # the documented delta-link reply echoes no preference
                applied.append("odata.track-changes")
        state = _uncookie(params["$skiptoken"]) if "$skiptoken" in params else None
        page = state["p"] if state else 1
        base_params = {k: v for k, v in params.items() if k not in ("$skiptoken",)}

        def link(extra: dict[str, str]) -> str:
            merged = {**base_params, **extra}
            # "=" stays raw, as in Microsoft's nextLink examples ("%3Ccookie%20pagenumber=%222%22...").
            return f"{api}/{table.entity_set}?" + "&".join(f"{k}={quote(str(v), safe=',()=')}" for k, v in merged.items())

        body: dict[str, Any] = {}
        if "$deltatoken" in params:
            since = self.store.parse_delta_token(table.name, params["$deltatoken"])
            upto = state["upto"] if state else self.store.version
            changes, resume = self._delta_page(table, since, upto, state, page_size)
            deleted_ctx = f"{api}/$metadata#{table.entity_set}/$deletedEntity"
            value = [self._render_row(table, item, names, annotations) if kind == "row"
                     else {"@odata.context": deleted_ctx, "id": item, "reason": "deleted"}
                     for kind, item in changes]
            body = {"@odata.context": f"{api}/$metadata#{table.entity_set}{context_cols}/$delta", "value": value}
            if resume is not None:
                body["@odata.nextLink"] = link({"$skiptoken": _cookie({"p": page + 1, "upto": upto, **resume})})
            else:
                body["@odata.deltaLink"] = self._delta_link(table, params, api, upto)
        else:
            predicate = None
            if "$filter" in params:
                predicate = compile_filter(parse_filter(params["$filter"]), self.store.column_index(table.name),
                                           table.name)
            top = None
            if "$top" in params:
                if not params["$top"].isdigit():
                    raise DataverseError("query_syntax", detail=f"Invalid value '{params['$top']}' for $top query option found.")
                # Documented ("Page results"): with Prefer: odata.maxpagesize, $top is ignored.
                top = None if prefer.max_page_size else min(int(params["$top"]), MAX_PAGE_SIZE)
            if "$orderby" in params:
                rows, next_state = self._sorted_page(table, predicate, params["$orderby"], state,
                                                     top if top is not None else page_size,
                                                     params.get("$filter", ""))
            else:
                start = state["i"] if state else 0
                rows, nxt = self.store.scan(table.name, predicate, start, top if top is not None else page_size)
                next_state = None if nxt is None else {"i": nxt}
            if top is not None:
                next_state = None
            value = [self._render_row(table, r, names, annotations) for r in rows]
            # The initial tracked read is a plain collection (Microsoft's example has no "/$delta" there).
            context = f"{api}/$metadata#{table.entity_set}{context_cols}"
            body = {"@odata.context": context}
            if params.get("$count") == "true":
                body["@odata.count"] = min(MAX_PAGE_SIZE, sum(1 for r in self.store.all_rows(table.name)
                                                              if predicate is None or predicate(r)))
            body["value"] = value
            upto = state.get("upto") if state else (self.store.version if tracking else None)
            if next_state is not None:
                next_state["p"] = page + 1
                if tracking:
                    next_state["upto"] = upto
                body["@odata.nextLink"] = link({"$skiptoken": _cookie(next_state)})
            elif tracking:
                body["@odata.deltaLink"] = self._delta_link(table, params, api, upto)
        headers_out = [("Preference-Applied", ",".join(applied))] if applied else []
        return _json(200, body, headers_out)

    def _delta_page(self, table: TableDef, since: int, upto: int, state: dict[str, Any] | None,
                    page_size: int) -> tuple[list[tuple[str, Any]], dict[str, Any] | None]:
        """One page of a delta reply in Dataverse's documented order: every new or updated row (by version)
        first, then the deleted ones. The cookie carries the phase and the version to resume after."""
        phase = state.get("phase", "row") if state else "row"
        after = state["after"] if state else since
        out: list[tuple[str, Any]] = []
        if phase == "row":
            out, resume = self.store.changes(table.name, after, upto, page_size, "row")
            if resume is not None:
                return out, {"phase": "row", "after": resume}
            phase, after = "deleted", since
        if len(out) >= page_size:
            return out, {"phase": "deleted", "after": after}
        deleted, resume = self.store.changes(table.name, after, upto, page_size - len(out), "deleted")
        out += deleted
        return out, None if resume is None else {"phase": "deleted", "after": resume}

    def _delta_link(self, table: TableDef, params: dict[str, str], api: str, version: int) -> str:
        token = self.store.delta_token(table.name)
        token = f"{version}!{token.split('!', 1)[1]}"
        select = f"$select={params['$select']}&" if params.get("$select") else ""
        return f"{api}/{table.entity_set}?{select}$deltatoken={quote(token, safe='')}"

    def _sorted_page(self, table: TableDef, predicate: Any, orderby: str, state: dict[str, Any] | None,
                     limit: int, filter_text: str) -> tuple[list[tuple[Any, ...]], dict[str, Any] | None]:
        """A page of an ``$orderby`` query. The cookie carries the last row's sort key and id, as
        Dataverse's paging cookie does, so each page starts by bisection instead of a re-sort."""
        index = self.store.column_index(table.name)
        order = parse_orderby(orderby)
        for o in order:
            if o.name not in index:
                raise DataverseError("no_property", name=o.name, table=table.name)
        after = None
        if state:
            keys, last = state.get("k"), state.get("id")
            if not isinstance(keys, list) or len(keys) != len(order) or not isinstance(last, str):
                raise DataverseError("query_syntax", detail="The $skiptoken value is not valid.")
            after = (keys, last)
        rows, cursor = self.store.ordered_page(table.name, [(o.name, o.descending) for o in order], predicate,
                                               filter_text, after, limit)
        return rows, (None if cursor is None else {"k": cursor[0], "id": cursor[1]})

    def _definitions(self, key: str, segment: str | None, attribute: str | None, cast: str | None,
                     params: dict[str, str], api: str) -> Inner:
        """``EntityDefinitions(LogicalName='x')`` or ``EntityDefinitions(<MetadataId>)`` and its collections."""
        tables = self.setup.tables(self.store.tables)
        table = tables.get(key) or next((t for t in tables.values()
                                         if entity_metadata(t)["MetadataId"] == key.lower()), None)
        if table is None:
            raise DataverseError("not_found", table="EntityMetadata", id=key)
        if (cast is not None or attribute is not None) and segment != "Attributes":
            raise DataverseError("segment_not_found", segment=f"Microsoft.Dynamics.CRM.{cast}" if cast else segment)
        body = definitions_reply(tables, table, segment, cast, params, api, attribute=attribute)
        if self.setup.key_status:
            self.setup.patch_keys(table.name, body.get("Keys") or (body.get("value") or [] if segment == "Keys" else []))
        return _json(200, body)

    # -- writes -----------------------------------------------------------------------------------------
    def _payload(self, table: TableDef, body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            raise DataverseError("bad_payload", entity_set=table.entity_set, detail=f"Invalid JSON. {exc}") from None
        if not isinstance(payload, dict):
            raise DataverseError("bad_payload", entity_set=table.entity_set,
                                 detail="A resource was expected but a different payload was found.")
        return payload

    def _entity_headers(self, url: str, in_batch: bool) -> list[tuple[str, str]]:
        return [("Location", url), ("OData-EntityId", url)] if in_batch else [("OData-EntityId", url)]

    def _create(self, table: TableDef, body: bytes, prefer: _Prefer, api: str, in_batch: bool) -> Inner:
        payload = self._payload(table, body)
        self._planted(table, payload)
        row = self.store.create(table.name, payload)
        rid = row[self.store.column_index(table.name)[table.primary_key][0]]
        url = f"{api}/{table.entity_set}({rid})"
        if prefer.return_representation:
            names, _ = self._select(table, {})
            body_out = {"@odata.context": f"{api}/$metadata#{table.entity_set}/$entity",
                        **self._render_row(table, row, names, None)}
            inner = _json(201, body_out, [("OData-EntityId", url), ("Preference-Applied", "return=representation")])
        else:
            inner = Inner(204, self._entity_headers(url, in_batch))
        inner.entity_url = url
        return inner

    def _upsert(self, table: TableDef, rid: str | None, key_values: dict[str, Any] | None,
                headers: Mapping[str, str], body: bytes, prefer: _Prefer, api: str, in_batch: bool) -> Inner:
        payload = self._payload(table, body)
        self._planted(table, {**payload, **(key_values or {})})
        found = self._resolve(table, rid, key_values)
        if_match = headers.get("if-match")
        if_none = headers.get("if-none-match")
        if found is None and if_match is not None:
            raise self._not_found(table, rid, key_values)
        if found is not None and if_none is not None and if_none.strip() == "*":
            raise DataverseError("exists")
        if found is not None and if_match is not None and if_match.strip() != "*":
            current = self.store.row(table.name, found)
            assert current is not None
            if if_match.strip() != f'W/"{current[self._ver_index(table)]}"':
                raise DataverseError("etag_mismatch")
        if found is not None:
            row = self.store.modify(table.name, found, payload)
            status = 200
        else:
            if rid is not None:
                payload = {**payload, table.primary_key: rid}
            row = self.store.create(table.name, payload, key_values=key_values)
            status = 201
        new_id = row[self.store.column_index(table.name)[table.primary_key][0]]
        url = f"{api}/{table.entity_set}({new_id})"
        if prefer.return_representation:
            names, _ = self._select(table, {})
            body_out = {"@odata.context": f"{api}/$metadata#{table.entity_set}/$entity",
                        **self._render_row(table, row, names, None)}
            inner = _json(status, body_out, [("OData-EntityId", url), ("Preference-Applied", "return=representation")])
        else:
            inner = Inner(204, self._entity_headers(url, in_batch))
        inner.entity_url = url
        return inner

    def _planted(self, table: TableDef, payload: Mapping[str, Any]) -> None:
        """A row the setup switch ``reject_rows`` plants: refused as a synchronous plug-in refuses it."""
        value = self.setup.refused(table.name, payload.values())
        if value is not None:
            raise DataverseError("plugin_refused", message=f"A plug-in refused the {table.name} row '{value}'.")

    def _bulk(self, table: TableDef, message: str, body: bytes, api: str) -> Inner:
        """``CreateMultiple``/``UpdateMultiple``/``UpsertMultiple`` (bulk.py): every target, or none."""
        self._require("Write" if message == "UpdateMultiple" else "Create", table)
        if not self.setup.supports(table.name, message):
            raise DataverseError("message_unavailable", message=message, table=table.name)
        targets = bulk_targets(table, body)
        pk_index = self.store.column_index(table.name)[table.primary_key][0]
        ids: list[str] = []
        with self.store.transaction():  # a standard table: one failing row rolls back the rows before it
            for target in targets:
                ids.append(self._bulk_row(table, message, target)[pk_index])
        if message == "CreateMultiple":
            inner = _json(200, {"@odata.context": f"{api}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
                                "Ids": ids})
        else:
            inner = Inner(204)
        inner.bulk_rows = len(targets)
        return inner

    def _bulk_row(self, table: TableDef, message: str, target: Mapping[str, Any]) -> tuple[Any, ...]:
        payload = target_payload(target)
        self._planted(table, payload)
        if message == "CreateMultiple":
            return self.store.create(table.name, payload)
        if message == "UpdateMultiple":
            rid = str(payload.pop(table.primary_key, "") or "").lower()
            if not rid or self.store.row(table.name, rid) is None:
                raise DataverseError("bulk_update_missing", table=table.name, id=rid)
            return self.store.modify(table.name, rid, payload)
        rid, key_values = None, None
        if "@odata.id" in target:
            km = _KEY.match(str(target["@odata.id"]).split(self.base + "/", 1)[-1].lstrip("/"))
            if km is None or km.group(1) != table.entity_set:
                raise DataverseError("bad_key")
            rid, key_values = self._parse_key(table, km.group(2))
        else:
            key_values = next(({c: payload[c] for c in cols} for _n, cols in table.alternate_keys
                               if all(c in payload for c in cols)), None)
            if key_values is None and payload.get(table.primary_key):
                rid = str(payload[table.primary_key]).lower()
        found = self._resolve(table, rid, key_values) if (rid or key_values) else None
        if found is not None:
            return self.store.modify(table.name, found, payload)
        if rid is not None:
            payload = {**payload, table.primary_key: rid}
        return self.store.create(table.name, payload, key_values=key_values)

    def _delete(self, table: TableDef, rid: str | None, key_values: dict[str, Any] | None) -> Inner:
        found = self._resolve(table, rid, key_values)
        if found is None:
            raise self._not_found(table, rid, key_values)
        self.store.remove(table.name, found)
        return Inner(204)

    def _total_counts(self, names: list[str], api: str) -> Inner:
        """``RetrieveTotalRecordCount``: Dataverse answers from a snapshot up to 24 hours old; this, exactly."""
        for name in names:
            if name not in self.store.tables:
                raise DataverseError("unknown_table", name=name)
        return _json(200, {
            "@odata.context": f"{api}/$metadata#Microsoft.Dynamics.CRM.RetrieveTotalRecordCountResponse",
            "EntityRecordCountCollection": {"Count": len(names), "IsReadOnly": False, "Keys": names,
                                            "Values": [self.store.count(n) for n in names]}})

    # -- $batch -----------------------------------------------------------------------------------------
    def _batch(self, headers: Mapping[str, str], body: bytes, root: str, prefer: _Prefer) -> Inner:
        items = parse_batch(body, headers.get("content-type", ""))
        total = sum(len(i.requests) if isinstance(i, ChangeSet) else 1 for i in items)
        if total > MAX_BATCH_REQUESTS:
            raise DataverseError("batch_too_large", limit=MAX_BATCH_REQUESTS)
        out: list[PartResponse | list[PartResponse]] = []
        failed: int | None = None
        for item in items:
            if isinstance(item, ChangeSet):
                result = self._changeset(item, root)
                out.append(result)
                if isinstance(result, PartResponse):
                    failed = failed or result.status
            else:
                inner = self._part(item, root, {})
                out.append(PartResponse(inner.status, inner.headers, inner.body, item.content_id))
                if inner.status >= 400:
                    failed = failed or inner.status
            if failed and not prefer.continue_on_error:
                break
        payload, content_type = render_batch(out)
        # Without continue-on-error the batch itself carries the status of the part that stopped it.
        status = 200 if prefer.continue_on_error or failed is None else failed
        applied = [("Preference-Applied", "odata.continue-on-error")] if prefer.continue_on_error else []
        return Inner(status, [("Content-Type", content_type), *applied], payload)

    def _changeset(self, cs: ChangeSet, root: str) -> list[PartResponse] | PartResponse:
        refs: dict[str, str] = {}
        responses: list[PartResponse] = []
        failure: PartResponse | None = None

        class _Abort(Exception):
            pass

        try:
            with self.store.transaction():
                for req in cs.requests:
                    if req.method == "GET":
                        err = _as_batch_part(req.method, _error(DataverseError("get_in_changeset")))
                        failure = PartResponse(err.status, err.headers, err.body, req.content_id)
                        raise _Abort
                    inner = self._part(req, root, refs)
                    if inner.status >= 400:
                        failure = PartResponse(inner.status, inner.headers, inner.body, req.content_id)
                        raise _Abort
                    if req.content_id and inner.entity_url:
                        refs["$" + req.content_id] = inner.entity_url
                    responses.append(PartResponse(inner.status, inner.headers, inner.body, req.content_id))
        except _Abort:
            assert failure is not None
            return failure
        return responses

    def _part(self, req: BatchRequest, root: str, refs: dict[str, str]) -> Inner:
        url = req.url
        if url.startswith("$"):
            ref, _sep, rest = url.partition("/")
            if ref not in refs:
                return _as_batch_part(req.method, _error(DataverseError("content_id", ref=ref)))
            url = refs[ref] + (f"/{rest}" if rest else "")
        parts = urlsplit(url)
        path = unquote(parts.path)
        if path.startswith(self.base):
            path = path[len(self.base):]
        body = req.body
        if refs and body:
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            if isinstance(payload, dict):
                for k, v in payload.items():
                    if isinstance(v, str) and v.startswith("$"):
                        if v not in refs:
                            return _as_batch_part(req.method, _error(DataverseError("content_id", ref=v)))
                        payload[k] = refs[v]
                body = json.dumps(payload).encode()
        inner = self.handle(req.method, path, parts.query, req.headers, body, root, in_batch=True)
        return _as_batch_part(req.method, inner)


def _as_batch_part(method: str, inner: Inner) -> Inner:
    """Headers of one reply inside a ``$batch`` answer, as Microsoft's examples show them: a failed part
    starts with its own ``REQ_ID``; a GET's JSON says ``odata.streaming=true``; every part has OData-Version."""
    headers = []
    for k, v in inner.headers:
        if k.lower() == "content-type" and method == "GET" and inner.status < 400 and v == JSON_TYPE:
            v = f"{JSON_TYPE}; odata.streaming=true"
        headers.append((k, v))
    if not any(k.lower() == "odata-version" for k, _v in headers):
        position = next((i + 1 for i, (k, _v) in enumerate(headers) if k.lower() == "content-type"), 0)
        headers.insert(position, ("OData-Version", "4.0"))
    if inner.status >= 400:
        headers.insert(0, ("REQ_ID", str(uuid.uuid4())))
    inner.headers = headers
    return inner


def dataverse_routes(store: DataverseStore, issuer: TokenIssuer, protection: ServiceProtection | None,
                     faults: FaultInjector | None = None, base: str = "/api/data/v9.2", *,
                     tenant: str | None = None, setup: DataverseSetup | None = None) -> list[BaseRoute]:
    """The Web API routes under ``base``; with ``faults``, each request first draws its injected fault."""
    api = DataverseApi(store, issuer, protection, base, tenant=tenant, setup=setup)
    app = FaultMiddleware(request_response(api.endpoint), faults, dataverse_fault_body,
                          on_token_expiry=issuer.expire_older_than)
    methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
    return [Route(base.rstrip("/") + "/{path:path}", app, methods=methods),
            Route(base.rstrip("/"), app, methods=methods)]


def build_dataverse_app(store: DataverseStore, issuer: TokenIssuer, protection: ServiceProtection | None = None,
                        faults: FaultInjector | None = None, base: str = "/api/data/v9.2", *,
                        setup: DataverseSetup | None = None) -> Starlette:
    """A standalone app: Entra ID token endpoints plus the Web API (for tests and single-service use)."""
    return Starlette(routes=[*entra_routes(issuer), *dataverse_routes(store, issuer, protection, faults, base,
                                                                      setup=setup)])
