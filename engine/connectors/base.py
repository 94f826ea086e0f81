"""What the executor exchanges with every connector: pages of rows, write operations and their outcomes.

A connector never raises for one bad record: ``write`` returns one ``WriteOutcome`` per ``WriteOp``, in
the same order, with ``transient=True`` when trying the same record again later may succeed. Whole-call
failures (service unreachable, credentials) still raise ``ConnectorError`` / ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mapsync.engine.errors import ConnectorError, SyncError

__all__ = [
    "ChangePage",
    "ChangeTrackingExpired",
    "EventPage",
    "EventsLost",
    "Page",
    "WriteKind",
    "WriteOp",
    "WriteOutcome",
    "outcome_from_error",
]

WriteKind = Literal["upsert", "create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a read: the rows and where the next page is (None on the last page)."""

    rows: tuple[dict[str, Any], ...]
    next: str | None = None


@dataclass(frozen=True, slots=True)
class ChangePage:
    """One page of Dataverse changes. ``delta_link`` is set on the last page only: the next run's cursor."""

    rows: tuple[dict[str, Any], ...]
    deleted: tuple[str, ...] = ()
    delta_link: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """Journal events in order and the position after the last of them (the cursor to store once written)."""

    events: tuple[dict[str, Any], ...]
    position: str | None


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One record to write. ``ref`` is the caller's opaque id, echoed in the outcome.

    ``target_id``: the target's primary key when known (update, delete, upsert by id).
    ``alternate_key``: (column, value) that makes a create idempotent (Dataverse alternate key, e.g.
    the event id of an email activity).
    """

    op: WriteKind
    table: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    target_id: str | None = None
    alternate_key: tuple[str, str] | None = None
    ref: Any = None


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    ref: Any
    ok: bool
    target_id: str | None = None
    status: int | None = None
    code: str | None = None  # the service's own error code (Dataverse 0x..., Campaign error_code)
    message: str | None = None
    transient: bool = False


class ChangeTrackingExpired(SyncError):
    """The delta token is older than the table's change-tracking retention: do a full read instead."""

    def __init__(self, table: str, message: str) -> None:
        super().__init__(f"change tracking token of {table} expired: {message}")
        self.table = table


class EventsLost(SyncError):
    """The stored journal position is older than the retention: events in between are gone."""

    def __init__(self, message: str, *, gap_days: float | None, resume_from: str | None) -> None:
        super().__init__(message)
        self.gap_days = gap_days
        self.resume_from = resume_from


def outcome_from_error(ref: Any, error: ConnectorError, *, target_id: str | None = None) -> WriteOutcome:
    from mapsync.engine.errors import TransientError

    return WriteOutcome(ref=ref, ok=False, target_id=target_id, status=error.status, code=error.code,
                        message=str(error), transient=isinstance(error, TransientError))
