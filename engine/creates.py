"""Create recovery, in one place: a create is never made twice and never taken for done unseen.

Before a page's creates are sent they are recorded as pending. A run that finds pending creates looks each
one up in the target first, so a create whose reply was lost is adopted, not made again; a create stays
pending until a lookup has answered (a lookup that fails is never taken for "not there"). The key map is not
trusted to know the target either: before a flow's first read (an empty, lost or new state store, a replay)
every target record carrying the flow's key is adopted in one paged read, and on any other full read a
record the key map does not know is looked up before it is created (or, where the read may go through a bulk
import, which cannot look up, adopted by the same paged read first). ``mode update`` finds its target
records by the same lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from mapsync.engine.connectors.base import WriteOutcome
from mapsync.engine.errors import ConnectorError, TransientError
from mapsync.engine.planner import Op, Write
from mapsync.engine.state.base import KeyEntry, StateStore
from mapsync.engine.targets import Target

__all__ = ["Creates"]

log = logging.getLogger("mapsync.executor")


class Creates:
    """One flow's create recovery for one run. ``dry_run`` keeps what it finds in memory (``existing``)."""

    def __init__(self, flow: str, key_field: str, target: Target, store: StateStore, *, dry_run: bool) -> None:
        self.flow = flow
        self.key_field = key_field
        self.target = target
        self.store = store
        self.dry_run = dry_run
        self.look_up_all = False  # look each create up first (a full read over a key map that may not know)
        self.adopted = False  # the target's records were adopted by one paged read before the first read
        self.unresolved: set[str] = set()  # pending creates no lookup has answered yet: never created blindly
        self.existing: dict[str, str] = {}  # plan only: target records by key, found before the first read

    def needs_lookup(self, write: Write) -> bool:
        return write.op is Op.FIND_UPDATE or (
            write.op is Op.CREATE and (self.look_up_all or write.key in self.unresolved))

    async def find(self, key: str) -> str | ConnectorError | None:
        try:
            return await self.target.find(self.key_field, key)
        except ConnectorError as exc:
            return exc

    async def recover_pending(self) -> None:
        """Creates sent by a run that died before their outcome was recorded: adopt what the target has."""
        pending = await asyncio.to_thread(self.store.pending_writes, self.flow)
        if not pending:
            return
        creates = [p.source_key for p in pending if p.operation == "create"]
        found = dict(zip(creates, await asyncio.gather(*(self.find(k) for k in creates)), strict=True))
        # Unknown hash: the next sight of the record rewrites it once, which is harmless.
        adopted = [KeyEntry(k, t, None, True) for k, t in found.items() if isinstance(t, str)]
        self.unresolved = {k for k, t in found.items() if isinstance(t, ConnectorError)}
        answered = [p.source_key for p in pending if p.source_key not in self.unresolved]
        log.info("recovered %d pending creates (%d found in the target, %d not answered)", len(pending),
                 len(adopted), len(self.unresolved), extra={"event": "executor.recovered", "flow": self.flow})
        if self.unresolved:
            first = next(t for t in found.values() if isinstance(t, ConnectorError))
            log.warning("flow %s: %d pending creates could not be looked up (%s); they stay pending and are not "
                        "created until a lookup answers", self.flow, len(self.unresolved), first,
                        extra={"event": "executor.lookup_failed", "flow": self.flow})

        def commit() -> None:
            with self.store.transaction():
                if adopted:
                    self.store.put_keys(self.flow, adopted)
                self.store.clear_pending(self.flow, answered)

        await asyncio.to_thread(commit)

    async def adopt_existing(self) -> str | None:
        """Before a first read: every target record that carries the flow's key goes into the key map (one
        paged read of the target, not one lookup per record), so a target that already holds the records —
        state lost, moved or new, a replay — gets them updated, not duplicated. Returns a note for the run."""
        adopted = 0
        self.adopted = True
        async for page in self.target.existing(self.key_field):
            if self.dry_run:
                self.existing.update(page)
            elif page:
                adopted += await asyncio.to_thread(self._adopt_page, page)
        if self.unresolved and not self.dry_run:
            # The read answered the pending creates no lookup could: found ones were adopted, the rest never made.
            await asyncio.to_thread(self.store.clear_pending, self.flow, sorted(self.unresolved))
            self.unresolved.clear()
        adopted = adopted or len(self.existing)
        if not adopted:
            return None
        note = (f"{adopted:,} records already in {self.target.table} (found by {self.key_field}) were missing from "
                "the key map: adopted, not created again")
        log.info("flow %s: %s", self.flow, note, extra={"event": "executor.adopted", "flow": self.flow,
                                                       "count": adopted})
        return note

    def _adopt_page(self, page: Sequence[tuple[str, str]]) -> int:
        with self.store.transaction():
            known = self.store.get_keys(self.flow, [k for k, _ in page])
            new = [KeyEntry(k, t, None, True) for k, t in page
                   if k not in known or known[k].deleted or known[k].target_id is None]
            if new:
                self.store.put_keys(self.flow, new)
        return len(new)

    def stand_in(self, known: dict[str, KeyEntry], keys: Sequence[str]) -> None:
        """A plan before the first read: what the target holds stands in for the key map."""
        if self.existing:
            known.update({k: KeyEntry(k, self.existing[k], None, True) for k in keys
                          if k in self.existing and (k not in known or known[k].deleted)})

    async def resolve(self, writes: list[Write]) -> dict[int, WriteOutcome]:
        """Look up, all at once, the writes that need it (the HTTP layer bounds what is on the wire), and
        replace each by what the answer makes of it: a create found is adopted, one whose lookup failed stays
        unresolved; a find-update found is updated, one not found is absent. A failed lookup's outcome is
        returned by the write's index."""
        indexes = [i for i, w in enumerate(writes) if self.needs_lookup(w)]
        answers = await asyncio.gather(*(self.find(writes[i].key) for i in indexes))
        failures: dict[int, WriteOutcome] = {}
        for i, found in zip(indexes, answers, strict=True):
            w = writes[i]
            if isinstance(found, ConnectorError):
                if w.op is Op.CREATE:
                    writes[i] = replace(w, op=Op.UNRESOLVED)
                what = "not created" if w.op is Op.CREATE else "not updated"
                failures[i] = WriteOutcome(
                    i, False, status=found.status, code=found.code, transient=isinstance(found, TransientError),
                    message=f"{what}: the lookup of {self.key_field} = {w.key} in {self.target.table} failed ({found})")
                continue
            self.unresolved.discard(w.key)
            if w.op is Op.FIND_UPDATE:
                writes[i] = replace(w, target_id=found) if found is not None else replace(w, op=Op.ABSENT)
            elif found is not None:
                payload = {k: v for k, v in w.payload.items() if k not in w.once} if w.once else w.payload
                writes[i] = replace(w, op=Op.ADOPT, target_id=found, payload=payload)
        return failures
