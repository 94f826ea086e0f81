"""Fault injection shared by the emulated services: throttling, server errors, dropped connections,
slow replies and expired tokens, drawn from a seeded generator so a run can be replayed exactly; and the
one-shot faults of Campaign's bulk path (an SFTP upload whose connection drops, a refused signal, an import
that fails part-way), which fire on the next occasion after the profile is set and then are spent.

``FaultMiddleware`` wraps any ASGI app. Each service passes its own error-body builder, because the two
services disagree on the shape: Dataverse ``{"error":{"code","message"}}``, Campaign
``{"error_code","message"}``. A dropped connection sends the response head and then aborts: served by
uvicorn the client sees the socket close mid-response (httpx: ``RemoteProtocolError``), and in-process
through ``httpx.ASGITransport`` the same exception class reaches the client, so retry code is exercised
identically both ways.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import httpx

__all__ = ["DroppedConnection", "ErrorBodyBuilder", "FaultInjector", "FaultMiddleware", "FaultProfile"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (status, retry_after_seconds) -> JSON body of the service's error shape
ErrorBodyBuilder = Callable[[int, int], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """Probabilities (0..1, per request) of each fault. They are tried in a fixed order; at most one fires."""

    p_429: float = 0.0
    p_500: float = 0.0
    p_503: float = 0.0
    p_drop: float = 0.0
    p_slow: float = 0.0
    slow_seconds: float = 0.0
    p_token_expiry: float = 0.0
    # A token-expiry fault spares tokens younger than this: real tokens expire by age, and a service does not
    # refuse a token it issued a moment ago. 0 refuses even those (an application whose access was withdrawn).
    token_min_age_seconds: float = 5.0
    retry_after_seconds: int = 1
    seed: int = 0
    # One-shot faults of the bulk path (0 = off): the next SFTP upload loses its connection after this many
    # bytes; the next N signal triggers are refused with the 10-minute error; the next imported file stops
    # after this fraction of its rows, leaving the workflow in state "error".
    sftp_disconnect_after_bytes: int = 0
    refuse_signals: int = 0
    import_fail_fraction: float = 0.0

    NAMES: ClassVar[tuple[str, ...]] = ("none", "flaky", "hostile", "sftp_disconnect", "signal_refused",
                                        "import_failed")

    @classmethod
    def named(cls, name: str) -> FaultProfile:
        """``none`` (no faults), ``flaky`` (a few percent), ``hostile`` (roughly one request in four), or one
        bulk-path fault: ``sftp_disconnect`` (the next upload drops after 1 KiB), ``signal_refused`` (the next
        trigger answers 400), ``import_failed`` (the next imported file fails half-way)."""
        profiles = {
            "none": cls(),
            "flaky": cls(p_429=0.02, p_500=0.005, p_503=0.01, p_drop=0.005, p_slow=0.02, slow_seconds=0.2,
                         p_token_expiry=0.002, retry_after_seconds=1, seed=7),
            "hostile": cls(p_429=0.08, p_500=0.03, p_503=0.05, p_drop=0.03, p_slow=0.05, slow_seconds=0.5,
                           p_token_expiry=0.01, retry_after_seconds=1, seed=13),
            "sftp_disconnect": cls(sftp_disconnect_after_bytes=1024),
            "signal_refused": cls(refuse_signals=1),
            "import_failed": cls(import_fail_fraction=0.5),
        }
        try:
            return profiles[name]
        except KeyError:
            raise ValueError(f"unknown fault profile {name!r}; expected one of {', '.join(cls.NAMES)}") from None

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("p_") and not 0.0 <= getattr(self, f.name) <= 1.0:
                raise ValueError(f"{f.name} must be between 0 and 1")
        if not 0.0 <= self.import_fail_fraction <= 1.0:
            raise ValueError("import_fail_fraction must be between 0 and 1")
        if self.sftp_disconnect_after_bytes < 0 or self.refuse_signals < 0:
            raise ValueError("sftp_disconnect_after_bytes and refuse_signals must be 0 or more")


class FaultInjector:
    """Draws the fault for each request from ``profile`` with a generator seeded by ``profile.seed``.

    ``counts`` tallies injected faults by kind (``429``, ``500``, ``503``, ``drop``, ``slow``,
    ``token_expiry``, and the one-shot ``sftp_disconnect``, ``signal_refused``, ``import_failed``).
    ``set_profile`` swaps the profile at run time, reseeds and re-arms the one-shot faults.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("token_expiry", "drop", "429", "500", "503", "slow")

    def __init__(self, profile: FaultProfile | None = None) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.set_profile(profile or FaultProfile())

    @property
    def profile(self) -> FaultProfile:
        return self._profile

    def set_profile(self, profile: FaultProfile | str) -> None:
        if isinstance(profile, str):
            profile = FaultProfile.named(profile)
        with self._lock:
            self._profile = profile
            self._random = random.Random(profile.seed)
            self._shots = self._armed(profile)

    @staticmethod
    def _armed(profile: FaultProfile) -> Counter[str]:
        return Counter({"sftp_disconnect": int(profile.sftp_disconnect_after_bytes > 0),
                        "signal_refused": profile.refuse_signals,
                        "import_failed": int(profile.import_fail_fraction > 0)})

    def take(self, kind: str) -> bool:
        """Spend one shot of a one-shot fault (``sftp_disconnect``, ``signal_refused``, ``import_failed``):
        True when it fires now, counted like the others."""
        with self._lock:
            if self._shots[kind] <= 0:
                return False
            self._shots[kind] -= 1
            self.counts[kind] += 1
            return True

    def update(self, **changes: Any) -> None:
        """Change some fields of the current profile (keeps counting; reseeds only if ``seed`` changes)."""
        with self._lock:
            new = replace(self._profile, **changes)
            if new.seed != self._profile.seed:
                self._random = random.Random(new.seed)
            armed = self._armed(new)
            for kind, setting in _ONE_SHOT_FIELDS.items():  # a one-shot fault set again is armed again
                if setting in changes:
                    self._shots[kind] = armed[kind]
            self._profile = new

    def draw(self) -> str | None:
        """The fault for the next request, or None. One uniform draw per request keeps replays stable."""
        p = self._profile
        with self._lock:
            x = self._random.random()
        edge = 0.0
        for kind, prob in (("token_expiry", p.p_token_expiry), ("drop", p.p_drop), ("429", p.p_429),
                           ("500", p.p_500), ("503", p.p_503), ("slow", p.p_slow)):
            edge += prob
            if x < edge:
                with self._lock:
                    self.counts[kind] += 1
                return kind
        return None

    def __repr__(self) -> str:
        return f"FaultInjector(profile={self._profile!r}, counts={dict(self.counts)!r})"


