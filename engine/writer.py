"""Sending a page's planned writes: lookups first, creates recorded as pending, then batched writes with a
few more rounds for what failed transiently (a create retried is looked up first: its reply may be what was
lost)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from mapsync.engine.connectors.base import WriteOp, WriteOutcome
from mapsync.engine.creates import Creates
from mapsync.engine.errors import ConnectorError
from mapsync.engine.failpoints import Failpoint
from mapsync.engine.planner import Op, Write
from mapsync.engine.state.base import PendingWrite, StateStore
from mapsync.engine.targets import Target

__all__ = ["DEFAULT_BATCH", "Writer"]

DEFAULT_BATCH = 1000  # records handed to a connector at once; it splits them into requests itself
# Writes that failed transiently after the HTTP layer's own retries get this many more rounds in the run.
TRANSIENT_ROUNDS = 4
TRANSIENT_PAUSE = 0.5
PROGRESS_STEP = 25  # Campaign writes handed over at once when a progress display is watching

Outcomes = list[WriteOutcome | None]


class Writer:
    def __init__(self, flow: str, key_field: str, target: Target, store: StateStore, creates: Creates, *,
                 batch: int | None, failpoint: Failpoint, on_landed: Callable[[int], None],
                 stepped: bool = False) -> None:
        self.flow = flow
        self.key_field = key_field
        self.target = target
        self.store = store
        self.creates = creates
        self.batch = batch or DEFAULT_BATCH
        self.failpoint = failpoint
        self.on_landed = on_landed  # told how many writes came back (the progress display counts them)
        self.stepped = stepped  # a progress display is watching: Campaign writes land in steps it can show

    async def write(self, writes: list[Write]) -> Outcomes:
        """Send ``writes`` (replaced in place by what the lookups made of them); the outcome of each, None
        for one with nothing to send."""
        outcomes: Outcomes = [None] * len(writes)
        if not writes:
            return outcomes
        for i, failure in (await self.creates.resolve(writes)).items():
            outcomes[i] = failure
        creates = [PendingWrite(w.key, "create", w.hash) for w in writes if w.op in (Op.CREATE, Op.UNRESOLVED)]
        if creates:
            await asyncio.to_thread(self.store.add_pending, self.flow, creates)
        self.failpoint.reach("before-write")
        pending = self._ops(writes)
        for attempt in range(TRANSIENT_ROUNDS):
            retry = await self._round(pending, outcomes)
            if not retry or attempt == TRANSIENT_ROUNDS - 1:
                break
            await asyncio.sleep(TRANSIENT_PAUSE * 2**attempt)
            pending = await self._still_to_send(retry, writes, outcomes)
            if not pending:
                break
        return outcomes

    def _ops(self, writes: Sequence[Write]) -> list[WriteOp]:
        table = self.target.table
        ops: list[WriteOp] = []
        for i, w in enumerate(writes):
            if w.op is Op.CREATE:
                ops.append(WriteOp("create", table, dict(w.payload), alternate_key=(self.key_field, w.key), ref=i))
            elif w.op in (Op.UPDATE, Op.FIND_UPDATE, Op.ADOPT) and w.target_id is not None:
                ops.append(WriteOp("update", table, dict(w.payload), target_id=w.target_id, ref=i))
            elif w.op is Op.DELETE:
                ops.append(WriteOp("delete", table, target_id=w.target_id, ref=i))
        return ops

    async def _round(self, pending: list[WriteOp], outcomes: Outcomes) -> list[WriteOp]:
        """One pass over ``pending`` in batches; the ops that failed transiently."""
        by_ref = {op.ref: op for op in pending}
        retry: list[WriteOp] = []
        for start in range(0, len(pending), self.batch):
            for outcome in await self._write_chunk(pending[start : start + self.batch]):
                outcomes[outcome.ref] = outcome
                if not outcome.ok and outcome.transient:
                    retry.append(by_ref[outcome.ref])
        return retry

    async def _still_to_send(self, retry: list[WriteOp], writes: list[Write], outcomes: Outcomes) -> list[WriteOp]:
        """A create may have happened before its reply was lost: adopt it instead of making two. One that
        cannot be looked up is not sent again: it stays pending for the next run."""
        pending: list[WriteOp] = []
        for op in retry:
            if op.op == "create":
                found = await self.creates.find(writes[op.ref].key)
                if isinstance(found, ConnectorError):
                    continue
                if found is not None:
                    outcomes[op.ref] = WriteOutcome(op.ref, True, found, 200, message="created earlier")
                    continue
            pending.append(op)
        return pending

    async def _write_chunk(self, ops: list[WriteOp]) -> list[WriteOutcome]:
        """``target.write``, in steps the progress display can show. Campaign writes one request per record, so
        smaller calls change no request and run at once (the HTTP layer bounds what is on the wire); a Dataverse
        ``$batch`` is kept whole."""
        if not self.stepped or self.target.system != "campaign" or len(ops) <= PROGRESS_STEP:
            outcomes = await self.target.write(ops)
            self.on_landed(len(ops))
            return outcomes
        # A few steps at a time: the next ones fill the wire while the last requests of the one before finish,
        # and steps end about in order, so the count moves steadily instead of all at once at the end.
        in_flight = asyncio.Semaphore(4)

        async def step(part: list[WriteOp]) -> list[WriteOutcome]:
            async with in_flight:
                outcomes = await self.target.write(part)
            self.on_landed(len(part))
            return outcomes

        parts = await asyncio.gather(*(step(ops[i : i + PROGRESS_STEP]) for i in range(0, len(ops), PROGRESS_STEP)))
        return [outcome for part in parts for outcome in part]
