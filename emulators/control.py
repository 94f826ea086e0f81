"""Control endpoints under ``/_emulator/``: look at and change the emulated world as its users would.

    GET    /_emulator/                                    URLs, seed, row counts
    GET    /_emulator/state                               row counts per system and table
    GET    /_emulator/state/d365/{table}?offset&limit     Dataverse rows (wire names), paged
    GET    /_emulator/state/campaign/{resource}?offset&limit   Campaign rows with PKey, paged
    GET    /_emulator/state/journal?offset&limit          journal entries {position, event}, expired included
    POST   /_emulator/d365/{table}                        create a row as a CRM user (201 + row)
    PATCH  /_emulator/d365/{table}/{id}                   edit a row as a CRM user: modifiedon + version bump
    DELETE /_emulator/d365/{table}/{id}                   delete a row (a tombstone for change tracking)
    POST   /_emulator/campaign/profiles/{PKey}/opt-out    {"channel": "email"|"sms"|"phone"|"mail"|"fax"|"all"}
    POST   /_emulator/campaign/deliveries                 {"label", "campaign", "profiles": [PKey...] (default all)}
    PUT    /_emulator/faults                              {"profile": "none|flaky|hostile"} and/or FaultProfile fields
    PUT    /_emulator/limits                              Limits fields, e.g. {"campaign_requests": 100}
    GET    /_emulator/counters                            requests, statuses, 429s, faults injected
    POST   /_emulator/clock                               {"advance_seconds": N}: tokens, journal retention, dates
    POST   /_emulator/tokens/expire                       every issued token becomes invalid (401 next)
    GET    /_emulator/setup                               the setup switches as they are now
    PUT    /_emulator/setup                               break (or mend) the setup: application user, privileges,
                                                          change tracking, key status, SDK messages, rows a
                                                          plug-in refuses, Campaign resources, journal, clock
                                                          skew (emulators/setup.py)
    DELETE /_emulator/setup                               every switch back to a correct setup
    POST   /_emulator/reset                               back to the freshly seeded state
    POST   /_emulator/reload                              serve the snapshots as they are on disk now (also done
                                                          by itself, at most once a second, when a file changes)
    POST   /_emulator/generate                            {"table", "rows", "seed"?}: rows made from the table's
                                                          snapshot (types, lengths, option sets, lookups)

No authentication: the emulator listens on loopback only. Errors are ``{"error": "..."}`` (400/404).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mapsync.emulators.campaign.delivery import OPT_OUT_FIELDS, DeliveryRates
from mapsync.emulators.errors import EmulatorError

if TYPE_CHECKING:
    from mapsync.emulators.server import Emulator

__all__ = ["control_routes"]

MAX_PAGE = 5000
MAX_GENERATED = 1_000_000


class _Bad(EmulatorError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _page(request: Request) -> tuple[int, int]:
    try:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        raise _Bad("offset and limit must be integers") from None
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise _Bad(f"offset >= 0 and 1 <= limit <= {MAX_PAGE}")
    return offset, limit


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise _Bad("body is not JSON") from None
    if not isinstance(body, dict):
        raise _Bad("body must be a JSON object")
    return body


def control_routes(emu: Emulator) -> list[Route]:
    from mapsync.emulators.dataverse.errors import DataverseError

    dv = emu.dataverse
    adobe = emu.adobe

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _Bad as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            except DataverseError as exc:
                return JSONResponse({"error": exc.message, "code": exc.code}, status_code=exc.status)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc).strip("'\"")}, status_code=400)
        return endpoint

    def counts() -> dict[str, dict[str, int]]:
        return {
            "d365": {name: dv.store.count(name) for name in sorted(dv.store.tables)},
            "campaign": adobe.store.counts(),
            "journal": {"events": len(adobe.journal)},
        }

    async def index(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse({"seed": emu.seed, "contacts": emu.data.contacts, "urls": emu.urls(base), "state": counts()})

    async def state(request: Request) -> Response:
        return JSONResponse(counts())

    async def d365_rows(request: Request) -> Response:
        table = request.path_params["table"]
        if table not in dv.store.tables:
            raise _Bad(f"unknown Dataverse table {table!r}", 404)
        offset, limit = _page(request)
        rows = dv.store.rows_page(table, offset, limit)
        return JSONResponse({"table": table, "offset": offset, "count": dv.store.count(table), "rows": rows})

    async def campaign_rows(request: Request) -> Response:
        resource = request.path_params["resource"]
        if resource not in adobe.store.resources:
            raise _Bad(f"unknown Campaign resource {resource!r}", 404)
        offset, limit = _page(request)
        rows = [{"PKey": adobe.store.pkey(resource, rid), **data}
                for rid, data in adobe.store.dump(resource, offset=offset, limit=limit)]
        return JSONResponse({"resource": resource, "offset": offset, "count": adobe.store.count(resource), "rows": rows})

    async def journal_rows(request: Request) -> Response:
        offset, limit = _page(request)
        return JSONResponse({"offset": offset, "count": len(adobe.journal),
                             "events": adobe.journal.events(offset=offset, limit=limit)})

    async def d365_create(request: Request) -> Response:
        table = request.path_params["table"]
        return JSONResponse(dv.store.insert(table, await _body(request)), status_code=201)

    async def d365_update(request: Request) -> Response:
        p = request.path_params
        return JSONResponse(dv.store.update(p["table"], p["id"], await _body(request)))

    async def d365_delete(request: Request) -> Response:
        p = request.path_params
        dv.store.delete(p["table"], p["id"])
        return Response(status_code=204)

    async def opt_out(request: Request) -> Response:
        channel = (await _body(request)).get("channel", "email")
        if channel not in OPT_OUT_FIELDS:
            raise _Bad(f"channel must be one of {', '.join(OPT_OUT_FIELDS)}")
        pkey = request.path_params["pkey"]
        profile = adobe.campaign.opt_out(pkey, channel)
        if profile is None:
            raise _Bad(f"no profile {pkey}", 404)
        return JSONResponse({"PKey": pkey, **profile})

    async def deliver(request: Request) -> Response:
        body = await _body(request)
        pkeys = body.get("profiles")
        if pkeys is not None and not (isinstance(pkeys, list) and all(isinstance(k, str) for k in pkeys)):
            raise _Bad("profiles must be a list of PKeys")
        rates = DeliveryRates(**body["rates"]) if "rates" in body else None
        result = adobe.campaign.send_delivery(
            pkeys if pkeys is not None else adobe.campaign.all_profile_pkeys(),
            str(body.get("label", "Emulator delivery")), str(body.get("campaign", "Emulator campaign")), rates=rates)
        return JSONResponse(dataclasses.asdict(result))

    async def faults(request: Request) -> Response:
        body = await _body(request)
        name = body.pop("profile", None)
        if name is not None:
            emu.set_faults(str(name))
        if body:
            emu.dataverse_faults.update(**body)
            emu.adobe_faults.update(**body)
        return JSONResponse(dataclasses.asdict(emu.dataverse_faults.profile))

    async def limits(request: Request) -> Response:
        emu.set_limits(dataclasses.replace(emu.limits, **await _body(request)))
        return JSONResponse(dataclasses.asdict(emu.limits))

    async def counters(request: Request) -> Response:
        return JSONResponse(emu.counters())

    async def clock(request: Request) -> Response:
        seconds = (await _body(request)).get("advance_seconds", 0)
        if not isinstance(seconds, int | float) or seconds < 0:
            raise _Bad("advance_seconds must be a number >= 0")
        emu.clock.advance(float(seconds))
        return JSONResponse({"now": emu.clock.now().isoformat()})

    async def expire_tokens(request: Request) -> Response:
        dv.issuer.expire_all()
        adobe.issuer.expire_all()
        return Response(status_code=204)

    async def setup(request: Request) -> Response:
        if request.method == "PUT":
            emu.setup.update(await _body(request))
        elif request.method == "DELETE":
            emu.setup.reset()
        return JSONResponse(emu.setup.as_dict())

    async def reset(request: Request) -> Response:
        emu.reset()
        return Response(status_code=204)

    async def reload(request: Request) -> Response:
        from mapsync.dsl.schema import SchemaError

        try:
            return JSONResponse(emu.reload())
        except SchemaError as exc:
            raise _Bad(f"snapshots not reloaded: {exc}") from None

    async def sftp_keys(request: Request) -> Response:
        if emu.sftp is None:
            raise _Bad("this emulator serves no SFTP storage", 404)
        line = (await _body(request)).get("public_key")
        if not isinstance(line, str):
            raise _Bad('give {"public_key": "ssh-ed25519 AAAA..."} (an OpenSSH public key line)')
        try:
            emu.sftp.authorize(line)
        except ValueError as exc:
            raise _Bad(f"public_key is {exc}") from None
        return JSONResponse({"username": emu.sftp.username, "authorized_keys": len(emu.sftp.authorized_keys)})

    async def generate(request: Request) -> Response:
        body = await _body(request)
        table, rows, seed = body.get("table"), body.get("rows"), body.get("seed", emu.seed)
        if not isinstance(table, str) or table not in dv.store.tables:
            known = ", ".join(sorted(dv.store.tables))
            raise _Bad(f"table must name a Dataverse table of the snapshots ({known})", 404 if table else 400)
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= MAX_GENERATED:
            raise _Bad(f"rows must be a whole number from 0 to {MAX_GENERATED:,}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _Bad("seed must be a whole number")
        return JSONResponse({"table": table, "created": dv.generate(table, rows, seed=seed)}, status_code=201)

    return [
        Route("/_emulator/", guarded(index), methods=["GET"]),
        Route("/_emulator/state", guarded(state), methods=["GET"]),
        Route("/_emulator/state/d365/{table}", guarded(d365_rows), methods=["GET"]),
        Route("/_emulator/state/campaign/{resource}", guarded(campaign_rows), methods=["GET"]),
        Route("/_emulator/state/journal", guarded(journal_rows), methods=["GET"]),
        Route("/_emulator/d365/{table}", guarded(d365_create), methods=["POST"]),
        Route("/_emulator/d365/{table}/{id}", guarded(d365_update), methods=["PATCH"]),
        Route("/_emulator/d365/{table}/{id}", guarded(d365_delete), methods=["DELETE"]),
        Route("/_emulator/campaign/profiles/{pkey}/opt-out", guarded(opt_out), methods=["POST"]),
        Route("/_emulator/campaign/deliveries", guarded(deliver), methods=["POST"]),
        Route("/_emulator/faults", guarded(faults), methods=["PUT"]),
        Route("/_emulator/limits", guarded(limits), methods=["PUT"]),
        Route("/_emulator/counters", guarded(counters), methods=["GET"]),
        Route("/_emulator/clock", guarded(clock), methods=["POST"]),
        Route("/_emulator/tokens/expire", guarded(expire_tokens), methods=["POST"]),
        Route("/_emulator/setup", guarded(setup), methods=["GET", "PUT", "DELETE"]),
        Route("/_emulator/reset", guarded(reset), methods=["POST"]),
        Route("/_emulator/reload", guarded(reload), methods=["POST"]),
        Route("/_emulator/generate", guarded(generate), methods=["POST"]),
        Route("/_emulator/sftp/keys", guarded(sftp_keys), methods=["PUT"]),
    ]
