"""mapsync's one error tree: the root and one class per phase. Leaf errors live next to the code that
raises them (``dsl/schema.py``'s ``SchemaError``, ``dsl/functions.py``'s ``FunctionError``, ...) but
always under one of these.

    MapsyncError                      every error mapsync raises on purpose
    ├── DslError                      the mapping project is wrong: the user edits a file
    │   ├── CheckError                the project does not parse or check (carries every diagnostic)
    │   ├── ProjectPathError          a path given on the command line does not exist (dsl/project.py)
    │   ├── CompileError              a checked mapping could not be turned into code
    │   ├── DslSyntaxError            a mapping file does not parse where only its tables are wanted
    │   ├── FormatError               a tree cannot be written as text (dsl/formatter.py)
    │   └── SchemaError               a schema snapshot the checker reads is not valid (dsl/schema.py)
    ├── RecordError                   one record's data cannot go through a mapping: the record is
    │   │                             rejected, never the run (dsl/runtime.py)
    │   ├── FunctionError             a function could not compute a value (dsl/functions.py)
    │   ├── UnmappedValue             a replacement without `else` met a value it does not list
    │   └── FilterError               a `where` could not be evaluated (dsl/compiler.py)
    └── SyncError                     the engine could not do what was asked
        ├── ConfigError               mapsync.yaml, secrets or credentials are wrong: the user fixes a setting
        │   ├── AuthRejected          a service refused a freshly renewed token: the credentials are wrong
        │   └── EnvironmentMismatch   the state store belongs to another environment (engine/identity.py)
        ├── StateError                the state store is unreadable, locked or from a newer version
        │   └── LeaseHeld             another runner holds the flow's lease
        │       └── LeaseConflict     ... naming the holder (engine/state/base.py)
        ├── ChangeTrackingExpired, EventsLost   a source's position is gone (engine/connectors/base.py)
        ├── OptOutRuleError           an opt-out rule cannot run as written (engine/optout.py)
        ├── ServiceDown               a service stayed unreachable for the outage bound: the run stops
        ├── ConnectorError            a service answered with an error or could not be reached
        │   ├── TransientError        worth retrying: 429, 5xx, timeouts, dropped connections
        │   └── TerminalError         retrying cannot help: 400, 401 after refresh, 403, 404, 412
        └── RequestError              a connector was asked for something it cannot send (our bug or a bad
                                      record address), found before any request leaves

Errors raised for a user's input carry what is needed to act (``Diagnostic`` objects with locations, the
setting to fix, the service's status and request id) so the CLI prints one message, never a traceback.
Secrets never appear in any message. The emulators' fake-service errors are not part of this tree: the
emulated services raise their own (``emulators/errors.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mapsync.dsl.diagnostics import Diagnostic

__all__ = [
    "AuthRejected",
    "CheckError",
    "CompileError",
    "ConfigError",
    "ConnectorError",
    "DslError",
    "DslSyntaxError",
    "LeaseHeld",
    "MapsyncError",
    "RecordError",
    "RequestError",
    "ServiceDown",
    "StateError",
    "SyncError",
    "TerminalError",
    "TransientError",
]


class MapsyncError(Exception):
    """Root of every error mapsync raises deliberately."""


# ------------------------------------------------------------------------------------ the language


class DslError(MapsyncError):
    """A mapping project is wrong; ``diagnostics`` says where and why."""

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic] = ()) -> None:
        super().__init__(message)
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)


class CheckError(DslError):
    """A mapping parses but refers to unknown names or mixes types."""


class CompileError(DslError):
    """A checked mapping could not be compiled (an internal limit, never a user typo)."""


class DslSyntaxError(DslError):
    """A mapping file does not parse, where a command only needs its tables (``schema pull``): run
    ``mapsync validate`` for the diagnostics."""


# ---------------------------------------------------------------------------------------- records


class RecordError(MapsyncError):
    """A record's data cannot go through a mapping line. Raised inside generated code, caught by the
    compiled flow's wrapper and turned into ``Rejected``; it never leaves ``CompiledFlow``."""


# ----------------------------------------------------------------------------------------- engine


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


class RequestError(SyncError):
    """A connector was asked to build a request it cannot build (no record address, a reply it cannot
    read back): found before anything is sent, so no service was touched."""
