"""What the import workflow says about each file: ``<name>.done`` (written last: the file is imported) and
``<name>.rejects.csv`` (``line,key,reason``: one row per data row it refused)."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass

__all__ = ["Done", "Reject", "parse_done", "parse_rejects", "rejected_field"]


@dataclass(frozen=True, slots=True)
class Done:
    imported: int
    rejected: int
    created: int | None = None
    updated: int | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    line: int  # 1-based data row of the file (header not counted)
    key: str
    reason: str


def parse_done(data: bytes) -> Done:
    body = json.loads(data.decode("utf-8"))
    return Done(int(body.get("imported", 0)), int(body.get("rejected", 0)), body.get("created"), body.get("updated"))


def parse_rejects(data: bytes | None) -> list[Reject]:
    if not data:
        return []
    out = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8-sig"))):
        line = row.get("line") or ""
        out.append(Reject(int(line) if line.isdigit() else 0, row.get("key") or "", row.get("reason") or "rejected"))
    return out


_FIELD = re.compile(r"field '([^']+)'|column '([^']+)'")


def rejected_field(reason: str) -> str | None:
    """The field a reason names (``field 'email' is too long (max 64)``), for the dead letter."""
    match = _FIELD.search(reason)
    return (match.group(1) or match.group(2)) if match else None
