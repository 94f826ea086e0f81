"""One CSV row of an import file, checked against the resource's snapshot and turned into fields to store.

The file's first column is the reconciliation key; every column is a field of the resource named by its
path (``location.city`` is the ``city`` field of ``location``). Values are text: an empty one means
"empty" (an empty string for text fields, null otherwise). What is refused, and with which reason, is the
rejects file's contract: ``missing key``, ``field 'x' is too long (max N)``, ``field 'x' is not a valid
<type>``, ``unknown column 'x'``. A problem with the header (an unknown column, a link, a read-only field)
rejects every row with the same reason: the workflow's Load file activity cannot map the column, so no
row of the file loads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mapsync.emulators.campaign.resources import (
    _DATE,
    _DATETIME,
    COMPUTED,
    FieldSpec,
    ResourceSpec,
    _valid_date,
)

__all__ = ["Accepted", "ImportColumns", "Rejected"]

_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}  # Campaign's long and int64
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True, slots=True)
class Accepted:
    key: str
    fields: dict[str, Any]  # nested like the REST body: {"location": {"city": ...}}


@dataclass(frozen=True, slots=True)
class Rejected:
    key: str  # the key column's value, or empty
    reason: str


@dataclass(frozen=True, slots=True)
class _Column:
    name: str  # as written in the header
    path: tuple[str, ...]  # field names from the resource down
    spec: FieldSpec


class _Refused(ValueError):
    """A value that does not fit its field; the message is the reject reason."""


@dataclass(frozen=True, slots=True)
class ImportColumns:
    """The header of one import file, resolved against the resource (or the reason it cannot be)."""

    resource: ResourceSpec
    columns: tuple[_Column, ...]
    problem: str | None = None  # set: every row of the file is rejected with it

    @property
    def key_field(self) -> str | None:
        return self.columns[0].path[0] if self.columns else None

    @classmethod
    def plan(cls, resource: ResourceSpec, header: Sequence[str]) -> ImportColumns:
        columns: list[_Column] = []
        problem: str | None = None if header else "the file has no header row"
        for name in header:
            column, why = _resolve(resource, name)
            if why is None and any(c.name == name for c in columns):
                why = f"column '{name}' appears twice"
            if why is not None:
                problem = problem or why
                continue
            assert column is not None
            columns.append(column)
        if problem is None and len(columns[0].path) != 1:
            problem = f"the key column '{columns[0].name}' must be a field of the resource itself"
        return cls(resource, tuple(columns), problem)

    def convert(self, row: Sequence[str]) -> Accepted | Rejected:
        key = row[0].strip() if row else ""
        if self.problem is not None:
            return Rejected(key, self.problem)
        if len(row) != len(self.columns):
            return Rejected(key, f"expected {len(self.columns)} fields, found {len(row)}")
        if not key:
            return Rejected("", "missing key")
        fields: dict[str, Any] = {}
        for column, text in zip(self.columns, row, strict=True):
            try:
                value = _value(column, text)
            except _Refused as exc:
                return Rejected(key, str(exc))
            target = fields
            for part in column.path[:-1]:
                target = target.setdefault(part, {})
            target[column.path[-1]] = value
        return Accepted(key, fields)


def _resolve(resource: ResourceSpec, name: str) -> tuple[_Column | None, str | None]:
    path = tuple(name.split("."))
    fields: Mapping[str, FieldSpec] = resource.fields
    spec: FieldSpec | None = None
    for depth, part in enumerate(path):
        spec = fields.get(part)
        if spec is None or (depth == 0 and part in COMPUTED):
            return None, f"unknown column '{name}'"
        if depth < len(path) - 1:
            if spec.type != "object":
                return None, f"unknown column '{name}'"
            fields = {f.name: f for f in spec.fields}
    assert spec is not None
    if spec.read_only:
        return None, f"column '{name}' is read-only"
    if spec.type == "lookup":
        return None, f"column '{name}' is a link, which the import does not load"
    if spec.type == "object":
        return None, f"column '{name}' is a group of fields: name one of them ('{name}.{spec.fields[0].name}')"
    return _Column(name, path, spec), None


def _value(column: _Column, text: str) -> Any:
    spec, name = column.spec, column.name
    kind = spec.type
    if text == "":
        return "" if kind in ("string", "memo") else None
    if kind in ("string", "memo"):
        if spec.max_length is not None and len(text) > spec.max_length:
            raise _Refused(f"field '{name}' is too long (max {spec.max_length})")
        return text
    if kind == "enum":
        if text not in spec.values:
            raise _Refused(f"field '{name}' is not a valid enumeration value (one of {', '.join(spec.values)})")
        return text
    if kind == "boolean":
        found = _BOOLEANS.get(text.strip().lower())
        if found is None:
            raise _Refused(f"field '{name}' is not a valid boolean")
        return found
    if kind in _INT_RANGE:
        low, high = _INT_RANGE[kind]
        if not _INTEGER.match(text.strip()) or not low <= int(text) <= high:
            raise _Refused(f"field '{name}' is not a valid integer")
        return int(text)
    if kind in ("decimal", "double", "money"):
        if not _NUMBER.match(text.strip()):
            raise _Refused(f"field '{name}' is not a valid number")
        return float(text)
    if kind == "date":
        if not _DATE.match(text) or not _valid_date(text):
            raise _Refused(f"field '{name}' is not a valid date")
        return text
    if kind == "datetime":
        if not _DATETIME.match(text) or not _valid_date(text[:10]):
            raise _Refused(f"field '{name}' is not a valid datetime")
        return text
    return text  # guid and other text-like types pass as they are
