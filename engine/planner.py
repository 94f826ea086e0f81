"""Planning a page of records: a pure function of plain data.

    rows -> keys -> filter + transform (the compiled flow) -> links resolved from the linked flows' key
    maps -> diff against this flow's key map -> writes, dead letters, deferrals

Nothing here reads a service or the state store: the executor fetches the key-map entries a page needs,
calls ``plan_page``, then writes what it returns and acknowledges the outcomes. So every decision about
one record — write it, leave it, delete it, wait for a link — can be tested with plain dictionaries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mapsync.dsl.runtime import ContactRef, Filtered, LinkRef, Mapped, Outcome, Rejected
from mapsync.engine.errors import SyncError
from mapsync.engine.state.base import KeyEntry

__all__ = [
    "DEFERRAL_LIMIT",
    "DeadLetterPlan",
    "Deferral",
    "Evaluated",
    "FlowRules",
    "Op",
    "PagePlan",
    "Write",
    "evaluate_page",
    "payload_hash",
    "plan_deletion",
    "plan_gone",
    "plan_page",
    "plan_removal",
    "wanted_links",
]

# A record whose link cannot be resolved is retried in this many runs before it is a dead letter for good.
DEFERRAL_LIMIT = 3


class Op(StrEnum):
    """What is done to one target record. The planner plans the first five; the write step turns a create or
    a find-update into one of the last four once the target has answered a lookup."""

    CREATE = "create"  # a record the key map does not know (looked up first when the target may have it)
    UPDATE = "update"  # a record the key map knows
    FIND_UPDATE = "find-update"  # `mode update`: the target record is found by the flow's key, then updated
    DELETE = "delete"  # remove the target record mapsync made
    FORGET = "forget"  # write nothing; the key-map entry is marked deleted
    ADOPT = "adopt"  # a create the target already had (a lost reply, a lost key map): updated instead
    UNRESOLVED = "unresolved"  # a create whose lookup failed: not sent, it stays pending
    ABSENT = "absent"  # a find-update the target has no record for: nothing to update


@dataclass(frozen=True, slots=True)
class FlowRules:
    """The parts of a compiled flow that decide what a record needs (plain data)."""

    name: str
    mode: str = "upsert"  # upsert | create | update | mirror
    on_filtered: str = "ignore"  # ignore | delete
    on_delete: str = "ignore"  # ignore | delete | set
    on_delete_values: Mapping[str, Any] = field(default_factory=dict)  # on delete: set(...) payload
    file: str = ""
    line: int | None = None
    version: str = ""

    @classmethod
    def of(cls, flow: Any) -> FlowRules:
        return cls(flow.name, flow.mode, flow.on_filtered, flow.on_delete.action, dict(flow.on_delete.values),
                   flow.file, flow.line, flow.version)


@dataclass(frozen=True, slots=True)
class Write:
    """One planned write. ``hash`` is the payload's hash to record once it is written."""

    op: Op
    key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    target_id: str | None = None
    hash: str | None = None
    record: Mapping[str, Any] | None = None  # the source record (for a dead letter when the write fails)
    once: frozenset[str] = frozenset()  # fields written only when the record is created
    tombstone: bool = False  # the source record is gone: its entry is marked deleted once this is written
    relinks: bool = False  # changes which target record a source key stands for: linking flows re-read
    ours: bool = True  # the target record is one mapsync made (only those may `on delete: delete` remove)
    field: str | None = None  # the field a dead letter of this write points at (None: the whole record)


@dataclass(frozen=True, slots=True)
class DeadLetterPlan:
    key: str
    record: Mapping[str, Any]
    reason: str
    field: str | None
    file: str
    line: int | None


