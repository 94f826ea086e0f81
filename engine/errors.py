"""Errors of the sync engine, under mapsync's single root ``MapsyncError``.

    MapsyncError
    └── SyncError                     the engine could not do what was asked
        ├── ConfigError               mapsync.yaml, secrets or credentials are wrong: the user fixes a setting
        │   └── AuthRejected          a service refused a freshly renewed token: the credentials are wrong
        ├── StateError                the state store is unreadable, locked or from a newer version
        │   └── LeaseHeld             another runner holds the flow's lease
        ├── ServiceDown               a service stayed unreachable for the outage bound: the run stops
        ├── ConnectorError            a service answered with an error or could not be reached
        │   ├── TransientError        worth retrying: 429, 5xx, timeouts, dropped connections
        │   └── TerminalError         retrying cannot help: 400, 401 after refresh, 403, 404, 412
        └── SyncStepFailed            a stage of a run failed; wraps the cause with flow and record key

Connector errors keep what an operator needs to act: HTTP status, the service's own error code, the
request id, and the service name. Secrets never appear in any message.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mapsync.dsl.errors import MapsyncError

__all__ = [
    "AuthRejected",
    "ConfigError",
    "ConnectorError",
    "LeaseHeld",
    "MapsyncError",
    "ServiceDown",
    "StateError",
    "SyncError",
    "SyncStepFailed",
    "TerminalError",
    "TransientError",
]


class SyncError(MapsyncError):
    """The engine could not do what was asked."""


class ConfigError(SyncError):
    """A setting is wrong or missing. ``setting`` names the key path to fix, e.g. ``environments.stage.d365.url``."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class AuthRejected(ConfigError):
    """A service refused an access token renewed for the request: not a record's fault, never a dead letter."""

    status = 401


class ServiceDown(SyncError):
    """A service has been unreachable for longer than its outage bound. Deliberately not a ``ConnectorError``:
    connectors turn those into one record's failure, while this stops every flow using the service at its
    last acknowledged page (records not written stay waiting for the next run)."""

    def __init__(self, service: str, host: str, kind: str, since: float) -> None:
        self.service, self.host, self.kind, self.since = service, host, kind, since
        stamp = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%S UTC")
        hint = "; set ca_file to the CA bundle that signed its certificate" if kind == "TLS not trusted" else ""
        super().__init__(f"{service} at {host} unreachable since {stamp}: {kind}{hint}")


class StateError(SyncError):
    """The state store cannot be used as it is."""


class LeaseHeld(StateError):
    """Another runner holds the lease on a flow of this environment."""


class ConnectorError(SyncError):
    """A service answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        service: str,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.status = status
        self.code = code
        self.request_id = request_id
        self.retry_after = retry_after


class TransientError(ConnectorError):
    """Retrying later may succeed (429, 5xx, timeouts, dropped connections)."""


class TerminalError(ConnectorError):
    """Retrying cannot help; the request or the record must change."""


class SyncStepFailed(SyncError):
    """A stage of a run failed for one flow (and, where known, one record)."""

    def __init__(self, message: str, *, step: str, flow: str, record_key: str | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.flow = flow
        self.record_key = record_key
