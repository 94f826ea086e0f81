"""The SFTP storage of the emulated Campaign instance: an asyncssh server on loopback.

Adobe gives each Campaign instance SFTP storage that import workflows read files from (a "Transfer file"
activity) and write results to. The emulator serves one folder per emulator (a private temporary folder,
``root``) as the whole filesystem, with ``incoming/`` and ``outgoing/`` in it; a client cannot leave it
(asyncssh's ``chroot``). The host key is an ed25519 key generated per emulator, so a client must pin the
line ``host_key_line`` (what ``mapsync emulate --write-config`` writes) and cannot have pinned it before.
Login is by the emulator's throw-away password, or by a public key a test or an operator authorized
(``authorize``, or ``PUT /_emulator/sftp/keys``), as Campaign's Control Panel lets one add keys to the
instance's SFTP user.

The server runs its own event loop in a daemon thread, so it serves the same whether the HTTP side runs
in uvicorn's thread, in the foreground, or in-process under a test's event loop.

Fault ``sftp_disconnect`` (``FaultProfile.sftp_disconnect_after_bytes``): the next upload that writes past
that many bytes loses its connection (the bytes before stay in the partly written file, as on a real
server whose line drops).
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from mapsync.emulators.faults import FaultInjector

__all__ = ["INCOMING", "OUTGOING", "SftpAccess", "SftpServer"]

INCOMING = "incoming"
OUTGOING = "outgoing"
START_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SftpAccess:
    """How a client reaches the running server: what ``--write-config`` writes under ``campaign.sftp``."""

    host: str
    port: int
    username: str
    password: str
    host_key: str  # the server's public host key, one OpenSSH line ("ssh-ed25519 AAAA...")

    def __repr__(self) -> str:  # the password never in any output
        return f"SftpAccess(host={self.host!r}, port={self.port}, username={self.username!r})"


class _Session(asyncssh.SFTPServer):
    """One client's SFTP session, confined to the server's root; counts upload bytes for the fault."""

    def __init__(self, chan: asyncssh.SSHServerChannel, server: SftpServer) -> None:
        super().__init__(chan, chroot=str(server.root).encode())
        self._server = server
        self._written: dict[int, int] = {}

    def write(self, file_obj: object, offset: int, data: bytes) -> Any:
        faults = self._server.faults
        limit = faults.profile.sftp_disconnect_after_bytes if faults is not None else 0
        if limit:
            so_far = self._written.get(id(file_obj), 0)
            if so_far + len(data) > limit and faults is not None and faults.take("sftp_disconnect"):
                kept = max(0, limit - so_far)
                super().write(file_obj, offset, data[:kept])
                self.connection.abort()  # the line drops mid-upload: no reply, no clean close
                raise asyncssh.SFTPConnectionLost("connection dropped (injected fault sftp_disconnect)")
            self._written[id(file_obj)] = so_far + len(data)
        return super().write(file_obj, offset, data)

    def close(self, file_obj: object) -> Any:
        self._written.pop(id(file_obj), None)
        return super().close(file_obj)


class _Login(asyncssh.SSHServer):
    """Password or authorized-key login as the emulator's user; no shell, no forwarding (asyncssh's defaults)."""

    def __init__(self, server: SftpServer) -> None:
        self._server = server
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._server._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._server._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True  # every user must authenticate

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return (self._server.is_user(username)
                and hmac.compare_digest(password.encode(), self._server.password.encode()))

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return self._server.is_user(username) and key.public_data in self._server.authorized_keys


class SftpServer:
    """The SFTP server of one emulator: a root folder with ``incoming/`` and ``outgoing/``, a generated host
    key, and ``start``/``stop`` around a listener on loopback."""

    def __init__(self, *, username: str, password: str, faults: FaultInjector | None = None) -> None:
        self._tmp = tempfile.mkdtemp(prefix="mapsync-sftp-")
        self._remove = weakref.finalize(self, shutil.rmtree, self._tmp, True)  # the folder goes with the server
        self.root = Path(self._tmp).resolve()
        for folder in (INCOMING, OUTGOING):
            (self.root / folder).mkdir()
        self.username, self.password = username, password
        self.authorized_keys: set[bytes] = set()  # public keys (wire form) that may log in as ``username``
        self.faults = faults
        self._key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_line = self._key.export_public_key("openssh").decode("ascii").strip()
        self.host: str | None = None
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()

    def __repr__(self) -> str:
        return f"SftpServer(root={str(self.root)!r}, port={self.port})"

    @property
    def incoming(self) -> Path:
        return self.root / INCOMING

    @property
    def outgoing(self) -> Path:
        return self.root / OUTGOING

    def is_user(self, username: str) -> bool:
        return hmac.compare_digest(username.encode(), self.username.encode())

    def authorize(self, public_key_line: str) -> None:
        """Let the holder of this key log in as the emulator's user (an OpenSSH public key line); raises
        ``ValueError`` for a line that is not a public key."""
        try:
            key = asyncssh.import_public_key(public_key_line.strip())
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ValueError(f"not an OpenSSH public key line ({exc})") from None
        self.authorized_keys.add(key.public_data)

    def access(self) -> SftpAccess:
        if self.host is None or self.port is None:
            raise RuntimeError("the SFTP server is not running")
        return SftpAccess(self.host, self.port, self.username, self.password, self.host_key_line)

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port) in a thread of its own; the port. A busy port raises
        ``OSError`` with ``errno.EADDRINUSE`` before anything is served."""
        if self._thread is not None:
            return self.port or 0
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._acceptor = loop.run_until_complete(asyncssh.listen(
                    host, port, server_host_keys=[self._key], server_factory=lambda: _Login(self),
                    sftp_factory=lambda chan: _Session(chan, self), allow_scp=False, reuse_address=True))
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="mapsync-emulator-sftp")
        self._thread.start()
        if not ready.wait(START_TIMEOUT_SECONDS):
            raise OSError(errno.ETIMEDOUT, "the SFTP server did not start")
        if failure:
            self._thread = None
            raise failure[0]
        assert self._acceptor is not None
        self.host, self.port = host, self._acceptor.get_port()
        return self.port

    async def _shutdown(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        for conn in list(self._connections):
            conn.abort()
        if self._acceptor is not None:
            await self._acceptor.wait_closed()

    def stop(self) -> None:
        """Close the listener and every open connection; the files stay until ``cleanup``."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._thread = None
        self.port = None

    def cleanup(self) -> None:
        """Stop, then remove the served folder."""
        self.stop()
        self._remove()
