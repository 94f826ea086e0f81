"""The one HTTP layer every connector talks through: retries, backoff, Retry-After, limits, error mapping.

One ``HttpClient`` per service (d365, campaign, events). It owns one ``httpx.AsyncClient`` (connection
reuse, timeouts) and wraps each request in the policy the services ask of their clients:

- **Retry** of 429, 5xx and dropped connections, honouring ``Retry-After`` (seconds or an HTTP date),
  else exponential backoff with full jitter. Bounded twice: ``limits.max_retries`` per request and a
  global ``RetryBudget`` so a failing service is not hammered by every request at once.
- **Only what is safe to repeat** is repeated: GET/HEAD/PUT/DELETE/OPTIONS, and any request the caller marks
  ``idempotent=True`` (PATCH upsert by key, a ``$batch`` of such parts, a create made idempotent by an
  alternate key). Any other request is repeated only when it provably never reached the service: the
  connection could not be opened, or the service refused it unprocessed with 429 (see ``NOT_PROCESSED``).
- **Adaptive concurrency** (AIMD) under ``limits.concurrency``: halve on 429, +1 after N successes;
  an optional client-side request window (``limits.requests_per_window``); a 429 also pauses every new
  request of this client until its Retry-After has passed, because service protection limits count
  per user, not per connection.
- **401** renews the token and resends (counted in ``stats.refreshed_tokens``): once per refused token, at
  most ``MAX_TOKEN_REFRESHES`` times per request (a token renewed for this request can be revoked again
  before the resend arrives: a tenant rotating credentials, the emulators' token-expiry fault under
  concurrency). A 401 after renewal when the service never accepted a token of this client, or after the
  last renewal, raises ``AuthRejected``: a configuration error naming the credential's setting, never a
  record's failure (it would otherwise become a dead letter that no retry can fix).
- **Circuit breaker** (``Outage``): a service unreachable (no connection, TLS refused, timeouts, dropped
  connections, 502/503/504 without Retry-After) for ``limits.outage_seconds`` raises ``ServiceDown`` on
  every request of this client from then on, so every flow using it stops at its last acknowledged page
  instead of retrying each record for minutes; no backoff sleeps past that bound. A TLS certificate that
  is not trusted cannot heal by waiting: it trips the breaker at once.
- Every error leaves as ``TransientError`` / ``TerminalError`` with status, the service's error code and
  request id. Tokens never appear in a log line or a message; logged paths carry no query string.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import httpx

from mapsync.engine.config import ServiceLimits
from mapsync.engine.errors import AuthRejected, ConnectorError, ServiceDown, TerminalError, TransientError

__all__ = [
    "MAX_TOKEN_REFRESHES",
    "NOT_PROCESSED",
    "AdaptiveLimiter",
    "AttemptRecord",
    "HttpClient",
    "Outage",
    "RetryBudget",
    "TokenProvider",
    "WindowLimiter",
    "backoff_delay",
    "error_details",
    "error_from_status",
    "is_transient_status",
    "parse_retry_after",
]

log = logging.getLogger("mapsync.http")

# Methods HTTP defines as idempotent: repeating them leaves the same state.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Statuses with which a service says it did NOT process the request: Dataverse service protection and
# the Adobe I/O gateway reject throttled requests before executing them, so even a create may be repeated.
NOT_PROCESSED = frozenset({429})
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# A gateway answering these without Retry-After says the service behind it is not there.
OUTAGE_STATUSES = frozenset({502, 503, 504})
# Request-id headers of the services, most specific first.
REQUEST_ID_HEADERS = ("x-ms-service-request-id", "req_id", "x-request-id", "request-id")
# A Retry-After longer than this is not slept through: the caller gets the TransientError with it.
MAX_WAIT_SECONDS = 300.0
MAX_TOKEN_REFRESHES = 2
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@runtime_checkable
class TokenProvider(Protocol):
    """Gives bearer tokens. ``stale`` is a token the service just refused (401): renew unless already renewed."""

    async def token(self, *, stale: str | None = None) -> str: ...


# --------------------------------------------------------------------------------------------------
# Pure helpers (tested on their own)


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent/garbled."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def backoff_delay(attempt: int, rng: Callable[[], float], *, base: float = BACKOFF_BASE_SECONDS,
                  cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rng() * min(cap, base * (2 ** max(0, attempt - 1)))


def error_details(body: bytes | str | None, headers: Mapping[str, str] | None) -> tuple[str | None, str, str | None]:
    """(service error code, message, request id) from an error reply of any of the services we speak to.

    Dataverse: ``{"error": {"code", "message"}}``; Campaign: ``{"error_code", "message"}``;
    Entra ID / IMS: ``{"error", "error_description"}``.
    """
    code: str | None = None
    message = ""
    data: Any = None
    if body:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            message = text.strip()[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            code = _str_or_none(err.get("code"))
            message = str(err.get("message") or "")
        elif isinstance(err, str):
            code = err
            message = str(data.get("error_description") or "")
        if "error_code" in data:
            code = _str_or_none(data.get("error_code"))
            message = str(data.get("message") or message)
        elif not message and "message" in data:
            message = str(data["message"])
    request_id = None
    if headers is not None:
        lowered = {k.lower(): v for k, v in headers.items()}
        for name in REQUEST_ID_HEADERS:
            if lowered.get(name):
                request_id = lowered[name]
                break
    return code, message, request_id


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def error_from_status(service: str, method: str, path: str, status: int, body: bytes | str | None,
                      headers: Mapping[str, str] | None, *, retry_after: float | None = None) -> ConnectorError:
    """The ``TransientError``/``TerminalError`` for one HTTP error reply (also used for ``$batch`` parts)."""
    code, message, request_id = error_details(body, headers)
    text = f"{service}: {method} {path} -> HTTP {status}"
    if code:
        text += f" [{code}]"
    if message:
        text += f": {message}"
    if request_id:
        text += f" (request id {request_id})"
    cls = TransientError if is_transient_status(status) else TerminalError
    return cls(text, service=service, status=status, code=code, request_id=request_id, retry_after=retry_after)


# --------------------------------------------------------------------------------------------------
# Limiters and budget


class AdaptiveLimiter:
    """AIMD concurrency limit: at most ``limit`` requests in flight; halve on throttle, +1 after N successes.

    Only one halving per "generation": the requests that were already in flight when the limit was cut
    carry the old generation, so a burst of 429s from one overload cuts the limit once, not to 1.
    """

    def __init__(self, ceiling: int, *, initial: int | None = None, increase_after: int = 10) -> None:
        if ceiling < 1:
            raise ValueError("concurrency ceiling must be >= 1")
        self.ceiling = ceiling
        self.limit = min(ceiling, initial or ceiling)
        self.increase_after = max(1, increase_after)
        self.in_flight = 0
        self.max_in_flight = 0
        self.decreases = 0
        self._generation = 0
        self._successes = 0
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self) -> int:
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self._generation

    async def release(self, generation: int, *, throttled: bool = False, success: bool = False) -> None:
        cond = self._condition()
        async with cond:
            self.in_flight -= 1
            if throttled:
                if generation == self._generation:
                    self.limit = max(1, self.limit // 2)
                    self._generation += 1
                    self.decreases += 1
                self._successes = 0
            elif success:
                self._successes += 1
                if self._successes >= self.increase_after and self.limit < self.ceiling:
                    self.limit += 1
                    self._successes = 0
            cond.notify_all()


class WindowLimiter:
    """At most ``max_requests`` started in any sliding window of ``window`` seconds (client side)."""

    def __init__(self, max_requests: int, window: float, *, clock: Clock, sleep: Sleep) -> None:
        self.max_requests = max_requests
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()
        self._lock: asyncio.Lock | None = None

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # serialised so waiters are served in order
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.window:
                    self._starts.popleft()
                if len(self._starts) < self.max_requests:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + self.window - now)


class RetryBudget:
    """A global cap on retries: each request earns ``ratio`` of a retry, each retry spends one.

    Starts with ``reserve`` so short runs may retry freely; a long run against a failing service ends up
    retrying at most ``ratio`` times as often as it sends new requests. Throttling (429) is paid for by
    waiting, not from this budget: the service told us exactly when to come back.
    """

    def __init__(self, *, ratio: float = 0.5, reserve: float = 100.0) -> None:
        self.ratio = ratio
        self.cap = reserve
        self.balance = reserve

    def earn(self) -> None:
        self.balance = min(self.cap, self.balance + self.ratio)

    def spend(self) -> bool:
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of one request, for observers (tests, benchmarks, progress)."""

    request_no: int
    attempt: int
    method: str
    path: str
    sent_at: float  # the client's clock when the attempt was handed to the transport
    status: int | None  # None: no reply (connection error, timeout)
    error: str | None  # the httpx exception class name, when there was no reply
    retry_after: float | None
    wait: float | None  # seconds slept before the next attempt; None when not retried


