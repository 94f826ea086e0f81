"""A real asyncssh SFTP client for the emulator tests: uploads and reads with the host key pinned."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh

from mapsync.emulators.server import Emulator


def pinned(line: str) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """``known_hosts`` for asyncssh that trusts exactly the key of this OpenSSH line."""
    return [asyncssh.import_public_key(line)], [], []


async def _connect(emulator: Emulator, *, host_key: str | None = None,
                   password: str | None = None) -> asyncssh.SSHClientConnection:
    username, secret = emulator.sftp_credentials
    return await asyncssh.connect(
        "127.0.0.1", emulator.sftp_port, username=username, password=password or secret,
        known_hosts=pinned(host_key or emulator.sftp_host_key_line), client_keys=None, agent_path=None,
        preferred_auth="password", config=None)


async def _upload(emulator: Emulator, files: dict[str, bytes], folder: str, host_key: str | None) -> None:
    async with await _connect(emulator, host_key=host_key) as conn, conn.start_sftp_client() as sftp:
        for name, data in files.items():
            async with sftp.open(f"{folder}/{name}.part", "wb") as fh:
                await fh.write(data)
            await sftp.posix_rename(f"{folder}/{name}.part", f"{folder}/{name}")


def upload(emulator: Emulator, files: dict[str, bytes], *, folder: str = "/incoming",
           host_key: str | None = None) -> None:
    """Upload each file as ``<name>.part``, then rename it to ``<name>``, as the contract says."""
    asyncio.run(_upload(emulator, files, folder, host_key))


async def _listdir(emulator: Emulator, folder: str) -> list[str]:
    async with await _connect(emulator) as conn, conn.start_sftp_client() as sftp:
        return sorted(await sftp.listdir(folder))


def listdir(emulator: Emulator, folder: str) -> list[str]:
    return [n for n in asyncio.run(_listdir(emulator, folder)) if n not in (".", "..")]


async def _read(emulator: Emulator, path: str) -> bytes:
    async with await _connect(emulator) as conn, conn.start_sftp_client() as sftp, sftp.open(path, "rb") as fh:
        return bytes(await fh.read())


def read(emulator: Emulator, path: str) -> bytes:
    return asyncio.run(_read(emulator, path))


def local(emulator: Emulator, *parts: str) -> Path:
    return emulator.sftp_root.joinpath(*parts)
