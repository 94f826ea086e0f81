"""Service-protection limits per user over a sliding window, as Dataverse enforces them (and, with the
execution-time limit switched off, as a plain requests-per-window + concurrency limit for Campaign).

Dataverse defaults: 6000 requests, 1,200,000 ms of combined execution time, 52 concurrent requests, per
user, in a 300 s sliding window; exceeding one answers 429 with ``Retry-After`` and the codes
0x80072322 (requests), 0x80072321 (execution time), 0x80072326 (concurrency).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ServiceProtection", "Throttle"]

# Messages as Dataverse words them (learn.microsoft.com, "Service protection API limits").
_MESSAGES = {
    "requests": "Number of requests exceeded the limit of {limit} over time window of {window} seconds.",
    "execution": "Combined execution time of incoming requests exceeded limit of {limit:,} milliseconds over time "
    "window of {window} seconds. Decrease number of concurrent requests or reduce the duration of requests "
    "and try again later.",
    "concurrency": "Number of concurrent requests exceeded the limit of {limit}.",
}
_CODES = {"requests": "0x80072322", "execution": "0x80072321", "concurrency": "0x80072326"}
# (assumed) Dataverse does not document the Retry-After it sends for the concurrency limit; one second
# is what a finishing request typically frees.
CONCURRENCY_RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class Throttle:
    """A 429 decision: which limit (``requests``/``execution``/``concurrency``), the Dataverse error code and
    message, and the whole seconds the client must wait."""

    kind: str
    code: str
    message: str
    retry_after: int


@dataclass
class _UserWindow:
    starts: deque[float] = field(default_factory=deque)
    executions: deque[tuple[float, float]] = field(default_factory=deque)
    execution_total: float = 0.0
    in_flight: int = 0


class ServiceProtection:
    """Per-user sliding-window limits. Call ``begin(user)`` before handling a request: it returns a
    ``Throttle`` (answer 429) or None (go ahead, then call ``end(user, elapsed_ms)`` when done).

    ``execution_ms=None`` turns the execution-time limit off (Campaign); ``clock`` returns seconds.
    """

    def __init__(
        self,
        requests: int | None = 6000,
        execution_ms: int | None = 1_200_000,
        concurrency: int | None = 52,
        window_seconds: float = 300,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests = requests
        self.execution_ms = execution_ms
        self.concurrency = concurrency
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._users: dict[str, _UserWindow] = {}
        self.throttled: dict[str, int] = {"requests": 0, "execution": 0, "concurrency": 0}

    def begin(self, user: str) -> Throttle | None:
        now = self._clock()
        with self._lock:
            w = self._users.setdefault(user, _UserWindow())
            self._prune(w, now)
            if self.concurrency is not None and w.in_flight >= self.concurrency:
                return self._throttle("concurrency", self.concurrency, CONCURRENCY_RETRY_AFTER_SECONDS)
            if self.requests is not None and len(w.starts) >= self.requests:
                # The window frees a slot when its oldest request leaves it.
                wait = w.starts[len(w.starts) - self.requests] + self.window_seconds - now
                return self._throttle("requests", self.requests, wait)
            if self.execution_ms is not None and w.execution_total >= self.execution_ms:
                return self._throttle("execution", self.execution_ms, self._execution_wait(w, now))
            w.starts.append(now)
            w.in_flight += 1
            return None

    def end(self, user: str, elapsed_ms: float) -> None:
        now = self._clock()
        with self._lock:
            w = self._users.setdefault(user, _UserWindow())
            w.in_flight = max(0, w.in_flight - 1)
            if self.execution_ms is not None:
                w.executions.append((now, elapsed_ms))
                w.execution_total += elapsed_ms

    def charge(self, user: str, elapsed_ms: float) -> None:
        """Add execution time without a request (e.g. the parts of a ``$batch``, *assumed* to count)."""
        if self.execution_ms is None:
            return
        with self._lock:
            w = self._users.setdefault(user, _UserWindow())
            w.executions.append((self._clock(), elapsed_ms))
            w.execution_total += elapsed_ms

    def remaining(self, user: str) -> tuple[int | None, float | None]:
        """(requests left, execution ms left) in the current window, for the x-ms-ratelimit-* headers."""
        now = self._clock()
        with self._lock:
            w = self._users.setdefault(user, _UserWindow())
            self._prune(w, now)
            req = None if self.requests is None else max(0, self.requests - len(w.starts))
            exe = None if self.execution_ms is None else max(0.0, self.execution_ms - w.execution_total)
            return req, exe

    def reset(self) -> None:
        with self._lock:
            self._users.clear()

    def _prune(self, w: _UserWindow, now: float) -> None:
        horizon = now - self.window_seconds
        while w.starts and w.starts[0] <= horizon:
            w.starts.popleft()
        while w.executions and w.executions[0][0] <= horizon:
            w.execution_total -= w.executions.popleft()[1]

    def _execution_wait(self, w: _UserWindow, now: float) -> float:
        # Wait until enough of the oldest execution time has left the window to fall under the limit.
        total = w.execution_total
        for stamp, ms in w.executions:
            total -= ms
            if total < (self.execution_ms or 0):
                return stamp + self.window_seconds - now
        return self.window_seconds

    def _throttle(self, kind: str, limit: int, wait: float) -> Throttle:
        self.throttled[kind] += 1
        message = _MESSAGES[kind].format(limit=limit, window=int(self.window_seconds))
        return Throttle(kind, _CODES[kind], message, max(1, math.ceil(wait)))