@dataclass(slots=True)
class HttpStats:
    requests: int = 0
    attempts: int = 0
    retries: int = 0
    throttled: int = 0
    refreshed_tokens: int = 0
    accepted: int = 0  # successful replies: the service took this client's token at least once


# --------------------------------------------------------------------------------------------------
# Circuit breaker


def failure_kind(failure: httpx.TransportError) -> str:
    """What an operator checks first: DNS, refused, TLS not trusted, timeout, or a dropped connection."""
    if isinstance(failure, httpx.TimeoutException):
        return "timeout"
    if not isinstance(failure, httpx.ConnectError):
        return "connection dropped"
    cursor: BaseException | None = failure
    text = ""
    while cursor is not None:
        if isinstance(cursor, ssl.SSLCertVerificationError):
            return "TLS not trusted"
        if isinstance(cursor, socket.gaierror):
            return "DNS"
        if isinstance(cursor, ConnectionRefusedError):
            return "refused"
        text += f" {cursor}"
        cursor = cursor.__cause__ or cursor.__context__
    lowered = text.lower()
    if "certificate_verify_failed" in lowered or "certificate verify failed" in lowered:
        return "TLS not trusted"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return "DNS"
    if "refused" in lowered or "errno 111" in lowered:
        return "refused"
    return "connect failed"


