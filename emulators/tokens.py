"""Bearer tokens for the emulated identity providers (Entra ID for Dataverse, IMS for Campaign).

A token stands for one registered client (an application user). Its client id is the "user" that
service-protection limits count against, as in Dataverse where each app user has its own budget.
With a ``JwtSigner`` (Entra ID) a token is a signed JWT with the claims Microsoft puts in an app-only token;
without one (IMS) it is random and opaque. Nothing here ever prints a token or a secret.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapsync.emulators.jwt_signer import JwtSigner

__all__ = ["ClientCheck", "TokenCheck", "TokenIssuer"]


@dataclass(frozen=True, slots=True)
class _Grant:
    client_id: str
    scope: str
    expires_at: float
    issued_at: float = 0.0


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What a presented token is: ``client_id`` when valid, else ``problem`` (``missing``, ``expired``,
    ``invalid``) so a service can answer with the matching challenge."""

    client_id: str | None = None
    problem: str | None = None


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

    def __init__(self, lifetime_seconds: int = 3599, *, clock: Callable[[], float] = time.time,
                 signer: JwtSigner | None = None) -> None:
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self.signer = signer
        self._roles: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._grants: dict[str, _Grant] = {}
        # tenant (Entra) or organization (IMS) -> client id -> secret
        self._clients: dict[str, dict[str, str]] = {}

    # -- client registry -------------------------------------------------------------------------
    def register_client(self, tenant_or_org: str, client_id: str, secret: str, *, roles: tuple[str, ...] = ()) -> None:
        """``roles``: application roles granted to the client (they appear in its tokens' ``roles`` claim)."""
        with self._lock:
            self._clients.setdefault(tenant_or_org, {})[client_id] = secret
            self._roles[client_id] = roles

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
        now = self._clock()
        expires_at = now + self.lifetime_seconds
        if self.signer is None:
            token = secrets.token_urlsafe(48)
        else:
            tenant = next((t for t, clients in self._clients.items() if client_id in clients), "common")
            token = self.signer.access_token(tenant=tenant, client_id=client_id, scope=scope, issued_at=now,
                                             expires_at=expires_at, roles=self._roles.get(client_id, ()))
        with self._lock:
            self._grants[token] = _Grant(client_id, scope, expires_at, now)
            if len(self._grants) > 10_000:
                self._purge_expired()
        return token, self.lifetime_seconds

    def validate(self, token: str) -> str | None:
        """The client id the token was issued to, or None when unknown or expired."""
        return self.check(token).client_id

    def check(self, token: str) -> TokenCheck:
        """Whether ``token`` is valid now, and if not, why."""
        if not token:
            return TokenCheck(problem="missing")
        grant = self._grants.get(token)
        if grant is None:
            return TokenCheck(problem="invalid")
        if grant.expires_at <= self._clock():
            return TokenCheck(problem="expired")
        return TokenCheck(client_id=grant.client_id)

    def expire_all(self, *, older_than: float = 0.0) -> None:
        """Every issued token (at least ``older_than`` seconds old) expires now: the next call with it gets a 401
        and must renew it."""
        now = self._clock()
        with self._lock:
            self._grants = {t: replace(g, expires_at=min(g.expires_at, now)) if now - g.issued_at >= older_than else g
                            for t, g in self._grants.items()}

    def expire_older_than(self, seconds: float) -> None:
        """A token-expiry fault (``FaultProfile.token_min_age_seconds``): the tokens at least ``seconds`` old expire
        now. A client that sees a token renewed a moment ago refused rightly takes it as a configuration error."""
        self.expire_all(older_than=seconds)

    def _purge_expired(self) -> None:
        now = self._clock()
        for token in [t for t, g in self._grants.items() if g.expires_at <= now]:
            del self._grants[token]

    def __repr__(self) -> str:
        return f"TokenIssuer(lifetime_seconds={self.lifetime_seconds}, clients={sum(map(len, self._clients.values()))})"
