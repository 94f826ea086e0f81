"""A gateway in front of the emulators for end-to-end tests: it records every request and can fail chosen ones.

A run given ``transport=gateway.transport()`` reaches every service through it (MSAL still talks to the
served Entra ID). A failed request is a 503 with ``Retry-After: 0``: the HTTP layer retries it at once and
gives up after its retries, as when a service keeps failing one kind of call. A rendezvous holds the first
requests of a kind until all of them arrived, so that two runners in one event loop surely overlap there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["Gateway", "is_lookup"]

Rule = Callable[[str, str, str], bool]  # (method, path, query) -> fail this request


def is_lookup(method: str, path: str, query: str) -> bool:
    """A Campaign lookup by key: ``GET .../profile/byExternalId?externalId_parameter=...``."""
    return method == "GET" and "/byExternalId" in path


class Gateway:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, str, str]] = []
        self.fail: Rule | None = None
        self.failed = 0
        self._meet: tuple[Rule, int, float] | None = None
        self._arrived = 0
        self._all_here: asyncio.Event | None = None

    def rendezvous(self, rule: Rule, parties: int = 2, timeout: float = 3.0) -> None:
        """Hold the first ``parties`` requests matching ``rule`` until all have arrived, or ``timeout`` passed."""
        self._meet, self._arrived, self._all_here = (rule, parties, timeout), 0, None

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self)

    def count(self, rule: Rule) -> int:
        return sum(1 for r in self.requests if rule(*r))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request = (scope["method"], scope["path"], scope.get("query_string", b"").decode())
            self.requests.append(request)
            if self._meet is not None and self._meet[0](*request) and self._arrived < self._meet[1]:
                self._all_here = self._all_here or asyncio.Event()
                self._arrived += 1
                if self._arrived == self._meet[1]:
                    self._all_here.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._all_here.wait(), self._meet[2])
            if self.fail is not None and self.fail(*request):
                self.failed += 1
                body = json.dumps({"error_code": "SVC-503", "message": "service unavailable"}).encode()
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"0")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