# The profile field that arms each one-shot fault: setting it (even to its current value) arms the fault again.
_ONE_SHOT_FIELDS = {"sftp_disconnect": "sftp_disconnect_after_bytes", "signal_refused": "refuse_signals",
                    "import_failed": "import_fail_fraction"}


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised inside the app to abort a response after its head was sent (a connection dropped mid-reply)."""


class FaultMiddleware:
    """ASGI middleware applying ``injector`` to each HTTP request for which ``applies(scope)`` is true.

    ``on_token_expiry(min_age)`` is called for a token-expiry fault (typically ``issuer.expire_older_than``); the request
    then goes through, so the app itself answers 401 with its own real body.
    """

    def __init__(
        self,
        app: ASGIApp,
        injector: FaultInjector | None,
        error_body: ErrorBodyBuilder,
        *,
        on_token_expiry: Callable[[float], None] | None = None,
        applies: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.injector = injector
        self.error_body = error_body
        self.on_token_expiry = on_token_expiry
        self.applies = applies or (lambda scope: not scope.get("path", "").startswith("/_emulator"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.injector is None or not self.applies(scope):
            await self.app(scope, receive, send)
            return
        kind = self.injector.draw()
        if kind is None:
            await self.app(scope, receive, send)
        elif kind == "slow":
            await asyncio.sleep(self.injector.profile.slow_seconds)
            await self.app(scope, receive, send)
        elif kind == "token_expiry":
            if self.on_token_expiry is not None:
                self.on_token_expiry(self.injector.profile.token_min_age_seconds)
            await self.app(scope, receive, send)
        elif kind == "drop":
            await self._drop(send)
        else:
            await self._error(int(kind), send)

    async def _error(self, status: int, send: Send) -> None:
        retry_after = self.injector.profile.retry_after_seconds if self.injector else 1
        body = json.dumps(self.error_body(status, retry_after)).encode()
        headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        if status in (429, 503):
            headers.append((b"retry-after", str(retry_after).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _drop(self, send: Send) -> None:
        # Promise a body, deliver part of it, then abort: uvicorn closes the socket when the app raises
        # after the response started, which is exactly what a client sees when a proxy resets the line.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")]})
        await send({"type": "http.response.body", "body": b'{"value":[', "more_body": True})
        raise DroppedConnection("peer closed connection without sending complete message body (injected fault)")
