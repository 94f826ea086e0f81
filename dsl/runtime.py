"""What compiled flows return, and the few helpers their generated code calls.

A compiled flow turns one source record (the source's wire row) into exactly one outcome value:

    Mapped     the target payload (target wire format), plus references the executor resolves
    Filtered   the record does not match the flow's ``where``
    Rejected   the record cannot be mapped: reason, flow, key, target field, ``file:line``

Nothing a record contains can make a compiled flow raise: data problems become ``Rejected``.

References: ``link(field, flow)`` and ``contact(key)`` need the state store (which target record did
another flow make for this source id?), so the generated code cannot resolve them. It returns a
``LinkRef`` / ``ContactRef`` naming the target path, and the executor writes the resolved value in the
target's own form (a Campaign link ``{"PKey": ...}``, a Dataverse ``...@odata.bind``).

Null and comparison rules the generated code follows (documented in docs/language.md):
- ``x == null`` is true iff x is null; ``x == y`` with one side null is false, ``!=`` its negation;
- ``<  <=  >  >=`` with a null on either side are false;
- in a boolean position (``where``, ``and``, ``or``, ``not``, ``if``) a null counts as false.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, NamedTuple

from mapsync.errors import RecordError

__all__ = [
    "ContactRef",
    "Filtered",
    "LinkRef",
    "Mapped",
    "Outcome",
    "RecordError",
    "Ref",
    "Rejected",
    "ReplaceMap",
    "UnmappedValue",
    "campaign_date",
    "campaign_datetime",
    "d365_date",
    "d365_datetime",
    "date_wire",
    "label_of",
    "read_date",
    "read_datetime",
    "text_of",
]

Line = tuple[str, int]  # (file, line) of a mapping


# ------------------------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True, slots=True)
class LinkRef:
    """``target = link(field, flow)``: the record ``flow`` wrote for source id ``source_value``."""

    target_path: str
    flow: str
    source_value: str
    line: int


@dataclass(frozen=True, slots=True)
class ContactRef:
    """``target = contact(profile.externalId)``: the Dynamics 365 contact whose id the profile keeps."""

    target_path: str
    external_id: str
    line: int


Ref = LinkRef | ContactRef


class Mapped(NamedTuple):
    """A record mapped to its target payload.

    ``payload`` holds JSON-ready values in the target's wire format; nested target paths are nested
    objects. Reference fields are *not* in the payload (unless null: a null link clears the field);
    they are in ``refs``. ``keep`` paths are left out of the payload when null (never cleared);
    ``once`` paths must only be written when the target record is created. ``lines`` are the mapping
    lines this record went through (for test coverage and ``mapsync explain``).

    A NamedTuple rather than a frozen dataclass, on purpose: one is made per record on the hot path,
    and a frozen dataclass's ``__init__`` (``object.__setattr__`` per field) costs ~5x more.
    """

    flow: str
    key: str
    payload: dict[str, Any]
    refs: tuple[Ref, ...] = ()
    keep: frozenset[str] = frozenset()
    once: frozenset[str] = frozenset()
    lines: frozenset[Line] = frozenset()


@dataclass(frozen=True, slots=True)
class Filtered:
    """The record does not match the flow's ``where`` (the flow's ``on filtered`` policy applies)."""

    flow: str
    key: str
    lines: frozenset[Line] = frozenset()


@dataclass(frozen=True, slots=True)
class Rejected:
    """The record cannot be mapped. ``field`` is the target field (or ``where`` for the filter)."""

    flow: str
    key: str
    reason: str
    field: str
    file: str
    line: int
    lines: frozenset[Line] = frozenset()

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"flow {self.flow}, record {self.key}, field {self.field} ({self.location}): {self.reason}"


Outcome = Mapped | Filtered | Rejected


# ------------------------------------------------------------------------------------------------ record errors


class UnmappedValue(RecordError):
    """A replacement without ``else`` met a value it does not list."""

    def __init__(self, replace: str, value: object) -> None:
        super().__init__(f"value {value!r} is not mapped by replace {replace} (and it has no else)")
        self.replace = replace
        self.value = value


class ReplaceMap(dict):  # type: ignore[type-arg]
    """A replacement's cases (or a choice's labels) as a dict; a miss rejects the record.

    A dict subclass keeps the hit path a plain C-level subscript: only a miss calls Python code.
    """

    __slots__ = ("kind", "name")

    def __init__(self, name: str, cases: dict[Any, Any], kind: str = "replace") -> None:
        super().__init__(cases)
        self.name = name
        self.kind = kind  # "replace", or "label" for the options of a choice field

    def __missing__(self, key: Any) -> Any:
        if self.kind == "label":
            raise RecordError(f"{key!r} is not an option of {self.name} in the schema snapshot")
        raise UnmappedValue(self.name, key)


def label_of(labels: dict[int, str], field: str, value: Any) -> Any:
    """``label(choice)``: a label, a list of labels (multi-select), or a rejection for unknown values."""
    if value is None:
        return None
    if isinstance(value, list):
        return [label_of(labels, field, v) for v in value]
    try:
        return labels[value]
    except (KeyError, TypeError):
        raise RecordError(f"{value!r} is not an option of {field} in the schema snapshot") from None


def text_of(value: Any) -> str:
    """An operand of ``&``: null counts as "", text stays, anything else is written with ``text()``."""
    if value is None:
        return ""
    if type(value) is str:
        return value
    from mapsync.dsl.functions import text

    return text(value) or ""


# ------------------------------------------------------------------------------------------------ wire dates
# Fast paths for the common, well-formed wire forms; anything else goes through dsl.functions (which
# accepts every ISO 8601 form both services send and raises FunctionError on garbage).

_UTC = dt.UTC


def read_date(value: Any) -> dt.date | None:
    """A date column from the wire (``2024-01-31``; a datetime text gives its UTC day)."""
    if value is None:
        return None
    if type(value) is str and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    from mapsync.dsl.functions import date

    return date(value)


def read_datetime(value: Any) -> dt.datetime | None:
    """A datetime column from the wire (Dataverse ``...T10:00:00Z``, Campaign ``... 23:20:35.000Z``)."""
    if value is None:
        return None
    if type(value) is str and value.endswith("Z") and len(value) in (20, 24):
        try:
            return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=_UTC)
        except ValueError:
            pass
    from mapsync.dsl.functions import datetime

    return datetime(value)


def _as_datetime(value: Any) -> dt.datetime:
    if type(value) is dt.datetime:
        return value if value.tzinfo is _UTC else (value.replace(tzinfo=_UTC) if value.tzinfo is None
                                                    else value.astimezone(_UTC))
    from mapsync.dsl.functions import datetime

    moment = datetime(value)
    assert moment is not None
    return moment


def _as_date(value: Any) -> dt.date:
    if type(value) is dt.date:
        return value
    from mapsync.dsl.functions import date

    day = date(value)
    assert day is not None
    return day


def d365_datetime(value: Any) -> str | None:
    """Dataverse's datetime form: ``2024-01-31T10:00:00Z`` (whole seconds)."""
    if value is None:
        return None
    m = _as_datetime(value)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}Z"


def campaign_datetime(value: Any) -> str | None:
    """Campaign's datetime form: ``2019-09-25 23:20:35.000Z`` (milliseconds)."""
    if value is None:
        return None
    m = _as_datetime(value)
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}."
            f"{m.microsecond // 1000:03d}Z")


def d365_date(value: Any) -> str | None:
    """A date-only column in either service: ``2024-01-31``."""
    if value is None:
        return None
    return _as_date(value).isoformat()


campaign_date = d365_date


def date_wire(value: Any) -> str | None:
    """A date column copied to a date field (``birthDate = birthdate``): checked, re-written canonically."""
    if type(value) is str and len(value) == 10:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    return d365_date(read_date(value))
