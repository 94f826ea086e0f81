"""A throw-away certificate authority for serving the emulators over TLS on loopback.

MSAL insists on an ``https`` authority, so the Entra emulator must speak TLS. ``trustme`` makes a CA and
leaf certificates in memory; this module writes them to a private temp dir because uvicorn and
``verify=<path>`` want files.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["ServerCert", "TestCA"]


@dataclass(frozen=True, slots=True)
class ServerCert:
    """Paths of one leaf certificate (chain included) and its private key."""

    certfile: Path
    keyfile: Path

    def ssl_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``uvicorn.Config`` / ``uvicorn.run``."""
        return {"ssl_certfile": str(self.certfile), "ssl_keyfile": str(self.keyfile)}


class TestCA:
    """A CA whose PEM clients trust (``ca_pem_path``) and which issues server certificates on demand."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, directory: Path | None = None) -> None:
        self._ca = trustme.CA()
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="mapsync-ca-")
        self.directory = Path(directory) if directory is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_pem_path = self.directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_pem_path))
        self._issued: dict[str, ServerCert] = {}

    def server_cert_for(self, host: str = "127.0.0.1") -> ServerCert:
        """A leaf certificate for ``host`` (an IP or a DNS name, with ``localhost`` always included)."""
        if host not in self._issued:
            identities = [host] if host == "localhost" else [host, "localhost"]
            leaf = self._ca.issue_cert(*identities)
            safe = host.replace(":", "_").replace("/", "_")
            certfile = self.directory / f"{safe}.crt"
            keyfile = self.directory / f"{safe}.key"
            # The chain (leaf + CA) goes in one file so that clients can build the path from the leaf.
            certfile.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(str(keyfile))
            keyfile.chmod(0o600)
            self._issued[host] = ServerCert(certfile, keyfile)
        return self._issued[host]

    def ssl_kwargs(self, host: str = "127.0.0.1") -> dict[str, str]:
        """uvicorn TLS settings (``ssl_certfile``/``ssl_keyfile``) for a server on ``host``."""
        return self.server_cert_for(host).ssl_kwargs()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __repr__(self) -> str:
        return f"TestCA(ca_pem_path={str(self.ca_pem_path)!r})"
