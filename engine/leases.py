"""One runner at a time per flow, and per opt-out rule, of an environment: taking, keeping and giving back leases.

A lease lives in the state store (``acquire_lease`` / ``renew_lease`` / ``release_lease``) and ends by itself
after its TTL unless renewed, so a runner that dies frees what it held. A runner killed on this host is
known to be gone at once (its pid no longer runs): its leases are taken over without waiting for the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

from mapsync.engine.errors import LeaseHeld
from mapsync.engine.state.base import StateStore

__all__ = ["LEASE_TTL_SECONDS", "held", "holder_is_gone", "take"]

log = logging.getLogger("mapsync.leases")

LEASE_TTL_SECONDS = 300.0


async def take(store: StateStore, name: str, environment: str, holder: str, ttl: float = LEASE_TTL_SECONDS) -> None:
    """Take the lease on ``name``, or raise ``LeaseHeld`` when a live runner holds it."""
    try:
        await asyncio.to_thread(store.acquire_lease, name, environment, holder, ttl)
    except LeaseHeld as exc:
        other = getattr(exc, "holder", None)
        if not other or not holder_is_gone(other):
            raise
        # The runner that held it was killed on this machine: its lease would block for the whole TTL.
        log.warning("taking over the lease of %s from %s, which is no longer running", name, other,
                    extra={"event": "executor.lease_takeover", "flow": name})
        await asyncio.to_thread(store.release_lease, name, environment, other)
        await asyncio.to_thread(store.acquire_lease, name, environment, holder, ttl)


@contextlib.asynccontextmanager
async def held(store: StateStore, name: str, environment: str, holder: str,
               ttl: float = LEASE_TTL_SECONDS) -> AsyncIterator[None]:
    """The lease on ``name`` for the body's duration: taken (``LeaseHeld`` if a live runner has it), renewed
    every third of its TTL while the body runs, given back after."""
    await take(store, name, environment, holder, ttl)

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await asyncio.to_thread(store.renew_lease, name, environment, holder, ttl)
            except LeaseHeld as exc:
                log.error("lost the lease of %s: %s", name, exc, extra={"event": "lease.lost", "flow": name})
                return

    renewal = asyncio.create_task(renew())
    try:
        yield
    finally:
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        with contextlib.suppress(Exception):  # never mask the body's error; the TTL frees it anyway
            await asyncio.to_thread(store.release_lease, name, environment, holder)


def holder_is_gone(holder: str) -> bool:
    """A lease holder is ``host:pid:nonce``; on this host, a pid that no longer runs cannot hold anything."""
    host, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
