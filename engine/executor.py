"""The generic sync loop, the same for every compiled flow in either direction.

    extract (source pages) -> filter -> transform -> resolve links -> diff against the key map
    -> batched concurrent writes -> acknowledge (key map, dead letters) -> move the cursor

Crash safety is at-least-once with idempotent writes: before a page's creates are sent they are
recorded as pending; a run that finds pending creates looks each one up in the target first, so a
create whose reply was lost is adopted, never made twice. A create stays pending until a lookup has
answered: a lookup that fails is never taken for "not there". The key map is not trusted to know the
target either: before a flow's first read (an empty, lost or new state store, a replay) every target
record carrying the flow's key is adopted into the key map in one paged read, and on any other full read
a record without a key-map entry is looked up before it is created. The cursor moves only in the same
transaction that records the outcomes of every write before it. One bad record never stops a run: it
becomes a dead letter with the reason, the mapping line and the mapping version.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mapsync.dsl.runtime import ContactRef, Filtered, LinkRef, Mapped, Rejected
from mapsync.engine import leases
from mapsync.engine.connectors.base import WriteOp, WriteOutcome
from mapsync.engine.errors import ConnectorError, SyncError, TransientError
from mapsync.engine.leases import LEASE_TTL_SECONDS
from mapsync.engine.sources import Source, SourceBatch
from mapsync.engine.state.base import DeadLetter, KeyEntry, PendingWrite, StateStore
from mapsync.engine.targets import Target

__all__ = ["DEFERRAL_LIMIT", "FlowCounts", "FlowResult", "FlowRunner", "PlannedWrite", "payload_hash"]

log = logging.getLogger("mapsync.executor")

# A record whose link cannot be resolved is retried in this many runs before it is a dead letter for good.
DEFERRAL_LIMIT = 3
DEFERRED_PREFIX = "deferred: "
DEFAULT_BATCH = 1000  # records handed to a connector at once; it splits them into requests itself
# Writes that failed transiently after the HTTP layer's own retries get this many more rounds in the run.
TRANSIENT_ROUNDS = 4
TRANSIENT_PAUSE = 0.5
TRANSIENT_PREFIX = "transient: "
PROGRESS_STEP = 25  # Campaign writes handed over at once when a progress display is watching


class _Failpoint:
    """Crash tests only: ``MAPSYNC_FAILPOINT=site:n`` kills this process (SIGKILL, no cleanup) the n-th time
    the executor reaches ``site`` (before-write, after-write, after-ack). Unset, it costs one comparison."""

    def __init__(self, spec: str | None) -> None:
        site, _, count = (spec or "").partition(":")
        self.site = site or None
        self.left = int(count) if count.isdigit() else 1

    def reach(self, site: str) -> None:
        if site != self.site:
            return
        self.left -= 1
        if self.left <= 0:
            os.kill(os.getpid(), signal.SIGKILL)


_FAILPOINT = _Failpoint(os.environ.get("MAPSYNC_FAILPOINT"))


def payload_hash(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()


@dataclass
class FlowCounts:
    read: int = 0
    filtered: int = 0
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
        return (self.filtered + self.created + self.updated + self.unchanged + self.rejected + self.deferred
                + self.failed + self.landed)

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


@dataclass
class _Work:
    """One record on its way to the target: what to send and how to acknowledge it."""

    key: str
    op: str  # create | update | delete
    payload: dict[str, Any]
    target_id: str | None
    hash: str | None
    record: dict[str, Any] | None = None
    mapped: Mapped | None = None
    tombstone: bool = False  # the source record is gone: the entry is marked deleted once this is written
    relinks: bool = False  # writing this changes which target record a source key stands for (see _relinked)


class FlowRunner:
    """Runs one compiled flow once (full or incremental). ``dry_run`` plans instead of writing."""

    def __init__(self, flow: Any, source: Source, target: Target, store: StateStore, *,
                 environment: str, holder: str, dry_run: bool = False,
                 on_progress: Callable[[str, FlowCounts], None] | None = None,
                 plan_sample: int = 20, link_tables: dict[str, str] | None = None,
                 links_to: frozenset[str] = frozenset(),
                 link_reasons: Callable[[str, Sequence[str]], Awaitable[dict[str, str]]] | None = None) -> None:
        self.flow = flow
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
        self._lease_renewed = 0.0
        self._seen: set[str] | None = None
        self._saw_prefiltered = False
        self._open_dead: set[str] = set()  # keys with an open dead letter when the run started
        self._handled_dead: set[str] = set()  # of those, the keys this run has already been through
        self._lookup_creates = False  # look each create up in the target first (a full read over a key map)
        self._unresolved: set[str] = set()  # pending creates no lookup has answered yet: never created blindly
        self._existing: dict[str, str] = {}  # plan only: target records by key, found before the first read
        self._adopted = False  # the target's records were adopted by one paged read before this run's first read

    # ------------------------------------------------------------------------------------------- driving

    async def run(self, *, full: bool = False, replay: bool = False) -> FlowResult:
        started = time.monotonic()
        name = self.flow.name
        if not self.dry_run:
            await self._take_lease()
        run = None if self.dry_run else await self._call(self.store.start_run, name)
        outcome = "failed"
        why = ""  # stored with the outcome: `status` tells what stopped the flow, not just that it did
        try:
            if replay and not self.dry_run:
                await self._call(self.store.clear_flow, name)
            stored = None if replay and not self.dry_run else await self._call(self.store.get_cursor, name)
            cursor = None if (full or replay) or stored is None else stored.value
            retry: list[DeadLetter] = []
            if not self.dry_run:
                await self._recover_pending()
                retry = await self._dead_letters_to_retry()
            relinked = await self._call(self._relinked)
            if relinked:
                log.info("flow %s re-reads every record: %s removed or re-created records it links to", name,
                         ", ".join(relinked), extra={"event": "executor.relink", "flow": name})
            reading_all = full or replay or cursor is None or bool(relinked)
            if reading_all and self.target.looks_up_creates:
                # The key map may not know what the target holds: empty or lost, new, or left by a first read
                # that never finished. Then one paged read of the target adopts what it has; otherwise each
                # record the key map does not know is looked up before it is created.
                first_read = stored is None or replay or not await self._call(self.store.count_keys, name)
                if first_read:
                    await self._adopt_existing()
                else:
                    self._lookup_creates = True
            if reading_all and self.on_progress is not None:
                self.counts.expected_reads = await self.source.expected_total()
            self._progress()  # the flow is on its way: the display shows it before its first page arrives
            if reading_all and (self.flow.mode == "mirror" or await self._call(self.store.count_keys, name)):
                # A full read over an existing key map (after a crash before the first cursor, a replay, an
                # expired delta token) sees no deletions: what it does not see, the source no longer has.
                self._seen = set()
            await self._pump(cursor, full=reading_all)
            if self._seen is not None:
                await self._unseen_records()
            if retry:
                await self._retry_dead_letters(retry)
            if relinked and not self.dry_run:
                await self._call(self._mark_relinks_seen, relinked)
            outcome = "ok"
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        except Exception as exc:
            why = f": {exc}"[:300]
            raise
        finally:
            self.result.seconds = time.monotonic() - started
            self.result.outcome = outcome
            if run is not None:
                with contextlib.suppress(Exception):  # never mask the original error with a bookkeeping one
                    await self._call(self.store.finish_run, run.id, outcome + why, self.counts.as_dict())
            if not self.dry_run:
                with contextlib.suppress(Exception):
                    await self._call(self.store.release_lease, name, self.environment, self.holder)
        return self.result

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
            while True:
                batch = await queue.get()
                if batch is None:
                    break
                for note in batch.notes:
                    if note not in self.result.notes:
                        self.result.notes.append(note)
                await self.process(batch)
                await self._renew_lease()
            await producer  # surface a read error after the pages before it were acknowledged
        finally:
            if not producer.done():
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producer

    # A record that links to another flow's record stores that record's target id in its payload. When the other
    # flow deletes a target record or makes a new one for the same source key, the target system drops or
    # dangles the link although the linking record did not change at its source: such a flow re-reads
    # all its records once (unchanged payloads are still not written). Generations in the state store's meta
    # say when that is due, for every runner.

    def _relinked(self) -> dict[str, str]:
        """The linked flows whose generation moved since this flow last re-read, with that generation (taken
        now: a change made while this run reads is seen by the next run, not marked seen by this one)."""
        due = {}
        for other in sorted(self.links_to):
            generation = self.store.get_meta(f"links:{other}:generation")
            if generation is not None and generation != self.store.get_meta(f"links:{other}:seen-by:{self.flow.name}"):
                due[other] = generation
        return due

    def _mark_relinks_seen(self, relinked: dict[str, str]) -> None:
        with self.store.transaction():
            for other, generation in relinked.items():
                self.store.set_meta(f"links:{other}:seen-by:{self.flow.name}", generation)

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
        flow = self.flow
        keyed: list[tuple[str, dict[str, Any]]] = []
        key_column = flow.key_source_wire
        for row in batch.rows:
            self.counts.read += 1
            raw_key = row.get(key_column)
            if raw_key is None:
                self.counts.rejected += 1
                log.warning("record without key skipped", extra={"event": "record.no_key", "flow": flow.name})
                continue
            keyed.append((str(raw_key), row))
        keys = [k for k, _ in keyed]
        if self._seen is not None:
            self._seen.update(keys)
            self._saw_prefiltered = self._saw_prefiltered or batch.prefiltered
        known = await self._call(self.store.get_keys, flow.name, keys + list(batch.deleted)) if keys or batch.deleted else {}
        if batch.full and self.target.looks_up_creates and not self._adopted:
            self._lookup_creates = True  # e.g. an expired delta token: the source fell back to a full read
        if self._existing:  # a plan before the first read: what the target holds stands in for the key map
            known.update({k: KeyEntry(k, self._existing[k], None, True) for k in keys
                          if k in self._existing and (k not in known or known[k].deleted)})

        work: list[_Work] = []
        dead: list[tuple[str, dict[str, Any], Rejected | str, str | None]] = []
        settled: list[str] = []  # needed no write: an open dead letter of theirs is moot
        mapped_rows: list[tuple[str, dict[str, Any], Mapped]] = []
        for key, row in keyed:
            outcome = flow.evaluate(row, pushed=batch.prefiltered)
            if isinstance(outcome, Filtered):
                self.counts.filtered += 1
                entry = known.get(key)
                if flow.on_filtered == "delete" and entry is not None and not entry.deleted:
                    self._removal(entry, work)
                else:
                    settled.append(key)
                continue
            if isinstance(outcome, Rejected):
                self.counts.rejected += 1
                dead.append((key, row, outcome, None))
                continue
            mapped_rows.append((key, row, outcome))

        resolved, unresolved = await self._resolve_refs([m for _, _, m in mapped_rows])
        why_unlinked = await self._why_unlinked(unresolved.values())
        for key, row, mapped in mapped_rows:
            payload = resolved.get(id(mapped))
            if payload is None:
                ref = unresolved[id(mapped)]
                why = why_unlinked.get((ref.flow, ref.source_value), "not written yet")
                missing = f"{ref.target_path}: linked record {why} (flow {ref.flow}, key {ref.source_value})"
                attempts = (retrying or {}).get(key, 0) + 1
                if attempts >= DEFERRAL_LIMIT:
                    reason = f"link never resolved after {attempts} runs: {missing}"
                    self.counts.rejected += 1
                else:
                    reason = DEFERRED_PREFIX + missing
                    self.counts.deferred += 1
                # Where the link is written in the mapping, so the dead letter points at its `file:line`.
                dead.append((key, row, Rejected(flow.name, key, reason, ref.target_path, flow.file, ref.line), None))
                continue
            if not self._plan_write(key, row, mapped, payload, known.get(key), work):
                settled.append(key)

        for key in batch.deleted:
            entry = known.get(key)
            planned = len(work)
            if entry is not None and not entry.deleted:
                self._deletion(entry, work)
            if len(work) == planned:
                settled.append(key)
        if self._open_dead:
            self._handled_dead.update(k for k in (*keys, *batch.deleted) if k in self._open_dead)
            settled = [k for k in settled if k in self._open_dead]
        else:
            settled = []

        if self.dry_run:
            self._record_plan(work)
            self._progress()
            return
        outcomes = await self._write(work)
        _FAILPOINT.reach("after-write")
        await self._call(self._acknowledge, work, outcomes, dead, batch.cursor, settled)
        _FAILPOINT.reach("after-ack")
        self._progress()

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.flow.name, self.counts)

    # ------------------------------------------------------------------------------------ references

    async def _why_unlinked(self, refs: Iterable[LinkRef]) -> dict[tuple[str, str], str]:
        """For links that cannot be resolved: why the linked flow has no record for them (filtered out by its
        `where`, rejected, not in the source), by (flow, source key). Absent: not written yet, as far as known."""
        if self.link_reasons is None:
            return {}
        wanted: dict[str, list[str]] = {}
        for ref in refs:
            wanted.setdefault(ref.flow, []).append(ref.source_value)
        out: dict[tuple[str, str], str] = {}
        for other, keys in wanted.items():
            for key, why in (await self.link_reasons(other, sorted(set(keys)))).items():
                out[(other, key)] = why
        return out

    async def _resolve_refs(
        self, mapped: Sequence[Mapped]
    ) -> tuple[dict[int, dict[str, Any]], dict[int, LinkRef]]:
        """Payloads with every reference written in the target's form, by ``id()`` of the mapped record; and for
        each record with a link that cannot be resolved yet, that link."""
        wanted: dict[str, set[str]] = {}
        for m in mapped:
            for ref in m.refs:
                if isinstance(ref, LinkRef):
                    wanted.setdefault(ref.flow, set()).add(ref.source_value)
        found: dict[str, dict[str, KeyEntry]] = {}
        for other, values in wanted.items():
            found[other] = await self._call(self.store.get_keys, other, sorted(values))
        unresolved: dict[int, LinkRef] = {}
        out: dict[int, dict[str, Any]] = {}
        for m in mapped:
            payload = _deep_copy(m.payload) if m.refs else m.payload
            ok = True
            for ref in m.refs:
                if isinstance(ref, LinkRef):
                    entry = found.get(ref.flow, {}).get(ref.source_value)
                    if entry is None or entry.target_id is None or entry.deleted:
                        unresolved[id(m)] = ref
                        ok = False
                        break
                    self.target.reference(payload, ref.target_path, self.link_tables.get(ref.flow, ""), entry.target_id)
                elif isinstance(ref, ContactRef):
                    self.target.reference(payload, ref.target_path, "contact", ref.external_id)
            if ok:
                out[id(m)] = payload
        return out, unresolved

    # ------------------------------------------------------------------------------------------- diffing

    def _plan_write(self, key: str, row: dict[str, Any], mapped: Mapped, payload: dict[str, Any],
                    entry: KeyEntry | None, work: list[_Work]) -> bool:
        """Plan the write a mapped record needs; False when the target already has it."""
        flow = self.flow
        digest = payload_hash(payload)
        if entry is not None and not entry.deleted and entry.target_id is not None:
            if entry.payload_hash == digest:
                self.counts.unchanged += 1
                return False
            if flow.mode == "create":
                self.counts.unchanged += 1  # create-only flows never touch what they already wrote
                return False
            update = {k: v for k, v in payload.items() if k not in mapped.once} if mapped.once else payload
            work.append(_Work(key, "update", update, entry.target_id, digest, row, mapped))
            return True
        if flow.mode == "update":
            work.append(_Work(key, "update-existing", payload, None, digest, row, mapped))
            return True
        work.append(_Work(key, "create", payload, None, digest, row, mapped, relinks=entry is not None))
        return True

    def _removal(self, entry: KeyEntry, work: list[_Work]) -> None:
        """A record that stopped matching the filter, with `on filtered: delete`."""
        if entry.created_by_mapsync and entry.target_id:
            work.append(_Work(entry.source_key, "delete", {}, entry.target_id, None, relinks=True))
        else:
            work.append(_Work(entry.source_key, "forget", {}, entry.target_id, None))

    def _deletion(self, entry: KeyEntry, work: list[_Work]) -> None:
        """A source record deleted: apply the flow's `on delete` policy."""
        policy = self.flow.on_delete
        if policy.action == "delete" and entry.created_by_mapsync and entry.target_id:
            work.append(_Work(entry.source_key, "delete", {}, entry.target_id, None, relinks=True))
        elif policy.action == "set" and entry.target_id:
            work.append(_Work(entry.source_key, "update", dict(policy.values), entry.target_id, None, tombstone=True))
        else:
            work.append(_Work(entry.source_key, "forget", {}, entry.target_id, None))

    async def _unseen_records(self) -> None:
        """After a full read: records in the key map the source did not return were deleted there (mirror
        mode: removed from the target, within `max deletes`; otherwise the flow's `on delete` policy)."""
        assert self._seen is not None
        if self._saw_prefiltered:
            return  # a pushed-down $filter hid records that merely stopped matching: absence proves nothing
        gone: list[KeyEntry] = []
        for entry in await self._call(lambda: list(self.store.iter_keys(self.flow.name))):
            if not entry.deleted and entry.source_key not in self._seen:
                gone.append(entry)
        if not gone:
            return
        plan = self._deletion  # the flow's `on delete` policy
        limit = self.flow.max_deletes
        if self.flow.mode == "mirror":
            plan = self._removal
            if limit is not None:
                total = max(1, await self._call(self.store.count_keys, self.flow.name))
                value, percent = limit.value, limit.percent
                allowed = total * value / 100 if percent else value
                if len(gone) > allowed:
                    raise SyncError(
                        f"flow {self.flow.name}: mirror mode would delete {len(gone)} of {total} records, more "
                        f"than `max deletes` allows ({value:g}{'%' if percent else ''}); nothing was deleted. "
                        "Check the source, or raise the limit in the mapping.")
        work: list[_Work] = []
        for entry in gone:
            plan(entry, work)
        if self.dry_run:
            self._record_plan(work)
            return
        await self._call(self._acknowledge, work, await self._write(work), [], None)

    # ------------------------------------------------------------------------------------------- writing

    def _ops(self, work: Sequence[_Work]) -> list[WriteOp]:
        flow = self.flow
        ops: list[WriteOp] = []
        for i, w in enumerate(work):
            if w.op == "forget":
                continue
            if w.op == "create":
                ops.append(WriteOp("create", self.target.table, w.payload, alternate_key=(flow.key_target, w.key),
                                   ref=i))
            elif w.op in ("update", "update-existing", "adopt"):
                if w.target_id is None:
                    continue
                ops.append(WriteOp("update", self.target.table, w.payload, target_id=w.target_id, ref=i))
            elif w.op == "delete":
                ops.append(WriteOp("delete", self.target.table, target_id=w.target_id, ref=i))
        return ops

    async def _write(self, work: list[_Work]) -> list[WriteOutcome | None]:
        outcomes: list[WriteOutcome | None] = [None] * len(work)
        if not work:
            return outcomes
        # update mode finds the target record by the key field (records without one are left alone); a create
        # is looked up first when the key map may not know the target, or an earlier lookup of it failed.
        lookups = [w for w in work if w.op == "update-existing"
                   or (w.op == "create" and (self._lookup_creates or w.key in self._unresolved))]
        if lookups:
            for i, failure in await self._look_up(work, lookups):
                outcomes[i] = failure
        creates = [PendingWrite(w.key, "create", w.hash) for w in work if w.op in ("create", "unresolved")]
        if creates:
            await self._call(self.store.add_pending, self.flow.name, creates)
        _FAILPOINT.reach("before-write")
        pending = self._ops(work)
        size = self.flow.batch or DEFAULT_BATCH
        for attempt in range(TRANSIENT_ROUNDS):
            retry: list[WriteOp] = []
            for start in range(0, len(pending), size):
                for outcome in await self._write_chunk(pending[start : start + size]):
                    outcomes[outcome.ref] = outcome
                    if not outcome.ok and outcome.transient:
                        retry.append(pending[start + [o.ref for o in pending[start : start + size]].index(outcome.ref)])
            if not retry or attempt == TRANSIENT_ROUNDS - 1:
                break
            await asyncio.sleep(TRANSIENT_PAUSE * 2**attempt)
            pending = []
            for op in retry:
                if op.op == "create":
                    # The create may have happened before its reply was lost: adopt it instead of making two.
                    try:
                        found = await self.target.find(self.flow.key_target, work[op.ref].key)
                    except ConnectorError:
                        continue  # unknown whether it exists: not sent again, it stays pending for the next run
                    if found is not None:
                        outcomes[op.ref] = WriteOutcome(op.ref, True, found, 200, message="created earlier")
                        continue
                pending.append(op)
            if not pending:
                break
        return outcomes

    async def _write_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        """``target.write``, in steps the progress display can show. Campaign writes one request per record, so
        smaller calls change no request and run at once (the HTTP layer bounds what is on the wire); a Dataverse
        ``$batch`` is kept whole."""
        if self.on_progress is None or self.target.system != "campaign" or len(ops) <= PROGRESS_STEP:
            outcomes = await self.target.write(ops)
            self._landed(len(ops))
            return outcomes

        # A few steps at a time: the next ones fill the wire while the last requests of the one before finish,
        # and steps end about in order, so the count moves steadily instead of all at once at the end.
        in_flight = asyncio.Semaphore(4)

        async def step(part: list[WriteOp]) -> list[WriteOutcome]:
            async with in_flight:
                outcomes = await self.target.write(part)
            self._landed(len(part))
            return outcomes

        parts = await asyncio.gather(*(step(ops[i : i + PROGRESS_STEP]) for i in range(0, len(ops), PROGRESS_STEP)))
        return [outcome for part in parts for outcome in part]

    def _landed(self, n: int) -> None:
        self.counts.landed += n
        self._progress()

    async def _look_up(self, work: list[_Work], lookups: list[_Work]) -> list[tuple[int, WriteOutcome]]:
        """Find the target records of ``lookups`` by the flow's key, all at once (the HTTP layer bounds what is
        on the wire). A create found is adopted. A lookup that fails leaves its record unwritten (``unresolved``:
        a create stays pending) with a failure outcome, returned with the record's index in ``work``."""
        index = {id(w): i for i, w in enumerate(work)}
        key_field = self.flow.key_target

        async def one(w: _Work) -> tuple[int, WriteOutcome] | None:
            try:
                found = await self.target.find(key_field, w.key)
            except ConnectorError as exc:
                if w.op == "create":
                    w.op = "unresolved"
                what = "not created" if w.op == "unresolved" else "not updated"
                return index[id(w)], WriteOutcome(
                    index[id(w)], False, status=exc.status, code=exc.code, transient=isinstance(exc, TransientError),
                    message=f"{what}: the lookup of {key_field} = {w.key} in {self.target.table} failed ({exc})")
            self._unresolved.discard(w.key)
            if w.op == "update-existing":
                w.target_id = found
            elif found is not None:
                once = w.mapped.once if w.mapped is not None else frozenset()
                w.op, w.target_id = "adopt", found
                w.payload = {k: v for k, v in w.payload.items() if k not in once} if once else w.payload
            return None

        return [r for r in await asyncio.gather(*(one(w) for w in lookups)) if r is not None]

    def _acknowledge(self, work: list[_Work], outcomes: list[WriteOutcome | None],
                     dead: list[tuple[str, dict[str, Any], Rejected | str, str | None]], cursor: str | None,
                     settled: Sequence[str] = ()) -> None:
        """Record what happened to a page, and move the cursor, in one transaction (runs in a worker thread)."""
        flow = self.flow
        store = self.store
        now_entries: list[KeyEntry] = []
        forget: list[str] = []
        went_through: list[str] = []
        with store.transaction():
            for w, outcome in zip(work, outcomes, strict=True):
                if w.op == "forget":
                    now_entries.append(KeyEntry(w.key, w.target_id, None, False, deleted=True))
                    continue
                if w.op == "update-existing" and w.target_id is None and outcome is None:
                    self.counts.filtered += 1  # update mode: nothing to update for this key
                    continue
                if outcome is None or not outcome.ok:
                    self.counts.failed += 1
                    reason = _failure_reason(outcome)
                    if outcome is not None and outcome.transient:
                        reason = TRANSIENT_PREFIX + reason  # retried automatically by the next run
                    store.add_dead_letter(flow.name, w.key, w.record or {"key": w.key}, reason,
                                          mapping_file=flow.file, mapping_line=flow.line, mapping_version=flow.version)
                    continue
                went_through.append(w.key)
                if w.op == "delete":
                    self.counts.deleted += 1
                    forget.append(w.key)
                elif w.op == "create":
                    self.counts.created += 1
                    now_entries.append(KeyEntry(w.key, outcome.target_id, w.hash, True))
                elif w.op == "adopt":
                    self.counts.updated += 1
                    now_entries.append(KeyEntry(w.key, w.target_id, w.hash, True))
                else:
                    self.counts.updated += 1
                    # Only records in the key map are updated, and the key map holds only what mapsync wrote.
                    now_entries.append(KeyEntry(w.key, w.target_id, w.hash, True, deleted=w.tombstone))
            for key, row, why, path in dead:
                if isinstance(why, Rejected):
                    store.add_dead_letter(flow.name, key, row, why.reason, field=why.field, mapping_file=why.file,
                                          mapping_line=why.line, mapping_version=flow.version)
                else:
                    store.add_dead_letter(flow.name, key, row, why, field=path, mapping_file=flow.file,
                                          mapping_line=flow.line, mapping_version=flow.version)
            if now_entries:
                store.put_keys(flow.name, now_entries)
            if forget:
                store.put_keys(flow.name, [KeyEntry(k, None, None, False, deleted=True) for k in forget])
            if went_through or settled:
                store.resolve_dead_letters(flow.name, [*went_through, *settled])
            # A create stays pending while it may exist without our knowing: its lookup failed, or the service
            # failed transiently (the reply may be what was lost). The next run looks it up before anything else.
            store.clear_pending(flow.name, [w.key for w, o in zip(work, outcomes, strict=True)
                                            if w.op == "adopt" or (w.op == "create" and o is not None
                                                                   and (o.ok or not o.transient))])
            if any(w.relinks for w, o in zip(work, outcomes, strict=True) if o is not None and o.ok):
                generation = int(store.get_meta(f"links:{flow.name}:generation") or 0) + 1
                store.set_meta(f"links:{flow.name}:generation", str(generation))
            if cursor is not None:
                store.set_cursor(flow.name, cursor)
        self.counts.landed = 0  # now counted as created, updated, deleted or failed

    def _record_plan(self, work: list[_Work]) -> None:
        for w in work:
            if w.op == "create":
                self.counts.created += 1
            elif w.op in ("update", "update-existing", "adopt"):
                self.counts.updated += 1
            elif w.op == "delete":
                self.counts.deleted += 1
            if w.op != "forget" and len(self.result.planned) < self.plan_sample:
                self.result.planned.append(PlannedWrite(w.op.replace("-existing", ""), w.key, w.target_id, w.payload))

    # ------------------------------------------------------------------------------------------- recovery

    async def _recover_pending(self) -> None:
        """Creates sent by a run that died before their outcome was recorded: adopt what the target has."""
        pending = await self._call(self.store.pending_writes, self.flow.name)
        if not pending:
            return
        key_field = self.flow.key_target

        async def look_up(key: str) -> str | ConnectorError | None:
            try:
                return await self.target.find(key_field, key)
            except ConnectorError as exc:
                return exc

        creates = [p.source_key for p in pending if p.operation == "create"]
        found = dict(zip(creates, await asyncio.gather(*(look_up(k) for k in creates)), strict=True))
        # Unknown hash: the next sight of the record rewrites it once, which is harmless.
        adopted = [KeyEntry(k, t, None, True) for k, t in found.items() if isinstance(t, str)]
        self._unresolved = {k for k, t in found.items() if isinstance(t, ConnectorError)}
        answered = [p.source_key for p in pending if p.source_key not in self._unresolved]
        log.info("recovered %d pending creates (%d found in the target, %d not answered)", len(pending),
                 len(adopted), len(self._unresolved), extra={"event": "executor.recovered", "flow": self.flow.name})
        if self._unresolved:
            first = next(t for t in found.values() if isinstance(t, ConnectorError))
            log.warning("flow %s: %d pending creates could not be looked up (%s); they stay pending and are not "
                        "created until a lookup answers", self.flow.name, len(self._unresolved), first,
                        extra={"event": "executor.lookup_failed", "flow": self.flow.name})

        def commit() -> None:
            with self.store.transaction():
                if adopted:
                    self.store.put_keys(self.flow.name, adopted)
                self.store.clear_pending(self.flow.name, answered)

        await self._call(commit)

    async def _adopt_existing(self) -> None:
        """Before a first read: every target record that carries the flow's key goes into the key map (one
        paged read of the target, not one lookup per record), so a target that already holds the records —
        state lost, moved or new, a replay — gets them updated, not duplicated. A plan keeps them in memory."""
        name, key_field = self.flow.name, self.flow.key_target
        adopted = 0
        self._adopted = True
        async for page in self.target.existing(key_field):
            if self.dry_run:
                self._existing.update(page)
            elif page:
                adopted += await self._call(self._adopt_page, page)
        if self._unresolved and not self.dry_run:
            # The read answered the pending creates no lookup could: found ones were adopted, the rest never made.
            await self._call(self.store.clear_pending, name, sorted(self._unresolved))
            self._unresolved.clear()
        adopted = adopted or len(self._existing)
        if adopted:
            note = (f"{adopted:,} records already in {self.target.table} (found by {key_field}) were missing from the "
                    "key map: adopted, not created again")
            self.result.notes.append(note)
            log.info("flow %s: %s", name, note, extra={"event": "executor.adopted", "flow": name, "count": adopted})

    def _adopt_page(self, page: Sequence[tuple[str, str]]) -> int:
        with self.store.transaction():
            known = self.store.get_keys(self.flow.name, [k for k, _ in page])
            new = [KeyEntry(k, t, None, True) for k, t in page
                   if k not in known or known[k].deleted or known[k].target_id is None]
            if new:
                self.store.put_keys(self.flow.name, new)
        return len(new)

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


def _deep_copy(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in payload.items()}


def _failure_reason(outcome: WriteOutcome | None) -> str:
    if outcome is None:
        return "the write was not attempted"
    parts = [outcome.message or "rejected by the target"]
    if outcome.code:
        parts.append(f"(code {outcome.code}")
        parts[-1] += f", HTTP {outcome.status})" if outcome.status else ")"
    elif outcome.status:
        parts.append(f"(HTTP {outcome.status})")
    return " ".join(parts)
