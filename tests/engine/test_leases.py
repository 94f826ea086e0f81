"""Leases: taken, renewed while held, given back; refused while a live runner holds one; taken over from a
runner that was killed on this host."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mapsync.engine import leases
from mapsync.engine.errors import LeaseHeld
from mapsync.engine.state import open_store

HOST = socket.gethostname()


def test_held_takes_renews_and_gives_back(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.sqlite'}")

    async def main() -> None:
        async with leases.held(store, "optout:email", "stage", f"{HOST}:{os.getpid()}:a", ttl=0.3):
            first = store.get_lease("optout:email", "stage")
            assert first is not None and first.holder.endswith(":a")
            with pytest.raises(LeaseHeld):  # another live runner (this very process) is refused
                await leases.take(store, "optout:email", "stage", f"{HOST}:{os.getpid()}:b")
            await asyncio.sleep(1.0)  # several thirds of the TTL: renewed meanwhile, still ours
            now = store.get_lease("optout:email", "stage")
            assert now is not None and now.holder == first.holder and now.expires_at > first.expires_at
        assert store.get_lease("optout:email", "stage") is None

    try:
        asyncio.run(main())
    finally:
        store.close()


def test_the_lease_of_a_killed_runner_on_this_host_is_taken_over(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    store = open_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    try:
        store.acquire_lease("contacts", "stage", f"{HOST}:{gone.stdout.strip()}:dead", 600)
        assert leases.holder_is_gone(f"{HOST}:{gone.stdout.strip()}:dead")
        asyncio.run(leases.take(store, "contacts", "stage", f"{HOST}:{os.getpid()}:new"))
        lease = store.get_lease("contacts", "stage")
        assert lease is not None and lease.holder.endswith(":new")
        assert not leases.holder_is_gone(f"other-host:{gone.stdout.strip()}:x")  # another host: cannot tell
    finally:
        store.close()
