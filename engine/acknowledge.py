"""Recording what happened to a page, and moving the cursor, in one transaction.

The cursor moves only in the same transaction that records the outcome of every write before it: the key map
(what was created, updated, deleted), the dead letters (rejected, deferred and failed records, with the
mapping line and version), the creates no longer pending, and the flow's relink generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mapsync.engine import relinks
from mapsync.engine.connectors.base import WriteOutcome
from mapsync.engine.planner import DeadLetterPlan, FlowRules, Op, Write
from mapsync.engine.state.base import KeyEntry, StateStore

__all__ = ["TRANSIENT_PREFIX", "Page", "acknowledge", "failure_reason"]

TRANSIENT_PREFIX = "transient: "  # a dead letter the next run retries by itself


@dataclass(frozen=True, slots=True)
class Page:
    """A page's writes with their outcomes (None: nothing was sent), its dead letters, the keys whose open
    dead letters are moot, and the cursor to move to once it is recorded."""

    writes: Sequence[Write]
    outcomes: Sequence[WriteOutcome | None]
    dead: Sequence[DeadLetterPlan] = ()
    settled: Sequence[str] = ()
    cursor: str | None = None


def acknowledge(store: StateStore, rules: FlowRules, page: Page, counts: Any) -> None:
    """Record ``page`` (runs in a worker thread) and count its outcomes into ``counts``."""
    entries: list[KeyEntry] = []
    went_through: list[str] = []
    with store.transaction():
        for w, outcome in zip(page.writes, page.outcomes, strict=True):
            entry = _entry(store, rules, w, outcome, counts)
            if entry is not None:
                entries.append(entry)
            if outcome is not None and outcome.ok:
                went_through.append(w.key)
        for d in page.dead:
            store.add_dead_letter(rules.name, d.key, dict(d.record), d.reason, field=d.field, mapping_file=d.file,
                                  mapping_line=d.line, mapping_version=rules.version)
        if entries:
            store.put_keys(rules.name, entries)
        if went_through or page.settled:
            store.resolve_dead_letters(rules.name, [*went_through, *page.settled])
        # A create stays pending while it may exist without our knowing: its lookup failed, or the service
        # failed transiently (the reply may be what was lost). The next run looks it up before anything else.
        store.clear_pending(rules.name, [w.key for w, o in zip(page.writes, page.outcomes, strict=True)
                                         if w.op is Op.ADOPT or (w.op is Op.CREATE and o is not None
                                                                 and (o.ok or not o.transient))])
        if any(w.relinks for w, o in zip(page.writes, page.outcomes, strict=True) if o is not None and o.ok):
            relinks.bump_generation(store, rules.name)
        if page.cursor is not None:
            store.set_cursor(rules.name, page.cursor)
    counts.landed = 0  # now counted as created, updated, deleted or failed


def _entry(store: StateStore, rules: FlowRules, w: Write, outcome: WriteOutcome | None, counts: Any) -> KeyEntry | None:
    """Count one write's outcome; the key-map entry it leaves (None: none changes), or its dead letter."""
    if w.op is Op.FORGET:
        return KeyEntry(w.key, w.target_id, None, False, deleted=True)
    if w.op is Op.ABSENT and outcome is None:
        counts.absent += 1  # update mode: the target has no record for this key
        return None
    if outcome is None or not outcome.ok:
        counts.failed += 1
        reason = failure_reason(outcome)
        if outcome is not None and outcome.transient:
            reason = TRANSIENT_PREFIX + reason  # retried automatically by the next run
        store.add_dead_letter(rules.name, w.key, dict(w.record or {"key": w.key}), reason, mapping_file=rules.file,
                              mapping_line=rules.line, mapping_version=rules.version)
        return None
    if w.op is Op.DELETE:
        counts.deleted += 1
        return KeyEntry(w.key, None, None, False, deleted=True)
    if w.op is Op.CREATE:
        counts.created += 1
        return KeyEntry(w.key, outcome.target_id, w.hash, True)
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