# Failures that waiting cannot heal: the breaker opens on the first one.
PERMANENT_KINDS = frozenset({"TLS not trusted"})


class Outage:
    """The circuit breaker of one service: since when it has been unreachable, and whether it gave up.

    Any reply that shows the service is there (anything but 502/503/504 without Retry-After) closes the
    streak; ``trip`` opens the breaker for the rest of the run (``--watch`` builds new clients each round).
    """

    def __init__(self, service: str, host: str, bound_seconds: float, *, clock: Clock,
                 wall: Callable[[], float] = time.time) -> None:
        self.service = service
        self.host = host
        self.bound_seconds = bound_seconds
        self._clock = clock
        self._wall = wall
        self.since: float | None = None  # the client's clock at the first failure of the streak
        self.since_wall: float | None = None
        self.kind: str | None = None
        self.tripped: ServiceDown | None = None

    def failed(self, kind: str) -> None:
        if self.since is None:
            self.since, self.since_wall = self._clock(), self._wall()
        self.kind = kind

    def answered(self) -> None:
        self.since = self.since_wall = None
        self.kind = None

    def remaining(self) -> float:
        """Seconds left before the breaker opens (the streak's bound), or the bound when nothing failed."""
        if self.since is None:
            return self.bound_seconds
        return self.bound_seconds - (self._clock() - self.since)

    def trip(self) -> ServiceDown:
        if self.tripped is None:
            since = self.since_wall if self.since_wall is not None else self._wall()
            self.tripped = ServiceDown(self.service, self.host, self.kind or "unreachable", since)
            log.debug("%s", self.tripped, extra={"event": "http.service_down", "service": self.service,
                                                  "host": self.host, "kind": self.kind})
        return self.tripped


# --------------------------------------------------------------------------------------------------
# The client


