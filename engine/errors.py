"""The errors of the sync engine, re-exported from mapsync's one tree (``mapsync/errors.py``).

Connector errors keep what an operator needs to act: HTTP status, the service's own error code, the
request id, and the service name. Secrets never appear in any message.
"""

from __future__ import annotations

from mapsync.errors import (
    AuthRejected,
    ConfigError,
    ConnectorError,
    LeaseHeld,
    MapsyncError,
    RequestError,
    ServiceDown,
    StateError,
    SyncError,
    TerminalError,
    TransientError,
)

__all__ = [
    "AuthRejected",
    "ConfigError",
    "ConnectorError",
    "LeaseHeld",
    "MapsyncError",
    "RequestError",
    "ServiceDown",
    "StateError",
    "SyncError",
    "TerminalError",
    "TransientError",
]