@dataclass(frozen=True, slots=True)
class Deferral:
    """A record held back because a record it links to is not in the target (yet). ``final``: it has waited
    ``DEFERRAL_LIMIT`` runs and becomes a dead letter for good."""

    key: str
    record: Mapping[str, Any]
    link: LinkRef
    final: bool


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A page after filter and transform: one outcome per keyed record, in read order."""

    records: tuple[tuple[str, Mapping[str, Any], Outcome], ...]
    no_key: int = 0


@dataclass(frozen=True, slots=True)
class PagePlan:
    writes: tuple[Write, ...] = ()
    dead: tuple[DeadLetterPlan, ...] = ()
    deferred: tuple[Deferral, ...] = ()
    settled: tuple[str, ...] = ()  # keys that need no write (an open dead letter of theirs is moot)
    filtered: int = 0
    rejected: int = 0
    unchanged: int = 0


def payload_hash(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


def evaluate_page(rows: Iterable[Mapping[str, Any]], key_column: str,
                  evaluate: Callable[[Mapping[str, Any]], Outcome]) -> Evaluated:
    """Key, filter and transform each row (``evaluate`` is the compiled flow's). A key the page holds twice
    is planned once, as its last row: two writes of one record in a page would race each other."""
    last: dict[str, Mapping[str, Any]] = {}
    no_key = 0
    for row in rows:
        raw = row.get(key_column)
        if raw is None:
            no_key += 1
            continue
        key = str(raw)
        last.pop(key, None)  # re-inserted: the record takes the place of its last row
        last[key] = row
    return Evaluated(tuple((key, row, evaluate(row)) for key, row in last.items()), no_key)


def wanted_links(evaluated: Evaluated) -> dict[str, set[str]]:
    """The source keys of other flows' records this page links to, by flow: what the planner needs to know."""
    wanted: dict[str, set[str]] = {}
    for _, _, outcome in evaluated.records:
        if isinstance(outcome, Mapped):
            for ref in outcome.refs:
                if isinstance(ref, LinkRef):
                    wanted.setdefault(ref.flow, set()).add(ref.source_value)
    return wanted


Reference = Callable[[dict[str, Any], str, str, str], None]  # (payload, path, linked table, target id): in place


def plan_page(rules: FlowRules, evaluated: Evaluated, deleted: Sequence[str], *, known: Mapping[str, KeyEntry],
              linked: Mapping[str, Mapping[str, KeyEntry]], reference: Reference,
              link_tables: Mapping[str, str], attempts: Mapping[str, int] | None = None) -> PagePlan:
    """What a page needs. ``known``: this flow's key-map entries for the page's keys; ``linked``: the entries of
    the flows it links to, for the keys ``wanted_links`` named; ``reference`` writes a resolved link in the
    target's form; ``attempts``: runs a retried record has already been deferred in."""
    writes: list[Write] = []
    dead: list[DeadLetterPlan] = []
    deferred: list[Deferral] = []
    settled: list[str] = []
    filtered = rejected = unchanged = 0
    for key, row, outcome in evaluated.records:
        if isinstance(outcome, Filtered):
            filtered += 1
            entry = known.get(key)
            if rules.on_filtered == "delete" and entry is not None and not entry.deleted:
                writes.append(plan_removal(entry))
            else:
                settled.append(key)
        elif isinstance(outcome, Rejected):
            rejected += 1
            dead.append(DeadLetterPlan(key, row, outcome.reason, outcome.field, outcome.file, outcome.line))
        else:
            payload, missing = _linked_payload(outcome, linked, reference, link_tables)
            if missing is not None:
                tries = (attempts or {}).get(key, 0) + 1
                deferred.append(Deferral(key, row, missing, tries >= DEFERRAL_LIMIT))
                continue
            write = _diff(rules, key, row, outcome, payload, known.get(key))
            if write is None:
                unchanged += 1
                settled.append(key)
            else:
                writes.append(write)
    for key in deleted:
        entry = known.get(key)
        if entry is not None and not entry.deleted:
            # A mirror removes what its source no longer has, however it learns of it.
            writes.append(plan_removal(entry) if rules.mode == "mirror" else plan_deletion(rules, entry))
        else:
            settled.append(key)
    return PagePlan(tuple(writes), tuple(dead), tuple(deferred), tuple(settled), filtered, rejected, unchanged)


def _linked_payload(mapped: Mapped, linked: Mapping[str, Mapping[str, KeyEntry]], reference: Reference,
                    link_tables: Mapping[str, str]) -> tuple[dict[str, Any], LinkRef | None]:
    """The payload with every reference in the target's form, or the first link that cannot be resolved."""
    if not mapped.refs:
        return mapped.payload, None
    payload = _deep_copy(mapped.payload)
    for ref in mapped.refs:
        if isinstance(ref, LinkRef):
            entry = linked.get(ref.flow, {}).get(ref.source_value)
            if entry is None or entry.target_id is None or entry.deleted:
                return payload, ref  # never written half-linked
            reference(payload, ref.target_path, link_tables.get(ref.flow, ""), entry.target_id)
        elif isinstance(ref, ContactRef):
            reference(payload, ref.target_path, "contact", ref.external_id)
    return payload, None


def _diff(rules: FlowRules, key: str, row: Mapping[str, Any], mapped: Mapped, payload: dict[str, Any],
          entry: KeyEntry | None) -> Write | None:
    """The write a mapped record needs against its key-map entry; None when the target already has it."""
    digest = payload_hash(payload)
    once = frozenset(mapped.once)
    if entry is not None and not entry.deleted and entry.target_id is not None:
        if entry.payload_hash == digest or rules.mode == "create":
            return None  # unchanged; create-only flows never touch what they already wrote
        update = {k: v for k, v in payload.items() if k not in once} if once else payload
        return Write(Op.UPDATE, key, update, entry.target_id, digest, row, once, ours=entry.created_by_mapsync)
    if rules.mode == "update":
        return Write(Op.FIND_UPDATE, key, payload, None, digest, row, once, ours=False)
    return Write(Op.CREATE, key, payload, None, digest, row, once, relinks=entry is not None)


def plan_removal(entry: KeyEntry) -> Write:
    """A record that stopped matching the filter (`on filtered: delete`), or is gone from a mirror's source."""
    if entry.created_by_mapsync and entry.target_id:
        return Write(Op.DELETE, entry.source_key, target_id=entry.target_id, relinks=True)
    return Write(Op.FORGET, entry.source_key, target_id=entry.target_id)


def plan_deletion(rules: FlowRules, entry: KeyEntry) -> Write:
    """A source record deleted: the flow's `on delete` policy."""
    if rules.on_delete == "delete" and entry.created_by_mapsync and entry.target_id:
        return Write(Op.DELETE, entry.source_key, target_id=entry.target_id, relinks=True)
    if rules.on_delete == "set" and entry.target_id:
        return Write(Op.UPDATE, entry.source_key, dict(rules.on_delete_values), entry.target_id, tombstone=True)
    return Write(Op.FORGET, entry.source_key, target_id=entry.target_id)


def plan_gone(rules: FlowRules, gone: Sequence[KeyEntry], *, total: int, max_deletes: Any = None) -> list[Write]:
    """After a full read, the key-map entries the source no longer returned: a mirror removes them (within
    ``max deletes``: ``value`` and ``percent``), other modes apply `on delete`."""
    if rules.mode != "mirror":
        return [plan_deletion(rules, entry) for entry in gone]
    if max_deletes is not None:
        value, percent = max_deletes.value, max_deletes.percent
        allowed = max(1, total) * value / 100 if percent else value
        if len(gone) > allowed:
            raise SyncError(
                f"flow {rules.name}: mirror mode would delete {len(gone)} of {max(1, total)} records, more "
                f"than `max deletes` allows ({value:g}{'%' if percent else ''}); nothing was deleted. "
                "Check the source, or raise the limit in the mapping.")
    return [plan_removal(entry) for entry in gone]


def _deep_copy(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in payload.items()}
