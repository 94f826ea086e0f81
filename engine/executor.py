"""The generic sync loop, the same for every compiled flow in either direction.

    read (source pages) -> plan (``planner``: filter, transform, links, diff; pure) -> write (``writer``)
    -> acknowledge (``acknowledge``: key map, dead letters, cursor, one transaction)

Around it: the flow's lease, its relinks (``relinks``) and create recovery (``creates``: pending creates,
lost replies, records the key map does not know). Crash safety is at-least-once with idempotent writes; the
cursor moves only in the transaction that records the outcomes of every write before it. One bad record
never stops a run: it becomes a dead letter with the reason, the mapping line and the mapping version.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mapsync.dsl.runtime import LinkRef
from mapsync.engine import leases, relinks
from mapsync.engine.acknowledge import TRANSIENT_PREFIX, Page, acknowledge
from mapsync.engine.creates import Creates
from mapsync.engine.failpoints import Failpoint
from mapsync.engine.leases import LEASE_TTL_SECONDS
from mapsync.engine.planner import (
    DEFERRAL_LIMIT,
    DeadLetterPlan,
    Deferral,
    FlowRules,
    Op,
    PagePlan,
    Write,
    evaluate_page,
    payload_hash,
    plan_gone,
    plan_page,
    wanted_links,
)
from mapsync.engine.sources import Source, SourceBatch
from mapsync.engine.state.base import DeadLetter, KeyEntry, StateStore
from mapsync.engine.targets import Target
from mapsync.engine.writer import Writer

__all__ = ["DEFERRAL_LIMIT", "DEFERRED_PREFIX", "TRANSIENT_PREFIX", "FlowCounts", "FlowResult", "FlowRunner",
           "PlannedWrite", "payload_hash"]

log = logging.getLogger("mapsync.executor")

DEFERRED_PREFIX = "deferred: "


@dataclass
class FlowCounts:
    read: int = 0
    filtered: int = 0
    absent: int = 0  # `mode update`: records the target has no record for (nothing to update)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    deferred: int = 0
    failed: int = 0
    # About how many records this run's read brings (a full read of a table that says), for the progress display.
    expected_reads: int | None = field(default=None, compare=False)
    # Writes of the page in hand whose outcome came back but is not acknowledged yet (progress display only).
    landed: int = field(default=0, compare=False)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k not in ("expected_reads", "landed")}

    @property
    def settled(self) -> int:
        """Records this run is done with (or whose write came back): what the progress display counts."""
        return (self.filtered + self.absent + self.created + self.updated + self.unchanged + self.rejected
                + self.deferred + self.failed + self.landed)

    @property
    def written(self) -> int:
        return self.created + self.updated + self.deleted


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """What a run would do to one record (``mapsync plan``)."""

    op: str
    key: str
    target_id: str | None
    payload: dict[str, Any]


@dataclass
class FlowResult:
    flow: str
    counts: FlowCounts
    seconds: float
    outcome: str = "ok"
    notes: list[str] = field(default_factory=list)
    planned: list[PlannedWrite] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    route: Any = None  # a Campaign flow's path (``mapsync.engine.bulk.choice.Choice``): REST or bulk, and why


@dataclass(frozen=True, slots=True)
class _Start:
    """How a run reads: from which cursor, in full or not, and what it retries and re-reads afterwards."""

    cursor: str | None
    full: bool
    relinked: dict[str, str]
    retry: list[DeadLetter]


class FlowRunner:
    """Runs one compiled flow once (full or incremental). ``dry_run`` plans instead of writing."""

    def __init__(self, flow: Any, source: Source, target: Target, store: StateStore, *,
                 environment: str, holder: str, dry_run: bool = False,
                 on_progress: Callable[[str, FlowCounts], None] | None = None,
                 plan_sample: int = 20, link_tables: dict[str, str] | None = None,
                 links_to: frozenset[str] = frozenset(),
                 link_reasons: Callable[[str, Sequence[str]], Awaitable[dict[str, str]]] | None = None,
                 bulk: Any = None) -> None:
        self.flow = flow
        self.bulk = bulk  # a Campaign flow's bulk path (``mapsync.engine.bulk.route.BulkRoute``), or None
        self.rules = FlowRules.of(flow)
        self.link_reasons = link_reasons  # why another flow's records are not written (see engine.link_reasons)
        self.link_tables = link_tables or {}  # flow name -> the table it writes (for references to its records)
        self.links_to = links_to  # the flows whose records this flow's records link to
        self.source = source
        self.target = target
        self.store = store
        self.environment = environment
        self.holder = holder
        self.dry_run = dry_run
        self.on_progress = on_progress
        self.plan_sample = plan_sample
        self.counts = FlowCounts()
        self.result = FlowResult(flow.name, self.counts, 0.0)
        self.failpoint = Failpoint.from_env()
        self.creates = Creates(flow.name, flow.key_target, target, store, dry_run=dry_run)
        self.writer = Writer(flow.name, flow.key_target, target, store, self.creates, batch=flow.batch,
                             failpoint=self.failpoint, on_landed=self._landed, stepped=on_progress is not None)
        self._lease_renewed = 0.0
        self._seen: set[str] | None = None  # keys a full read returned (what it did not, the source lost)
        self._saw_prefiltered = False
        self._open_dead: set[str] = set()  # keys with an open dead letter when the run started
        self._handled_dead: set[str] = set()  # of those, the keys this run has already been through

    # ------------------------------------------------------------------------------------------- driving

    async def run(self, *, full: bool = False, replay: bool = False) -> FlowResult:
        started = time.monotonic()
        if not self.dry_run:
            await self._take_lease()
        run = None if self.dry_run else await self._call(self.store.start_run, self.flow.name)
        outcome, why = "failed", ""  # stored with the outcome: `status` tells what stopped the flow
        try:
            if self.bulk is not None and not self.dry_run and not replay:
                note = await self.bulk.resume(self.counts)  # a load a stopped run left commits its cursor first
                if note:
                    self.result.notes.append(note)
            await self._read_all(await self._start(full=full, replay=replay))
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        except Exception as exc:
            why = f": {exc}"[:300]
            raise
        finally:
            await self._finish(run, outcome + why, started)
        return self.result

    async def _start(self, *, full: bool, replay: bool) -> _Start:
        """Recover what an earlier run left, and decide how this one reads."""
        name = self.flow.name
        if replay and not self.dry_run:
            await self._call(self.store.clear_flow, name)
        stored = None if replay and not self.dry_run else await self._call(self.store.get_cursor, name)
        cursor = None if (full or replay) or stored is None else stored.value
        retry: list[DeadLetter] = []
        if not self.dry_run:
            await self.creates.recover_pending()
            retry = await self._dead_letters_to_retry()
        relinked = await self._call(relinks.due, self.store, name, self.links_to)
        if relinked:
            log.info("flow %s re-reads every record: %s removed or re-created records it links to", name,
                     ", ".join(relinked), extra={"event": "executor.relink", "flow": name})
        reading_all = full or replay or cursor is None or bool(relinked)
        if reading_all and self.target.looks_up_creates:
            # The key map may not know what the target holds: empty or lost, new, or left by a first read
            # that never finished. Then one paged read of the target adopts what it has; otherwise each
            # record the key map does not know is looked up before it is created. A read that may go bulk
            # adopts too: an import cannot look a row up, and would overwrite the `once` fields of a record
            # the key map lost.
            if (stored is None or replay or not await self._call(self.store.count_keys, name)
                    or (self.bulk is not None and not self.dry_run and self.bulk.possible(full=True))):
                note = await self.creates.adopt_existing()
                if note:
                    self.result.notes.append(note)
            else:
                self.creates.look_up_all = True
        return _Start(cursor, reading_all, relinked, retry)

    async def _read_all(self, start: _Start) -> None:
        if start.full and self.on_progress is not None:
            self.counts.expected_reads = await self.source.expected_total()
        self._progress()  # the flow is on its way: the display shows it before its first page arrives
        if start.full and (self.flow.mode == "mirror" or await self._call(self.store.count_keys, self.flow.name)):
            # A full read over an existing key map (after a crash before the first cursor, a replay, an
            # expired delta token) sees no deletions: what it does not see, the source no longer has.
            self._seen = set()
        if self.bulk is not None and not self.dry_run:
            self.bulk.begin(full=start.full, counts=self.counts, send=self._send)
        await self._pump(start.cursor, full=start.full)
        if self.bulk is not None:
            if not self.dry_run:
                await self.bulk.finish()
            self.result.route = self.bulk.choice or self.bulk.decide(
                full=start.full, writes=self.counts.created + self.counts.updated)
        if self._seen is not None:
            await self._unseen_records()
        if start.retry:
            await self._retry_dead_letters(start.retry)
        if start.relinked and not self.dry_run:
            await self._call(relinks.mark_seen, self.store, self.flow.name, start.relinked)

    async def _finish(self, run: Any, outcome: str, started: float) -> None:
        self.result.seconds = time.monotonic() - started
        self.result.outcome = outcome.partition(":")[0]
        if run is not None:
            with contextlib.suppress(Exception):  # never mask the original error with a bookkeeping one
                await self._call(self.store.finish_run, run.id, outcome, self.counts.as_dict())
        if not self.dry_run:
            with contextlib.suppress(Exception):
                await self._call(self.store.release_lease, self.flow.name, self.environment, self.holder)

    async def _pump(self, cursor: str | None, *, full: bool) -> None:
        """Read ahead one page while the current one is written: the source and the target work at once."""
        queue: asyncio.Queue[SourceBatch | None] = asyncio.Queue(maxsize=2)

        async def produce() -> None:
            try:
                async for batch in self.source.batches(cursor, full=full):
                    await queue.put(batch)
            finally:
                await queue.put(None)

        producer = asyncio.create_task(produce())
        try:
            while (batch := await queue.get()) is not None:
                self.result.notes.extend(n for n in batch.notes if n not in self.result.notes)
                await self.process(batch)
                await self._renew_lease()
            await producer  # surface a read error after the pages before it were acknowledged
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producer

    async def _take_lease(self) -> None:
        await leases.take(self.store, self.flow.name, self.environment, self.holder, LEASE_TTL_SECONDS)
        self._lease_renewed = time.monotonic()

    async def _renew_lease(self) -> None:
        if self.dry_run or time.monotonic() - self._lease_renewed < LEASE_TTL_SECONDS / 3:
            return
        await self._call(self.store.renew_lease, self.flow.name, self.environment, self.holder, LEASE_TTL_SECONDS)
        self._lease_renewed = time.monotonic()

    @staticmethod
    async def _call(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------------------------------- a page

    async def process(self, batch: SourceBatch, *, retrying: dict[str, int] | None = None) -> None:
        """Plan a page, write what it needs, acknowledge the outcomes with the page's cursor."""
        plan = await self._plan(batch, retrying)
        dead = [*plan.dead, *await self._deferred(plan.deferred)]
        settled = self._moot(plan.settled, batch)
        writes = list(plan.writes)
        if self.dry_run:
            self._record_plan(writes)
            self._progress()
            return
        if self.bulk is not None and await self.bulk.take(writes, dead, settled, batch.cursor):
            self._progress()
            return
        await self._send(writes, dead, settled, batch.cursor)

    async def _send(self, writes: Sequence[Write], dead: Sequence[DeadLetterPlan], settled: Sequence[str],
                    cursor: str | None) -> None:
        """Write a planned page through the target's API and acknowledge it with ``cursor``."""
        writes = list(writes)  # the writer replaces a write by what its lookup made of it: acknowledge those
        outcomes = await self.writer.write(writes)
        self.failpoint.reach("after-write")
        await self._call(acknowledge, self.store, self.rules, Page(writes, outcomes, dead, settled, cursor),
                         self.counts)
        self.failpoint.reach("after-ack")
        self._progress()

    async def _plan(self, batch: SourceBatch, retrying: dict[str, int] | None) -> PagePlan:
        """Fetch the key-map entries the page needs, then plan it (``planner.plan_page``)."""
        evaluate = functools.partial(self.flow.evaluate, pushed=batch.prefiltered)
        page = evaluate_page(batch.rows, self.flow.key_source_wire, evaluate)
        self.counts.read += len(batch.rows)
        self.counts.rejected += page.no_key
        if page.no_key:
            log.warning("%d records without key skipped", page.no_key,
                        extra={"event": "record.no_key", "flow": self.flow.name})
        keys = [k for k, _, _ in page.records]
        if self._seen is not None:
            self._seen.update(keys)
            self._saw_prefiltered = self._saw_prefiltered or batch.prefiltered
        if batch.full and self.target.looks_up_creates and not self.creates.adopted:
            self.creates.look_up_all = True  # e.g. an expired delta token: the source fell back to a full read
        known, linked = await self._call(self._entries, [*keys, *batch.deleted], wanted_links(page))
        self.creates.stand_in(known, keys)
        plan = plan_page(self.rules, page, batch.deleted, known=known, linked=linked,
                         reference=self.target.reference, link_tables=self.link_tables, attempts=retrying)
        self.counts.filtered += plan.filtered
        self.counts.rejected += plan.rejected + sum(d.final for d in plan.deferred)
        self.counts.deferred += sum(not d.final for d in plan.deferred)
        self.counts.unchanged += plan.unchanged
        return plan

    def _entries(self, keys: list[str], wanted: dict[str, set[str]]
                 ) -> tuple[dict[str, KeyEntry], dict[str, dict[str, KeyEntry]]]:
        known = self.store.get_keys(self.flow.name, keys) if keys else {}
        return dict(known), {other: self.store.get_keys(other, sorted(values)) for other, values in wanted.items()}

    def _moot(self, settled: Sequence[str], batch: SourceBatch) -> list[str]:
        """Of the keys that needed no write, those with an open dead letter (resolved by this page)."""
        if not self._open_dead:
            return []
        column = self.flow.key_source_wire
        keys = (str(r[column]) for r in batch.rows if r.get(column) is not None)
        self._handled_dead.update(k for k in (*keys, *batch.deleted) if k in self._open_dead)
        return [k for k in settled if k in self._open_dead]

    async def _deferred(self, deferrals: Sequence[Deferral]) -> list[DeadLetterPlan]:
        """Dead letters of records held back by a link, saying why the linked record is missing."""
        why_unlinked = await self._why_unlinked(d.link for d in deferrals)
        out = []
        for d in deferrals:
            ref = d.link
            why = why_unlinked.get((ref.flow, ref.source_value), "not written yet")
            missing = f"{ref.target_path}: linked record {why} (flow {ref.flow}, key {ref.source_value})"
            reason = (f"link never resolved after {DEFERRAL_LIMIT} runs: {missing}" if d.final
                      else DEFERRED_PREFIX + missing)
            # Where the link is written in the mapping, so the dead letter points at its `file:line`.
            out.append(DeadLetterPlan(d.key, d.record, reason, ref.target_path, self.flow.file, ref.line))
        return out

    async def _why_unlinked(self, refs: Iterable[LinkRef]) -> dict[tuple[str, str], str]:
        """For links that cannot be resolved: why the linked flow has no record for them (filtered out by its
        `where`, rejected, not in the source), by (flow, source key). Absent: not written yet, as far as known."""
        wanted: dict[str, set[str]] = {}
        for ref in refs:
            wanted.setdefault(ref.flow, set()).add(ref.source_value)
        if self.link_reasons is None or not wanted:
            return {}
        out: dict[tuple[str, str], str] = {}
        for other, keys in wanted.items():
            for key, why in (await self.link_reasons(other, sorted(keys))).items():
                out[(other, key)] = why
        return out

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.flow.name, self.counts)

    def _landed(self, n: int) -> None:
        self.counts.landed += n
        self._progress()

    def _record_plan(self, writes: list[Write]) -> None:
        for w in writes:
            if w.op is Op.CREATE:
                self.counts.created += 1
            elif w.op in (Op.UPDATE, Op.FIND_UPDATE):
                self.counts.updated += 1
            elif w.op is Op.DELETE:
                self.counts.deleted += 1
            if w.op is not Op.FORGET and len(self.result.planned) < self.plan_sample:
                op = Op.UPDATE if w.op is Op.FIND_UPDATE else w.op
                self.result.planned.append(PlannedWrite(op.value, w.key, w.target_id, dict(w.payload)))

    # ------------------------------------------------------------------------------------------- after the read

    async def _unseen_records(self) -> None:
        """After a full read: records in the key map the source did not return were deleted there (mirror
        mode: removed from the target, within `max deletes`; otherwise the flow's `on delete` policy)."""
        seen = self._seen or set()
        if self._saw_prefiltered:
            return  # a pushed-down $filter hid records that merely stopped matching: absence proves nothing
        entries = await self._call(lambda: list(self.store.iter_keys(self.flow.name)))
        gone = [e for e in entries if not e.deleted and e.source_key not in seen]
        if not gone:
            return
        total = await self._call(self.store.count_keys, self.flow.name) if self.flow.max_deletes else len(entries)
        writes = plan_gone(self.rules, gone, total=total, max_deletes=self.flow.max_deletes)
        if self.dry_run:
            self._record_plan(writes)
            return
        outcomes = await self.writer.write(writes)
        await self._call(acknowledge, self.store, self.rules, Page(writes, outcomes), self.counts)

    async def _dead_letters_to_retry(self) -> list[DeadLetter]:
        """Records deferred by a missing link, failed by a transient error, or queued by `mapsync deadletters
        retry`. They go through again after the read, unless the read already brought them (fresher)."""
        waiting = await self._call(self.store.open_dead_letters, self.flow.name)
        self._open_dead = {d.source_key for d in waiting}
        return [d for d in waiting if d.status == "retried" or d.reason.startswith((DEFERRED_PREFIX, TRANSIENT_PREFIX))]

    async def _retry_dead_letters(self, retry: list[DeadLetter]) -> None:
        retry = [d for d in retry if d.source_key not in self._handled_dead]
        if not retry:
            return
        attempts = {d.source_key: d.attempts for d in retry}
        saved = self.counts.read
        if self.source.fetches_current:
            # As the source has them now: a record changed since it failed is written as it is, and one that
            # is gone is a deletion (a failed delete keeps only the key, so this is also how it is retried).
            current = await self.source.fetch_many([d.source_key for d in retry])
            rows = [current[d.source_key] for d in retry if d.source_key in current]
            gone = [d.source_key for d in retry if d.source_key not in current]
            await self.process(SourceBatch(rows, gone), retrying=attempts)
        else:
            await self.process(SourceBatch([d.record for d in retry if isinstance(d.record, dict)]), retrying=attempts)
        self.counts.read = saved  # retried records were read in an earlier run
