"""Transformed records as CSV files in the form the import workflow reads (UTF-8, comma separated, RFC 4180
quoting of every field, one header row; the key column first, then each mapped field by its dotted path).

Rows are written as they come and a file is closed every ``chunk_records`` rows, so memory stays flat however
many records a load holds. A row only carries the columns its payload has: an empty cell means "set to empty",
so a row without a field (a ``once`` field on an update, a ``keep`` field that is null) goes to a file whose
header lacks that column. Rows of one column set share files.
"""

from __future__ import annotations

import csv
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

__all__ = ["ROW_BYTES", "ChunkFile", "ChunkWriter", "cell", "file_mask", "file_name", "flatten", "new_run_id"]

# Local disk a loaded record takes (its CSV row and its staging row), as measured at 1M contacts: what a
# folder with room for a load means (doctor, and the message of a full disk).
ROW_BYTES = 250

_SAFE = re.compile(r"[^A-Za-z0-9-]")


def new_run_id(now: datetime) -> str:
    """``20261129T0612Z-3fa9``: sortable, unique enough per flow, safe in a file name."""
    return f"{now:%Y%m%dT%H%MZ}-{uuid.uuid4().hex[:4]}"


def file_name(flow: str, run_id: str, chunk: int) -> str:
    return f"mapsync_{flow}_{_SAFE.sub('-', run_id)}_{chunk:05d}.csv"


def file_mask(flow: str, run_id: str) -> str:
    """What the signal hands the workflow: every file of this load, and no other."""
    return f"mapsync_{flow}_{_SAFE.sub('-', run_id)}_*.csv"


def flatten(payload: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"location": {"city": "Paris"}}`` -> ``("location.city", "Paris")``, in payload order."""
    for key, value in payload.items():
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def cell(value: Any) -> str:
    """One value as the import reads it: null empty, booleans true/false, numbers in plain decimal."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping) and not value:
        return ""
    return str(value)


@dataclass(frozen=True, slots=True)
class ChunkFile:
    chunk: int
    name: str
    path: Path
    rows: int
    columns: tuple[str, ...]


@dataclass
class _Open:
    chunk: int
    path: Path
    handle: IO[str]
    writer: Any
    columns: tuple[str, ...]
    rows: int = 0


class ChunkWriter:
    """Writes rows into ``folder``; ``on_closed`` hears of each file once it is complete on disk."""

    def __init__(self, folder: Path, flow: str, run_id: str, key_field: str, chunk_records: int,
                 on_closed: Callable[[ChunkFile], None]) -> None:
        self.folder = folder
        self.flow = flow
        self.run_id = run_id
        self.key_field = key_field
        self.chunk_records = max(1, chunk_records)
        self.on_closed = on_closed
        self._open: dict[tuple[str, ...], _Open] = {}
        self._next = 1
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, key: str, payload: Mapping[str, Any]) -> int:
        """Write one record; returns the number of the file it went to."""
        values = {path: v for path, v in flatten(payload) if path != self.key_field}
        columns = (self.key_field, *values)
        out = self._open.get(columns) or self._start(columns)
        out.writer.writerow([key, *(cell(v) for v in values.values())])
        out.rows += 1
        chunk = out.chunk
        if out.rows >= self.chunk_records:
            self._close(columns)
        return chunk

    def close(self) -> None:
        for columns in list(self._open):
            self._close(columns)

    def _start(self, columns: tuple[str, ...]) -> _Open:
        chunk, self._next = self._next, self._next + 1
        path = self.folder / file_name(self.flow, self.run_id, chunk)
        handle = path.open("w", encoding="utf-8", newline="")
        # Every field quoted: the csv module leaves a lone "\r" unquoted under QUOTE_MINIMAL with a "\n" line
        # terminator, and a reader would take it for the end of the row.
        writer = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        self._open[columns] = out = _Open(chunk, path, handle, writer, columns)
        return out

    def _close(self, columns: tuple[str, ...]) -> None:
        out = self._open.pop(columns)
        out.handle.flush()
        out.handle.close()
        self.on_closed(ChunkFile(out.chunk, out.path.name, out.path, out.rows, out.columns))


def read_rows(path: Path, lines: set[int]) -> dict[int, dict[str, str]]:
    """The data rows numbered ``lines`` (1-based, the header not counted) of a written file, by number."""
    out: dict[int, dict[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=1):
            if number in lines:
                out[number] = dict(row)
                if len(out) == len(lines):
                    break
    return out
