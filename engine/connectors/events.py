"""The Adobe I/O Events journal connector: Campaign's email events, page by page, from a stored position.

200 pages carry events and a ``Link: <...since=...>; rel="next"`` (relative to the journal URL); 204
means nothing newer yet, so a read stops there. A 410 means the stored position is older than the
retention: events were lost. The connector says so loudly (``EventsLost`` on the first page after the
gap, and a log line) and resumes from the oldest event still retained, so the sync goes on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import urlencode

import httpx

from mapsync.engine.config import EventsSettings
from mapsync.engine.connectors.base import EventPage, EventsLost
from mapsync.engine.http import HttpClient

__all__ = ["EventsConnector"]

log = logging.getLogger("mapsync.events")
_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?', re.IGNORECASE)


class EventsConnector:
    """Reads the journal through one ``HttpClient`` (IMS bearer token + ``x-api-key``)."""

    def __init__(self, settings: EventsSettings, http: HttpClient) -> None:
        self.settings = settings
        self.http = http
        self.last_gap: EventsLost | None = None  # set when the last read had to skip expired events

    async def read(self, since: str | None = None, limit: int | None = None, *,
                   last_event_time: datetime | None = None, max_pages: int | None = None) -> AsyncIterator[EventPage]:
        """Pages of events after ``since`` (from the oldest retained when None) until the journal is drained.

        ``last_event_time`` (the timestamp of the last event already processed) lets a 410 say how many
        days of events were lost.
        """
        self.last_gap = None
        limit = limit or self.settings.page_size
        url: str | None = self._url(since, limit)
        position = since
        pages = 0
        while url is not None and (max_pages is None or pages < max_pages):
            resp = await self.http.request("GET", url, accept=(204, 410))
            if resp.status_code == 204:
                return
            if resp.status_code == 410:
                if since is None or self.last_gap is not None:
                    return  # the oldest position expired while we read: nothing more to do this time
                self.last_gap = EventsLost(
                    "events older than retention were lost: position expired", gap_days=None, resume_from=None)
                log.error("events older than retention were lost; resuming from the oldest available event",
                          extra={"event": "events.lost", "position_expired": True})
                url = self._url(None, limit)
                continue
            body = resp.json()
            events = tuple(body.get("events") or ())
            page_info = body.get("_page") or {}
            position = page_info.get("last") or (events[-1].get("position") if events else position)
            if self.last_gap is not None and pages == 0 and events:
                self._describe_gap(events[0], last_event_time, position)
            pages += 1
            yield EventPage(events, position)
            url = self._next(resp)

    def _describe_gap(self, first: dict, last_event_time: datetime | None, position: str | None) -> None:
        assert self.last_gap is not None
        stamp = (first.get("event") or {}).get("timestamp")
        gap_days = None
        if last_event_time is not None and isinstance(stamp, str):
            try:
                first_time = datetime.fromisoformat(stamp.replace("Z", "+00:00").replace(" ", "T"))
                gap_days = round((first_time - last_event_time).total_seconds() / 86400, 1)
            except ValueError:
                gap_days = None
        text = f"{gap_days} days gap" if gap_days is not None else "gap of unknown length"
        self.last_gap = EventsLost(f"events older than retention were lost: {text}", gap_days=gap_days,
                                   resume_from=first.get("position"))
        log.error(str(self.last_gap), extra={"event": "events.lost", "gap_days": gap_days})

    def _url(self, since: str | None, limit: int) -> str:
        params = {"limit": str(limit)}
        if since is not None:
            params["since"] = since
        return f"{self.settings.journal_url}?{urlencode(params)}"

    def _next(self, resp: httpx.Response) -> str | None:
        for value in resp.headers.get_list("link"):
            match = _NEXT.search(value)
            if match:
                return str(httpx.URL(self.settings.journal_url).join(match.group(1)))
        return None
