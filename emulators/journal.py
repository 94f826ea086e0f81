"""The Adobe I/O Events journal that Campaign's email events (send, open, click, bounce) are read from.

Wire behaviour, as Adobe documents the Journaling API (PROTOCOLS.md §5):

- ``GET <journal>?limit=N[&since=<position>]`` -> 200 ``{"events": [{"position", "event"}], "_page":
  {"last", "count"}}`` and ``Link: </events/...?since=<last>[&limit=N]>; rel="next"`` (a *relative* URL,
  as the real service sends; clients resolve it against the journal URL).
- Nothing newer than ``since`` -> 204 with ``retry-after: 10`` and two Link headers, ``rel="next"`` (the
  same position again) and ``rel="validate"``.
- No ``since``: the oldest events still retained. ``latest=true``: jump to the end (204 unless events
  arrive at that instant).
- A position whose event is older than the retention (7 days by default) -> ``410 Gone`` with the text
  ``Events at position <p> have expired.``

The event payload is an *assumption* (no public source fixes what Adobe's Campaign integration puts in
it); ``build_event`` below is the ONE place that decides it, following PROTOCOLS.md §5 and the
``schemas/snapshots/campaign/events.*.json`` snapshots.

Events live in a private temporary SQLite file, so a delivery to 1,000,000 profiles does not sit in
Python objects; positions are opaque strings derived from the event's sequence number.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

__all__ = [
    "DEFAULT_LIMIT",
    "EVENT_KINDS",
    "RETRY_AFTER_SECONDS",
    "Clock",
    "Journal",
    "JournalPage",
    "build_event",
    "event_timestamp",
    "journal_routes",
]

EVENT_KINDS = ("send", "open", "click", "bounce")
RETRY_AFTER_SECONDS = 10  # fact: the documented 204 carries "retry-after: 10"
DEFAULT_LIMIT = 100  # assumed: the real journal has "no pre-defined upper limit"; we need some bound
MAX_LIMIT = 10_000  # assumed


class Clock:
    """Wall-clock time that tests (and the control endpoints) can move forward, never back."""

    def __init__(self, start: datetime | None = None) -> None:
        self._offset = 0.0
        self._fixed = start.timestamp() if start is not None else None

    def time(self) -> float:
        base = self._fixed if self._fixed is not None else time.time()
        return base + self._offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += seconds


def event_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, as Adobe I/O event payloads carry them."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def build_event(
    kind: str,
    *,
    event_id: str,
    at: datetime,
    profile: Mapping[str, Any],
    delivery: Mapping[str, Any],
    url: str | None = None,
    mirror_page_url: str | None = None,
    bounce_type: str | None = None,
    bounce_reason: str | None = None,
) -> dict[str, Any]:
    """The payload of one email event: exactly the fields of ``schemas/snapshots/campaign/events.<kind>.json``.

    Assumed shape (PROTOCOLS.md §5), with Adobe's XDM names inside ``delivery``. ``profile`` gives
    ``PKey``, ``externalId``, ``email``; ``delivery`` gives ``id``, ``label``, ``campaign`` and
    optionally ``campaign_id`` and ``broadlog_id``.
    """
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    event: dict[str, Any] = {
        "id": event_id,
        "type": kind,
        "timestamp": event_timestamp(at),
        "profile": {
            "PKey": profile.get("PKey"),
            "externalId": profile.get("externalId") or None,
            "email": profile.get("email") or None,
        },
        "delivery": {
            "deliveryID": delivery["id"],
            "deliveryName": delivery["label"],
            "campaignID": delivery.get("campaign_id") or delivery["campaign"],
            "campaignName": delivery["campaign"],
            "broadlogID": delivery.get("broadlog_id"),
        },
        "channel": "email",
        "mirrorPageUrl": mirror_page_url,
    }
    if kind == "click":
        event["url"] = url
    if kind == "bounce":
        event["bounce"] = {"type": bounce_type or "hard", "reason": bounce_reason or ""}
    return event


@dataclass(frozen=True, slots=True)
class JournalPage:
    """What one journal read found. ``status`` is 200, 204 or 410; ``next_since`` feeds the Link header."""

    status: int
    events: tuple[tuple[str, str], ...] = ()  # (position, event JSON text)
    next_since: str | None = None
    expired_position: str | None = None


class Journal:
    """An ordered, append-only list of events with opaque positions and time-based retention."""

    def __init__(self, *, clock: Clock | None = None, retention: timedelta = timedelta(days=7), secret: str = "journal") -> None:
        self.clock = clock or Clock()
        self.retention = retention
        self._key = hashlib.sha256(secret.encode()).digest()[:16]
        self._lock = threading.RLock()
        self._db = self._open()
        self._last = 0

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect("", check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, at REAL NOT NULL, data TEXT NOT NULL)")
        return db

    def reset(self) -> None:
        with self._lock:
            self._db.close()
            self._db = self._open()
            self._last = 0

    # ---- positions ----------------------------------------------------------------------------
    def position(self, seq: int) -> str:
        tag = hashlib.blake2b(seq.to_bytes(8, "big"), key=self._key, digest_size=6).hexdigest()
        return f"mapsync:{seq:012x}:{tag}"

    def parse_position(self, position: str) -> int | None:
        """The sequence number a position names, or None when it is not one of ours."""
        parts = position.split(":")
        if len(parts) != 3 or parts[0] != "mapsync":
            return None
        try:
            seq = int(parts[1], 16)
        except ValueError:
            return None
        return seq if self.position(seq) == position else None

    # ---- writes -------------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> str:
        return self.extend([event])[-1]

    def extend(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Append events in order (one transaction); returns their positions."""
        at = self.clock.time()
        with self._lock:
            start = self._last + 1
            rows = [(start + i, at, json.dumps(e, ensure_ascii=False, separators=(",", ":"))) for i, e in enumerate(events)]
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO events (seq, at, data) VALUES (?, ?, ?)", rows)
            self._db.execute("COMMIT")
            self._last += len(rows)
            return [self.position(seq) for seq, _, _ in rows]

    # ---- reads --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._last

    @property
    def last_position(self) -> str | None:
        return self.position(self._last) if self._last else None

    def _oldest_retained(self) -> int:
        """The first sequence number whose event has not expired (``_last + 1`` when none)."""
        cutoff = self.clock.time() - self.retention.total_seconds()
        with self._lock:
            found = self._db.execute("SELECT MIN(seq) FROM events WHERE at >= ?", (cutoff,)).fetchone()[0]
        return int(found) if found is not None else self._last + 1

    def read(self, *, since: str | None = None, limit: int | None = None, latest: bool = False) -> JournalPage:
        """One batch after ``since`` (or from the oldest retained event). Raises ValueError on a bad position."""
        limit = max(1, min(limit or DEFAULT_LIMIT, MAX_LIMIT))
        oldest = self._oldest_retained()
        if latest:
            return JournalPage(204, next_since=self.last_position)
        if since is None:
            after = oldest - 1
        else:
            seq = self.parse_position(since)
            if seq is None or seq > self._last:
                raise ValueError(f"invalid position {since}")
            if seq < oldest:
                return JournalPage(410, expired_position=since)
            after = seq
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        if not rows:
            return JournalPage(204, next_since=since if since is not None else self.last_position)
        events = tuple((self.position(int(seq)), data) for seq, data in rows)
        return JournalPage(200, events=events, next_since=events[-1][0])

    def events(self, *, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Raw dump for the control endpoints: ``[{"position", "event"}]`` by sequence, expired included."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, data FROM events ORDER BY seq LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [{"position": self.position(int(s)), "event": json.loads(d)} for s, d in rows]


def journal_routes(
    journal: Journal,
    issuer: Any,
    *,
    organization: str,
    integration: str,
    registration: str,
) -> list[Route]:
    """``GET /events/organizations/{org}/integrations/{int}/{registration}`` behind the I/O gateway check."""
    # Imported here: emulators.campaign imports this module (deliveries write the journal).
    from mapsync.emulators.campaign.errors import CampaignApiError, error_response
    from mapsync.emulators.ims import gateway_client

    path = f"/events/organizations/{organization}/integrations/{integration}/{registration}"

    def link(since: str | None, limit: str | None, suffix: str = "") -> str:
        params = "&".join(p for p in (f"since={since}" if since else "", f"limit={limit}" if limit else "") if p)
        return f"{path}{suffix}{'?' + params if params else ''}"

    async def endpoint(request: Request) -> Response:
        try:
            gateway_client(request, issuer)
        except CampaignApiError as exc:
            return error_response(exc)
        p = request.path_params
        if (p["org"], p["integration"], p["registration"]) != (organization, integration, registration):
            return JSONResponse({"error_code": "404", "message": "Unknown event registration"}, status_code=404)
        raw_limit = request.query_params.get("limit")
        if raw_limit is not None and (not raw_limit.isdigit() or int(raw_limit) < 1):
            return PlainTextResponse("limit must be a positive integer", status_code=400)
        since = request.query_params.get("since")
        latest = request.query_params.get("latest", "").lower() == "true"
        try:
            page = journal.read(since=since, limit=int(raw_limit) if raw_limit else None, latest=latest)
        except ValueError:
            return PlainTextResponse(f"Invalid position {since}", status_code=400)
        if page.status == 410:
            return PlainTextResponse(f"Events at position {page.expired_position} have expired.", status_code=410)
        if page.status == 204:
            headers = [
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"link", f'<{link(page.next_since, raw_limit)}>; rel="next"'.encode()),
                (b"link", f'<{link(page.next_since, raw_limit, "/validate")}>; rel="validate"'.encode()),
            ]
            response = Response(status_code=204)
            response.raw_headers.extend(headers)
            return response
        body = '{"events":[' + ",".join(
            f'{{"position":{json.dumps(pos)},"event":{data}}}' for pos, data in page.events
        ) + f'],"_page":{{"last":{json.dumps(page.next_since)},"count":{len(page.events)}}}}}'
        return Response(body, media_type="application/json",
                        headers={"Link": f'<{link(page.next_since, raw_limit)}>; rel="next"'})

    return [Route("/events/organizations/{org}/integrations/{integration}/{registration}", endpoint, methods=["GET"])]
