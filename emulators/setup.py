"""Setup switches: break, one at a time, what an integration's setup must get right (``PUT /_emulator/setup``).

``mapsync doctor`` checks an environment's setup against the live services; these switches make the emulated
services wrong in each of the ways it looks for, so that every finding can be shown and tested:

    {"application_user": "enabled" | "disabled" | "missing",
     "privileges": {"remove": ["prvReadContact", ...], "restore": [...]},
     "change_tracking": {"contact": false, "new_vehicle": null},        # null: as the snapshot says
     "key_status": {"acs_emailsend:acs_eventid_key": "Failed"},        # null: Active again
     "campaign_resources": {"remove": ["cusVehicle", "profile.cusSource"], "restore": [...]},
     "journal": "down" | "up",
     "clock_skew_seconds": 600}

The Dataverse switches live in ``dataverse/security.py``. The rest act here, in front of the services:
a removed Campaign resource answers 404 (``Unknown resource``) on its metadata and data paths, a removed
field is left out of its resource's ``resourceType`` metadata, a journal that is down answers 503 without
``Retry-After`` (assumed: the gateway's answer when the journal's backend is unavailable), and every reply
of a service carries a ``Date`` header (RFC 7231), the wall clock moved by ``clock_skew_seconds``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from mapsync.emulators.dataverse.security import APPLICATION_USER_STATES, KEY_STATUSES, DataverseSetup

__all__ = ["MAX_SKEW_SECONDS", "Setup", "SetupMiddleware"]

Scope = MutableMapping[str, Any]
MAX_SKEW_SECONDS = 86_400.0
_NAMESPACES = ("profileAndServices", "profileAndServicesExt")


@dataclass
class Setup:
    """Every setup switch of one emulator; ``update`` applies a ``PUT /_emulator/setup`` body."""

    dataverse: DataverseSetup = field(default_factory=DataverseSetup)
    campaign_removed: set[str] = field(default_factory=set)  # "resource" or "resource.field"
    journal_down: bool = False
    clock_skew_seconds: float = 0.0

    def reset(self) -> None:
        self.dataverse.reset()
        self.campaign_removed.clear()
        self.journal_down = False
        self.clock_skew_seconds = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.dataverse.as_dict(), "campaign_removed": sorted(self.campaign_removed),
                "journal": "down" if self.journal_down else "up", "clock_skew_seconds": self.clock_skew_seconds}

    def update(self, body: dict[str, Any]) -> None:
        """Apply ``body``; a value that is not understood raises ``ValueError`` before anything changes."""
        steps: list[Callable[[], None]] = []
        for name, value in body.items():
            steps.append(self._step(name, value))
        for step in steps:
            step()

    def _step(self, name: str, value: Any) -> Callable[[], None]:
        dv = self.dataverse
        if name == "application_user":
            if value not in APPLICATION_USER_STATES:
                raise ValueError(f"application_user must be one of {', '.join(APPLICATION_USER_STATES)}")
            return lambda: setattr(dv, "application_user", value)
        if name == "privileges":
            remove, restore = _remove_restore(name, value)
            return lambda: _apply(dv.removed_privileges, {p.lower() for p in remove}, {p.lower() for p in restore})
        if name == "campaign_resources":
            remove, restore = _remove_restore(name, value)
            return lambda: _apply(self.campaign_removed, set(remove), set(restore))
        if name == "change_tracking":
            tracking = _object(name, value, lambda v: v is None or isinstance(v, bool), "true, false or null")
            return lambda: _merge(dv.change_tracking, tracking)
        if name == "key_status":
            statuses = _object(name, value, lambda v: v is None or v in KEY_STATUSES,
                               f"one of {', '.join(KEY_STATUSES)} or null")
            if any(":" not in k for k in statuses):
                raise ValueError("key_status keys are table:key, e.g. acs_emailsend:acs_eventid_key")
            return lambda: _merge(dv.key_status, {k: (None if v == "Active" else v) for k, v in statuses.items()})
        if name == "messages":
            remove, restore = _remove_restore(name, value)
            if any(":" not in m for m in (*remove, *restore)):
                raise ValueError("messages are table:Message, e.g. acs_emailsend:CreateMultiple")
            return lambda: _apply(dv.removed_messages, set(remove), set(restore))
        if name == "reject_rows":
            rows = _object(name, value, lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
                           "a list of strings or null")
            return lambda: _merge(dv.rejected_rows, {t: None if v is None else set(v) for t, v in rows.items()})
        if name == "journal":
            if value not in ("up", "down"):
                raise ValueError("journal must be \"up\" or \"down\"")
            return lambda: setattr(self, "journal_down", value == "down")
        if name == "clock_skew_seconds":
            if isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > MAX_SKEW_SECONDS:
                raise ValueError(f"clock_skew_seconds must be a number from -{MAX_SKEW_SECONDS:.0f} to "
                                 f"{MAX_SKEW_SECONDS:.0f}")
            return lambda: setattr(self, "clock_skew_seconds", float(value))
        raise ValueError(f"unknown setup switch {name!r} (known: application_user, privileges, change_tracking, "
                         "key_status, campaign_resources, messages, reject_rows, journal, clock_skew_seconds)")

    # -- what the middleware asks ---------------------------------------------------------------------
    def removed_resource(self, path: str, organization: str) -> str | None:
        """The removed Campaign resource ``path`` addresses, if any."""
        parts = _campaign_parts(path, organization)
        if len(parts) >= 3 and parts[1] == "resourceType" and parts[2] in self.campaign_removed:
            return parts[2]
        if len(parts) >= 2 and parts[1] in self.campaign_removed:
            return parts[1]
        return None

    def removed_fields(self, path: str, organization: str) -> set[str]:
        """Fields to leave out of the ``resourceType`` metadata ``path`` asks for."""
        parts = _campaign_parts(path, organization)
        if len(parts) != 3 or parts[1] != "resourceType":
            return set()
        prefix = parts[2] + "."
        return {r[len(prefix):] for r in self.campaign_removed if r.startswith(prefix)}


def _campaign_parts(path: str, organization: str) -> list[str]:
    head = f"/{organization}/campaign/"
    if not path.startswith(head):
        return []
    parts = [p for p in path[len(head):].split("/") if p]
    return parts if parts and parts[0] in _NAMESPACES else []


def _remove_restore(name: str, value: Any) -> tuple[list[str], list[str]]:
    if not isinstance(value, dict) or set(value) - {"remove", "restore"}:
        raise ValueError(f"{name} must be {{\"remove\": [...], \"restore\": [...]}}")
    lists = [value.get("remove", []), value.get("restore", [])]
    if not all(isinstance(v, list) and all(isinstance(s, str) and s for s in v) for v in lists):
        raise ValueError(f"{name}.remove and {name}.restore must be lists of names")
    return lists[0], lists[1]


def _object(name: str, value: Any, valid: Callable[[Any], bool], expected: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and valid(v) for k, v in value.items()):
        raise ValueError(f"{name} must map names to {expected}")
    return value


def _apply(target: set[str], remove: set[str], restore: set[str]) -> None:
    target |= remove
    target -= restore


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


_SERVICE_PATH = re.compile(r"^/(api/data/|ims/|events/|[^/_][^/]*/(campaign/|oauth2/|v2\.0/|discovery/))")


class SetupMiddleware:
    """In front of every service: the Campaign and journal switches, and the ``Date`` header of each reply."""

    def __init__(self, app: Any, setup: Setup, organization: str, *, clock: Callable[[], float] = time.time) -> None:
        self.app, self.setup, self.organization, self.clock = app, setup, organization, clock

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not _SERVICE_PATH.match(path):
            await self.app(scope, receive, send)
            return
        date = formatdate(self.clock() + self.setup.clock_skew_seconds, usegmt=True).encode()
        if path.startswith("/events/") and self.setup.journal_down:
            await _reply(send, 503, {"error_code": "503", "message": "Service Unavailable"}, date)
            return
        removed = self.setup.removed_resource(path, self.organization)
        if removed is not None:
            await _reply(send, 404, {"error_code": "404", "message": f"Unknown resource: {removed}"}, date)
            return
        fields = self.setup.removed_fields(path, self.organization)
        if fields:
            await self._without_fields(scope, receive, send, fields, date)
            return

        async def dated(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _with_date(message.get("headers", []), date)
            await send(message)

        await self.app(scope, receive, dated)

    async def _without_fields(self, scope: Scope, receive: Any, send: Any, fields: set[str], date: bytes) -> None:
        start: MutableMapping[str, Any] = {}
        chunks: list[bytes] = []

        async def buffered(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, buffered)
        body = b"".join(chunks)
        if start.get("status") == 200:
            doc = json.loads(body)
            content = doc.get("content") if isinstance(doc, dict) else None
            if isinstance(content, dict):
                doc["content"] = {k: v for k, v in content.items()
                                  if k not in fields and not (isinstance(v, dict) and v.get("apiName") in fields)}
            body = json.dumps(doc).encode()
        headers = [(k, v) for k, v in _with_date(start.get("headers", []), date) if k.lower() != b"content-length"]
        await send({"type": "http.response.start", "status": start.get("status", 500),
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _with_date(headers: Any, date: bytes) -> list[tuple[bytes, bytes]]:
    return [*((k, v) for k, v in headers if k.lower() != b"date"), (b"date", date)]


async def _reply(send: Any, status: int, payload: dict[str, Any], date: bytes) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"date", date)]})
    await send({"type": "http.response.body", "body": body})
