"""The generic sync loop, the same for every compiled flow in either direction.

    extract (source pages) -> filter -> transform -> resolve links -> diff against the key map
    -> batched concurrent writes -> acknowledge (key map, dead letters) -> move the cursor

Crash safety is at-least-once with idempotent writes: before a page's creates are sent they are
recorded as pending; a run that finds pending creates looks each one up in the target first, so a
create whose reply was lost is adopted, never made twice. The cursor moves only in the same
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
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mapsync.dsl.runtime import ContactRef, Filtered, LinkRef, Mapped, Rejected
from mapsync.engine.connectors.base import WriteOp, WriteOutcome
from mapsync.engine.errors import LeaseHeld, SyncError
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
LEASE_TTL_SECONDS = 300.0


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

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "expected_reads"}

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
                 links_to: frozenset[str] = frozenset()) -> None:
        self.flow = flow
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
        self.adopt = False  # look each create up in the target first (after a replay forgot the key map)

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
                self.adopt = True
            cursor_row = None if (full or replay) else await self._call(self.store.get_cursor, name)
            cursor = cursor_row.value if cursor_row else None
            retry: list[DeadLetter] = []
            if not self.dry_run:
                await self._recover_pending()
                retry = await self._dead_letters_to_retry()
            relinked = await self._call(self._relinked)
            if relinked:
                log.info("flow %s re-reads every record: %s removed or re-created records it links to", name,
                         ", ".join(relinked), extra={"event": "executor.relink", "flow": name})
            reading_all = full or replay or cursor is None or bool(relinked)
            if reading_all and self.on_progress is not None:
                self.counts.expected_reads = await self.source.expected_total()
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
        name = self.flow.name
        try:
            await self._call(self.store.acquire_lease, name, self.environment, self.holder, LEASE_TTL_SECONDS)
        except LeaseHeld as exc:
            holder = getattr(exc, "holder", None)
            if not holder or not _holder_is_gone(holder):
                raise
            # The runner that held it was killed on this machine: its lease would block for the whole TTL.
            log.warning("taking over the lease of %s from %s, which is no longer running", name, holder,
                        extra={"event": "executor.lease_takeover", "flow": name})
            await self._call(self.store.release_lease, name, self.environment, holder)
            await self._call(self.store.acquire_lease, name, self.environment, self.holder, LEASE_TTL_SECONDS)
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
        for key, row, mapped in mapped_rows:
            payload = resolved.get(id(mapped))
            if payload is None:
                path, missing = unresolved[id(mapped)]
                attempts = (retrying or {}).get(key, 0) + 1
                if attempts >= DEFERRAL_LIMIT:
                    reason = f"link never resolved after {attempts} runs: {missing}"
                    self.counts.rejected += 1
                else:
                    reason = DEFERRED_PREFIX + missing
                    self.counts.deferred += 1
                dead.append((key, row, reason, path))
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

    async def _resolve_refs(
        self, mapped: Sequence[Mapped]
    ) -> tuple[dict[int, dict[str, Any]], dict[int, tuple[str, str]]]:
        """Payloads with every reference written in the target's form, by ``id()`` of the mapped record; and for
        each record with a link that cannot be resolved yet, the target field and why."""
        wanted: dict[str, set[str]] = {}
        for m in mapped:
            for ref in m.refs:
                if isinstance(ref, LinkRef):
                    wanted.setdefault(ref.flow, set()).add(ref.source_value)
        found: dict[str, dict[str, KeyEntry]] = {}
        for other, values in wanted.items():
            found[other] = await self._call(self.store.get_keys, other, sorted(values))
        unresolved: dict[int, tuple[str, str]] = {}
        out: dict[int, dict[str, Any]] = {}
        for m in mapped:
            payload = _deep_copy(m.payload) if m.refs else m.payload
            ok = True
            for ref in m.refs:
                if isinstance(ref, LinkRef):
                    entry = found.get(ref.flow, {}).get(ref.source_value)
                    if entry is None or entry.target_id is None or entry.deleted:
                        unresolved[id(m)] = (ref.target_path, f"{ref.target_path} links to record {ref.source_value} "
                                                              f"of flow {ref.flow}, which has not been written yet")
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
        # update mode: find the target record by the key field; records without one are left alone.
        for w in work:
            if w.op == "update-existing":
                w.target_id = await self.target.find(self.flow.key_target, w.key)
            elif w.op == "create" and self.adopt:
                # A replay forgot the key map, not the target: records written before carry our key.
                found = await self.target.find(self.flow.key_target, w.key)
                if found is not None:
                    w.op, w.target_id = "adopt", found
        creates = [PendingWrite(w.key, "create", w.hash) for w in work if w.op == "create"]
        if creates:
            await self._call(self.store.add_pending, self.flow.name, creates)
        _FAILPOINT.reach("before-write")
        pending = self._ops(work)
        size = self.flow.batch or DEFAULT_BATCH
        for attempt in range(TRANSIENT_ROUNDS):
            retry: list[WriteOp] = []
            for start in range(0, len(pending), size):
                for outcome in await self.target.write(pending[start : start + size]):
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
                    found = await self.target.find(self.flow.key_target, work[op.ref].key)
                    if found is not None:
                        outcomes[op.ref] = WriteOutcome(op.ref, True, found, 200, message="created earlier")
                        continue
                pending.append(op)
            if not pending:
                break
        return outcomes

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
                if w.op == "update-existing" and w.target_id is None:
                    self.counts.filtered += 1  # update mode: nothing to update for this key
                    continue
                if outcome is None or not outcome.ok:
                    self.counts.failed += 1
                    reason = _failure_reason(outcome)
                    if outcome is not None and outcome.transient:
                        reason = TRANSIENT_PREFIX + reason  # retried automatically by the next run
                    store.add_dead_letter(flow.name, w.key, w.record or {"key": w.key}, reason,
                                          mapping_file=flow.file, mapping_version=flow.version)
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
                                          mapping_version=flow.version)
            if now_entries:
                store.put_keys(flow.name, now_entries)
            if forget:
                store.put_keys(flow.name, [KeyEntry(k, None, None, False, deleted=True) for k in forget])
            if went_through or settled:
                store.resolve_dead_letters(flow.name, [*went_through, *settled])
            store.clear_pending(flow.name, [w.key for w in work if w.op == "create"])
            if any(w.relinks for w, o in zip(work, outcomes, strict=True) if o is not None and o.ok):
                generation = int(store.get_meta(f"links:{flow.name}:generation") or 0) + 1
                store.set_meta(f"links:{flow.name}:generation", str(generation))
            if cursor is not None:
                store.set_cursor(flow.name, cursor)

    def _record_plan(self, work: list[_Work]) -> None:
        for w in work:
            if w.op == "create":
                self.counts.created += 1
            elif w.op in ("update", "update-existing"):
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
        adopted: list[KeyEntry] = []
        for p in pending:
            if p.operation != "create":
                continue
            target_id = await self.target.find(self.flow.key_target, p.source_key)
            if target_id is not None:
                # Unknown hash: the next sight of the record rewrites it once, which is harmless.
                adopted.append(KeyEntry(p.source_key, target_id, None, True))
        log.info("recovered %d pending creates (%d found in the target)", len(pending), len(adopted),
                 extra={"event": "executor.recovered", "flow": self.flow.name})

        def commit() -> None:
            with self.store.transaction():
                if adopted:
                    self.store.put_keys(self.flow.name, adopted)
                self.store.clear_pending(self.flow.name, [p.source_key for p in pending])

        await self._call(commit)

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


def _holder_is_gone(holder: str) -> bool:
    """A lease holder is ``host:pid:nonce``; on this host, a pid that no longer runs cannot hold anything."""
    host, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
