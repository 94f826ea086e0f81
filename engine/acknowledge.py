"""Recording what happened to a page, and moving the cursor, in one transaction.

The cursor moves only in the same transaction that records the outcome of every write before it: the dead
letters (rejected, deferred and failed records, with the mapping line and version), the dead letters the page
made moot, and what the writes that went through leave behind — for a flow its key map (what was created,
updated, deleted), the creates no longer pending and its relink generation (``record_key_map``); for an
opt-out rule its pairs (``mapsync.engine.optout``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mapsync.engine import relinks
from mapsync.engine.connectors.base import WriteOutcome
from mapsync.engine.planner import DeadLetterPlan, FlowRules, Op, Write
from mapsync.engine.state.base import KeyEntry, StateStore

__all__ = ["TRANSIENT_PREFIX", "Page", "Record", "acknowledge", "failed", "failure_reason", "record_key_map"]

TRANSIENT_PREFIX = "transient: "  # a dead letter the next run retries by itself


@dataclass(frozen=True, slots=True)
class Page:
    """A page's writes with their outcomes (None: nothing was sent), its dead letters, the keys whose open
    dead letters are moot, and the cursor to move to once it is recorded (under ``cursor_name``; None: under
    the flow's own name)."""

    writes: Sequence[Write]
    outcomes: Sequence[WriteOutcome | None]
    dead: Sequence[DeadLetterPlan] = ()
    settled: Sequence[str] = ()
    cursor: str | None = None
    cursor_name: str | None = None


# What the writes leave behind besides dead letters; called inside the transaction.
Record = Callable[[StateStore, FlowRules, Page, Any], None]


def acknowledge(store: StateStore, rules: FlowRules, page: Page, counts: Any,
                record: Record | None = None) -> None:
    """Record ``page`` (runs in a worker thread) and count its outcomes into ``counts``. ``record`` keeps what
    the writes that went through leave behind (default: the flow's key map)."""
    with store.transaction():
        for w, outcome in zip(page.writes, page.outcomes, strict=True):
            if failed(w, outcome):
                counts.failed += 1
                _dead_letter(store, rules, w, outcome)
        for d in page.dead:
            store.add_dead_letter(rules.name, d.key, dict(d.record), d.reason, field=d.field, mapping_file=d.file,
                                  mapping_line=d.line, mapping_version=rules.version or None)
        (record or record_key_map)(store, rules, page, counts)
        went_through = [w.key for w, o in zip(page.writes, page.outcomes, strict=True) if o is not None and o.ok]
        if went_through or page.settled:
            store.resolve_dead_letters(rules.name, [*went_through, *page.settled])
        if page.cursor is not None:
            store.set_cursor(page.cursor_name or rules.name, page.cursor)


def failed(w: Write, outcome: WriteOutcome | None) -> bool:
    """The write needed sending and did not go through (a forget, or an update with nothing to update, sends
    nothing and cannot fail)."""
    if w.op is Op.FORGET or (w.op is Op.ABSENT and outcome is None):
        return False
    return outcome is None or not outcome.ok


def _dead_letter(store: StateStore, rules: FlowRules, w: Write, outcome: WriteOutcome | None) -> None:
    reason = failure_reason(outcome)
    if outcome is not None and outcome.transient:
        reason = TRANSIENT_PREFIX + reason  # retried automatically by the next run
    store.add_dead_letter(rules.name, w.key, dict(w.record or {"key": w.key}), reason, field=w.field,
                          mapping_file=rules.file, mapping_line=rules.line, mapping_version=rules.version or None)


def record_key_map(store: StateStore, rules: FlowRules, page: Page, counts: Any) -> None:
    """A flow's writes: the key-map entries they leave, the creates no longer pending, the relink generation."""
    done = [(w, o) for w, o in zip(page.writes, page.outcomes, strict=True) if not failed(w, o)]
    entries = [e for w, o in done if (e := _entry(w, o, counts)) is not None]
    if entries:
        store.put_keys(rules.name, entries)
    # A create stays pending while it may exist without our knowing: its lookup failed, or the service
    # failed transiently (the reply may be what was lost). The next run looks it up before anything else.
    store.clear_pending(rules.name, [w.key for w, o in zip(page.writes, page.outcomes, strict=True)
                                     if w.op is Op.ADOPT or (w.op is Op.CREATE and o is not None
                                                             and (o.ok or not o.transient))])
    if any(w.relinks for w, o in done if o is not None and o.ok):
        relinks.bump_generation(store, rules.name)
    counts.landed = 0  # now counted as created, updated, deleted or failed


def _entry(w: Write, outcome: WriteOutcome | None, counts: Any) -> KeyEntry | None:
    """Count one write that did not fail; the key-map entry it leaves (None: none changes)."""
    if w.op is Op.FORGET:
        return KeyEntry(w.key, w.target_id, None, False, deleted=True)
    if w.op is Op.ABSENT:
        counts.absent += 1  # update mode: the target has no record for this key
        return None
    if w.op is Op.DELETE:
        counts.deleted += 1
        return KeyEntry(w.key, None, None, False, deleted=True)
    if w.op is Op.CREATE:
        counts.created += 1
        return KeyEntry(w.key, outcome.target_id if outcome is not None else None, w.hash, True)
    counts.updated += 1
    # A record `mode update` found was made by someone else: never one a delete policy may remove.
    return KeyEntry(w.key, w.target_id, w.hash, w.ours, deleted=w.tombstone)


def failure_reason(outcome: WriteOutcome | None) -> str:
    if outcome is None:
        return "the write was not attempted"
    parts = [outcome.message or "rejected by the target"]
    if outcome.code:
        parts.append(f"(code {outcome.code}")
        parts[-1] += f", HTTP {outcome.status})" if outcome.status else ")"
    elif outcome.status:
        parts.append(f"(HTTP {outcome.status})")
    return " ".join(parts)
