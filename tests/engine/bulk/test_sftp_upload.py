"""Uploading a load's file to the emulator's SFTP storage: the file arrives whole, and an upload holds a
bounded part of it in memory whatever its size (the runner's RSS must not grow with the chunk size)."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapsync.emulators.server import Emulator, Served, start_in_thread
from mapsync.engine.bulk.sftp import SftpStorage
from mapsync.engine.config import Secret, SftpSettings

FILE_BYTES = 48 * 1024 * 1024
HELD_AT_MOST = 16 * 1024 * 1024  # what the upload (client and the in-process server) may hold at once


@pytest.fixture(scope="module")
def served() -> Iterator[Emulator]:
    emulator = Emulator(seed=3, contacts=0)
    running: Served = start_in_thread(emulator)
    try:
        yield emulator
    finally:
        running.stop()


def test_a_large_file_arrives_whole_holding_a_bounded_part_of_it_in_memory(served: Emulator,
                                                                           tmp_path: Path) -> None:
    username, password = served.credentials.sftp_username, served.credentials.sftp_password
    settings = SftpSettings(host="127.0.0.1", port=served.sftp_port or 0, username=username,
                            host_key=served.sftp_host_key_line, password=Secret(password))
    local = tmp_path / "big.csv"
    local.write_bytes(os.urandom(FILE_BYTES))

    async def upload() -> int:
        async with SftpStorage(settings) as storage:
            tracemalloc.start()
            try:
                await storage.upload(local, "big.csv")
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    peak = asyncio.run(upload())
    assert (served.sftp_root / "incoming" / "big.csv").read_bytes() == local.read_bytes()
    assert peak < HELD_AT_MOST, f"the upload held {peak / 2**20:.0f} MB at once"
