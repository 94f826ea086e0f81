"""Opaque bearer tokens for the emulated identity providers (Entra ID for Dataverse, IMS for Campaign).

A token stands for one registered client (an application user). Its client id is the "user" that
service-protection limits count against, as in Dataverse where each app user has its own budget.
Tokens are random and opaque: clients must not parse them, and nothing here ever prints one or a secret.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ClientCheck", "TokenIssuer"]


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    scope: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class ClientCheck:
    """Result of checking credentials: ``ok``, or which part was wrong (``unknown_tenant``,
    ``unknown_client``, ``bad_secret``)."""

    outcome: str

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class TokenIssuer:
    """Registers clients and issues/validates opaque tokens bound to a client id.

    ``clock`` returns seconds (``time.time`` by default) so tests can move time forward.
    """

    def __init__(self, lifetime_seconds: int = 3599, *, clock: Callable[[], float] = time.time) -> None:
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        # tenant (Entra) or organization (IMS) -> client id -> secret
        self._clients: dict[str, dict[str, str]] = {}

    # -- client registry -------------------------------------------------------------------------
    def register_client(self, tenant_or_org: str, client_id: str, secret: str) -> None:
        with self._lock:
            self._clients.setdefault(tenant_or_org, {})[client_id] = secret

    def has_tenant(self, tenant_or_org: str) -> bool:
        return tenant_or_org in self._clients

    def check_client(self, tenant_or_org: str, client_id: str, secret: str) -> ClientCheck:
        clients = self._clients.get(tenant_or_org)
        if clients is None:
            return ClientCheck("unknown_tenant")
        expected = clients.get(client_id)
        if expected is None:
            return ClientCheck("unknown_client")
        # Constant-time compare: the emulator should not teach timing shortcuts either.
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            return ClientCheck("bad_secret")
        return ClientCheck("ok")

    # -- tokens ----------------------------------------------------------------------------------
    def issue(self, client_id: str, scope: str) -> tuple[str, int]:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._grants[token] = _Grant(client_id, scope, self._clock() + self.lifetime_seconds)
            if len(self._grants) > 10_000:
                self._purge_expired()
        return token, self.lifetime_seconds

    def validate(self, token: str) -> str | None:
        """The client id the token was issued to, or None when unknown or expired."""
        grant = self._grants.get(token)
        if grant is None or grant.expires_at <= self._clock():
            return None
        return grant.client_id

    def expire_all(self) -> None:
        """Invalidate every issued token (fault injection: the next call gets a 401 and must refresh)."""
        with self._lock:
            self._grants.clear()

    def _purge_expired(self) -> None:
        now = self._clock()
        for token in [t for t, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[token]

    def __repr__(self) -> str:
        return f"TokenIssuer(lifetime_seconds={self.lifetime_seconds}, clients={sum(map(len, self._clients.values()))})"
