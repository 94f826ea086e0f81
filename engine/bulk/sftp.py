"""The Campaign instance's SFTP storage: upload a load's files, read what the import workflow writes back.

The server must show the host key pinned in ``campaign.sftp.host_key``; any other key ends the connection
(asyncssh is given that one key as the only trusted one, never "accept any"). A file is uploaded as
``<name>.part`` and renamed once complete, so the workflow never picks up half a file; uploading the same name
again (after a crash) replaces it.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

from mapsync.engine.config import SftpSettings, load_private_key, private_key_problem
from mapsync.engine.errors import ConfigError, TransientError

__all__ = ["SftpStorage"]

# What one upload keeps in flight: asyncssh's own default sizes its blocks from the server's limits, which held
# over 40 MB of a 100,000-row file in memory at once; 16 requests of 128 KiB keep the loopback and a WAN link busy.
UPLOAD_BLOCK_BYTES = 128 * 1024
UPLOAD_REQUESTS = 16


class SftpStorage:
    def __init__(self, settings: SftpSettings, *, setting: str = "campaign.sftp") -> None:
        self.settings = settings
        self.setting = setting
        self._conn: Any = None
        self._sftp: Any = None

    async def __aenter__(self) -> SftpStorage:
        s = self.settings
        pinned = asyncssh.import_public_key(s.host_key)
        options: dict[str, Any] = {"known_hosts": ([pinned], [], []), "username": s.username}
        if s.password is not None:
            options.update(password=s.password.reveal(), client_keys=None)
        elif s.private_key is not None:
            try:
                key = load_private_key(s.private_key, s.passphrase)
            except (asyncssh.Error, ValueError, OSError):  # opened when the config loaded: changed since
                raise ConfigError(f"{self.setting}.private_key: {private_key_problem(s.private_key, s.passphrase)}",
                                  setting=f"{self.setting}.private_key") from None
            options.update(client_keys=[key], password=None)
        try:
            self._conn = await asyncssh.connect(s.host, s.port, **options)
            self._sftp = await self._conn.start_sftp_client()
        except asyncssh.HostKeyNotVerifiable:
            raise ConfigError(f"{self.setting}.host_key: the SFTP server {s.host}:{s.port} showed another host key "
                              "than the one pinned; check the key with the Campaign administrators before changing "
                              "it", setting=f"{self.setting}.host_key") from None
        except asyncssh.PermissionDenied:
            raise ConfigError(f"{self.setting}: the SFTP server {s.host}:{s.port} refused user {s.username!r}; check "
                              "the username and the password or private key", setting=self.setting) from None
        except (OSError, asyncssh.Error) as exc:
            raise TransientError(f"sftp: cannot reach {s.host}:{s.port} ({_why(exc)})", service="sftp") from None
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
        if self._conn is not None:
            self._conn.close()
            await self._conn.wait_closed()
        self._sftp = self._conn = None

    async def reconnect(self) -> None:
        """A new session after a dropped one (the server closed it mid-upload)."""
        await self.close()
        await self.__aenter__()

    async def upload(self, local: Path, name: str) -> None:
        remote = posixpath.join(self.settings.incoming, name)
        part = remote + ".part"
        if self._sftp is None:  # a reconnect that failed: try once more before giving up
            await self.__aenter__()
        try:
            await self._sftp.put(str(local), part, block_size=UPLOAD_BLOCK_BYTES, max_requests=UPLOAD_REQUESTS)
            if await self._sftp.exists(remote):
                await self._sftp.remove(remote)
            await self._sftp.rename(part, remote)
        except (OSError, asyncssh.Error) as exc:
            raise TransientError(f"sftp: uploading {name} failed ({_why(exc)})", service="sftp") from None

    async def read(self, name: str) -> bytes | None:
        """A file the workflow wrote to ``outgoing``; None while it is not there."""
        remote = posixpath.join(self.settings.outgoing, name)
        if self._sftp is None:
            await self.__aenter__()
        try:
            if not await self._sftp.exists(remote):
                return None
            async with self._sftp.open(remote, "rb") as handle:
                return bytes(await handle.read())
        except (OSError, asyncssh.Error) as exc:
            raise TransientError(f"sftp: reading {name} failed ({_why(exc)})", service="sftp") from None

    async def missing_folders(self) -> list[str]:
        """The folders of ``campaign.sftp`` (incoming, outgoing) the server does not have."""
        try:
            return [f for f in (self.settings.incoming, self.settings.outgoing) if not await self._sftp.isdir(f)]
        except (OSError, asyncssh.Error) as exc:
            raise TransientError(f"sftp: listing the folders failed ({_why(exc)})", service="sftp") from None


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "") or exc or type(exc).__name__)[:200]
