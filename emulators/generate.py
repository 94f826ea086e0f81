"""Rows for any table the emulated Dataverse serves, made from its snapshot: ``mapsync emulate --rows
new_membership=500`` and ``POST /_emulator/generate``.

Every value respects the column's snapshot: strings within ``max_length``, numbers within ``min``/``max``,
option sets from their options, dates as dates, lookups pointing at existing rows of a target table (left
empty when that table has none). Rows are active (``statecode`` 0, ``statuscode`` 1) and the same seed gives
the same rows, so a walk-through can be repeated.
"""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mapsync.emulators.dataverse.metadata import ColumnDef, TableDef

__all__ = ["generate_rows"]

_WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper", "kestrel",
          "lumen", "maple", "nova", "onyx", "pine", "quartz", "raven", "sierra", "tundra")
_EPOCH = date(2020, 1, 1)
# Columns the platform fills itself, or that a generated active row must hold.
_SYSTEM = {"createdon", "modifiedon", "versionnumber", "overriddencreatedon"}
_ACTIVE = {"statecode": 0, "statuscode": 1}


def generate_rows(table: TableDef, count: int, *, seed: int, lookup_ids: dict[str, list[str]]) -> Iterator[dict[str, Any]]:
    """``count`` rows for ``table`` in the store's trusted shape (lookups as ``_x_value`` plus their target).

    ``lookup_ids`` gives, per target table, ids a lookup may point at."""
    rng = random.Random(f"{seed}:{table.name}")
    for _ in range(count):
        row: dict[str, Any] = {table.primary_key: str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        for col in table.columns:
            if col.name == table.primary_key or col.name in _SYSTEM or not col.published:
                continue
            if col.name in _ACTIVE and any(v == _ACTIVE[col.name] for v, _ in col.options):
                row[col.name] = _ACTIVE[col.name]
                continue
            if col.type == "lookup":
                target, value = _lookup(col, rng, lookup_ids)
                row[col.wire_name] = value
                if value is not None:
                    row[f"{col.wire_name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = target
                continue
            if col.read_only or (not col.required and rng.random() < 0.1):
                continue  # optional columns are sometimes empty, as real data is
            row[col.name] = _value(col, rng)
        yield row


def _lookup(col: ColumnDef, rng: random.Random, lookup_ids: dict[str, list[str]]) -> tuple[str | None, str | None]:
    targets = [t for t in col.targets if lookup_ids.get(t)]
    if not targets:
        return None, None
    target = rng.choice(targets)
    return target, rng.choice(lookup_ids[target])


def _value(col: ColumnDef, rng: random.Random) -> Any:
    kind = col.type
    if kind == "choice":
        return rng.choice(col.options)[0] if col.options else None
    if kind == "multichoice":
        picked = sorted({rng.choice(col.options)[0] for _ in range(2)}) if col.options else []
        return ",".join(str(v) for v in picked) or None
    if kind == "boolean":
        return rng.random() < 0.5
    if kind in ("integer", "bigint"):
        low = int(col.minimum) if col.minimum is not None else 0
        high = int(col.maximum) if col.maximum is not None else 1000
        return rng.randint(low, max(low, high))
    if kind in ("decimal", "money", "double"):
        low = col.minimum if col.minimum is not None else 0.0
        high = col.maximum if col.maximum is not None else 10_000.0
        return round(rng.uniform(low, max(low, high)), col.precision if col.precision is not None else 2)
    if kind == "date":
        return (_EPOCH + timedelta(days=rng.randrange(2_000))).isoformat()
    if kind == "datetime":
        moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(2_000 * 86_400))
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "guid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return _text(col, rng)


def _text(col: ColumnDef, rng: random.Random) -> str:
    limit = col.max_length or 100
    if "email" in col.name:
        text = f"{rng.choice(_WORDS)}.{rng.choice(_WORDS)}{rng.randrange(1000)}@example.com"
    elif "phone" in col.name or "fax" in col.name:
        text = "+1 555 " + "".join(rng.choice(string.digits) for _ in range(7))
    else:
        text = " ".join(rng.choice(_WORDS).capitalize() for _ in range(rng.randint(1, 3)))
    return text[:limit]