class HttpClient:
    """Resilient async HTTP for one service. ``request`` returns a read ``httpx.Response`` or raises."""

    def __init__(
        self,
        service: str,
        limits: ServiceLimits,
        auth: TokenProvider | None,
        *,
        verify: bool | str | Path | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
        base_url: str = "",
        headers: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        budget: RetryBudget | None = None,
        increase_after: int = 10,
        observer: Callable[[AttemptRecord], None] | None = None,
    ) -> None:
        self.service = service
        self.limits = limits
        self.auth = auth  # the token provider, None for a service without one
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._observer = observer
        self.budget = budget or RetryBudget()
        self.limiter = AdaptiveLimiter(limits.concurrency, increase_after=increase_after)
        self.window = (
            WindowLimiter(limits.requests_per_window, limits.window_seconds, clock=clock, sleep=sleep)
            if limits.requests_per_window else None
        )
        self.stats = HttpStats()
        self._paused_until = 0.0
        self._numbers = itertools.count(1)
        if isinstance(verify, Path):
            verify = ssl.create_default_context(cafile=str(verify))
        elif isinstance(verify, str):
            verify = ssl.create_default_context(cafile=verify)
        self.outage = Outage(service, httpx.URL(base_url).netloc.decode("ascii") if base_url else service,
                             limits.outage_seconds, clock=clock)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(limits.timeout_seconds),
            limits=httpx.Limits(max_connections=limits.concurrency, max_keepalive_connections=limits.concurrency),
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def base_url(self) -> httpx.URL:
        return self._client.base_url

    def _path_of(self, url: str) -> str:
        """The URL path for logs and messages: never the query string (filters, keys, tokens live there)."""
        parsed = httpx.URL(url)
        if parsed.is_absolute_url:
            return parsed.path
        return self._client.base_url.path + parsed.path.lstrip("/")

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send with the retry policy. Statuses < 400 and those in ``accept`` are returned; others raise."""
        method = method.upper()
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        number = next(self._numbers)
        path = self._path_of(url)
        if not self._client.base_url.host:  # a client without a base URL (the events journal): name its host
            self.outage.host = httpx.URL(url).netloc.decode("ascii") or self.outage.host
        self.stats.requests += 1
        self.budget.earn()
        token: str | None = None
        refused: set[str | None] = set()  # tokens the service refused for this request
        attempt = retries = 0  # a token refresh is an attempt but not a retry
        while True:
            attempt += 1
            if self.outage.tripped is not None:
                raise self.outage.tripped
            await self._wait_for_pause()
            if self.window is not None:
                await self.window.acquire()
            if self.auth is not None:
                token = await self.auth.token()
            send_headers = dict(headers or {})
            if token is not None:
                send_headers["Authorization"] = f"Bearer {token}"
            generation = await self.limiter.acquire()
            sent_at = self._clock()
            self.stats.attempts += 1
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            throttled = False
            try:
                response = await self._client.request(
                    method, url, params=params, json=json, content=content, data=data, headers=send_headers
                )
            except httpx.TransportError as exc:  # connection refused/reset, timeouts, protocol errors
                failure = exc
            finally:
                throttled = response is not None and response.status_code == 429
                ok = response is not None and (response.status_code < 400 or response.status_code in accept)
                await self.limiter.release(generation, throttled=throttled, success=ok)

            outage_kind = self._outage_kind(response, failure)
            if outage_kind is None:
                self.outage.answered()
            else:
                self.outage.failed(outage_kind)
                if outage_kind in PERMANENT_KINDS:
                    raise self.outage.trip()
            if response is not None and response.status_code < 400:
                self.stats.accepted += 1

            if response is not None and (response.status_code < 400 or response.status_code in accept):
                self._observe(number, attempt, method, path, sent_at, response.status_code, None, None, None)
                return response

            if response is not None and response.status_code == 401 and self.auth is not None:
                self._observe(number, attempt, method, path, sent_at, 401, None, None, 0.0)
                if token in refused or len(refused) >= MAX_TOKEN_REFRESHES or (refused and not self.stats.accepted):
                    # Renewing did not help: the credentials, not the token's age, are what the service refuses.
                    raise self._auth_rejected(method, path, response)
                # The token may have expired or been revoked between issue and use: renew, resend at once.
                refused.add(token)
                self.stats.refreshed_tokens += 1
                await self.auth.token(stale=token)
                continue

            error, retriable, retry_after = self._classify(method, path, response, failure, safe)
            wait = None
            if outage_kind is not None and self.outage.remaining() <= 0:
                raise self.outage.trip() from failure
            if retriable and retries < self.limits.max_retries:
                if throttled:
                    self.stats.throttled += 1
                    wait = retry_after if retry_after is not None else backoff_delay(retries + 1, self._rng)
                    if retry_after is not None:
                        # Service protection counts per user: hold back every request of this client.
                        self._paused_until = max(self._paused_until, self._clock() + retry_after)
                elif self.budget.spend():
                    wait = retry_after if retry_after is not None else backoff_delay(retries + 1, self._rng)
                if wait is not None and wait > MAX_WAIT_SECONDS:
                    wait = None
                if wait is not None and outage_kind is not None:
                    wait = min(wait, self.outage.remaining())  # the breaker opens on time, not after a long nap
            self._observe(number, attempt, method, path, sent_at,
                          None if response is None else response.status_code,
                          None if failure is None else type(failure).__name__, retry_after, wait)
            if wait is None:
                raise error from failure
            retries += 1
            self.stats.retries += 1
            # While a service is down every request retries: one line each would bury what matters (the one
            # line per service the run prints when it stops). They show with -v.
            log.log(
                logging.DEBUG if outage_kind is not None else logging.WARNING,
                "%s %s %s failed (%s); retry %d in %.2fs",
                self.service, method, path,
                response.status_code if response is not None else type(failure).__name__,
                retries, wait,
                extra={
                    "event": "http.retry", "service": self.service, "method": method, "path": path,
                    "status": None if response is None else response.status_code,
                    "code": error.code, "attempt": attempt, "retry": retries, "wait": round(wait, 3),
                    "retry_after": retry_after, "request_id": error.request_id,
                },
            )
            await self._sleep(wait)

    def _classify(
        self, method: str, path: str, response: httpx.Response | None, failure: httpx.TransportError | None,
        safe: bool,
    ) -> tuple[ConnectorError, bool, float | None]:
        """(error to raise, may it be retried, Retry-After seconds)."""
        if response is None:
            assert failure is not None
            # Nothing reached the service when the connection could not even be opened.
            unsent = isinstance(failure, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
            kind = "timed out" if isinstance(failure, httpx.TimeoutException) else "connection failed"
            error = TransientError(
                f"{self.service}: {method} {path} {kind}: {type(failure).__name__}", service=self.service
            )
            return error, safe or unsent, None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        error = error_from_status(self.service, method, path, response.status_code, response.content,
                                  response.headers, retry_after=retry_after)
        transient = isinstance(error, TransientError)
        retriable = transient and (safe or response.status_code in NOT_PROCESSED)
        return error, retriable, retry_after

    @staticmethod
    def _outage_kind(response: httpx.Response | None, failure: httpx.TransportError | None) -> str | None:
        """What made this attempt a sign of an outage, or None when the service answered."""
        if failure is not None:
            return failure_kind(failure)
        assert response is not None
        if response.status_code in OUTAGE_STATUSES and response.headers.get("retry-after") is None:
            return f"HTTP {response.status_code}"
        return None

    def _auth_rejected(self, method: str, path: str, response: httpx.Response) -> AuthRejected:
        code, message, request_id = error_details(response.content, response.headers)
        setting = getattr(self.auth, "credential_setting", None) or f"{self.service}.client_secret"
        text = (f"{setting}: {self.service} refused a freshly renewed access token "
                f"({method} {path} -> HTTP 401{f' [{code}]' if code else ''}{f': {message}' if message else ''}"
                f"{f', request id {request_id}' if request_id else ''}); check the credentials and that the "
                "application has access to this organization")
        return AuthRejected(text, setting=setting)

    async def _wait_for_pause(self) -> None:
        while True:
            remaining = self._paused_until - self._clock()
            if remaining <= 0:
                return
            await self._sleep(remaining)

    def _observe(self, number: int, attempt: int, method: str, path: str, sent_at: float, status: int | None,
                 error: str | None, retry_after: float | None, wait: float | None) -> None:
        if self._observer is not None:
            self._observer(AttemptRecord(number, attempt, method, path, sent_at, status, error, retry_after, wait))
