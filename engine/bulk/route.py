"""A flow's bulk path, driven by the executor: it takes the planned pages of a full read, turns their writes
into files once they outnumber ``bulk.min_records`` (below that, the pages it held go through REST after
all), and after the read carries the load through its stages (``stages``) before the cursor commits.

The executor calls ``resume`` before a run reads (a load a killed run left is finished first), ``begin``
when the read starts, ``take`` for each planned page, and ``finish`` when the read is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapsync.engine import relinks
from mapsync.engine.bulk.choice import Choice, choose, unavailable
from mapsync.engine.bulk.files import ROW_BYTES, ChunkFile, ChunkWriter, file_mask, new_run_id, read_rows
from mapsync.engine.bulk.imports import Reject, parse_done, parse_rejects, rejected_field
from mapsync.engine.bulk.reconcile import reconcile
from mapsync.engine.bulk.stages import describe
from mapsync.engine.bulk.staging import Staging
from mapsync.engine.bulk.workflow import Workflow
from mapsync.engine.errors import ConfigError, SyncError, TransientError
from mapsync.engine.failpoints import Failpoint
from mapsync.engine.planner import DeadLetterPlan, FlowRules, Op, Write
from mapsync.engine.progress import format_duration
from mapsync.engine.state.base import BulkChunk, BulkLoad, StateStore

if TYPE_CHECKING:
    from mapsync.engine.bulk.sftp import SftpStorage

__all__ = ["BulkRoute", "Send", "route_for"]

log = logging.getLogger("mapsync.bulk")

# The executor's REST step for one page: writes, dead letters, settled keys, cursor (None: do not move it).
Send = Callable[[Sequence[Write], Sequence[DeadLetterPlan], Sequence[str], str | None], Awaitable[None]]
BULK_OPS = (Op.CREATE, Op.UPDATE)
UPLOAD_ATTEMPTS = 4
WAITING_NOTE_SECONDS = 60.0  # while no file finishes importing, say so this often


@dataclass(frozen=True, slots=True)
class _Held:
    writes: Sequence[Write]
    dead: Sequence[DeadLetterPlan]
    settled: Sequence[str]
    cursor: str | None


class BulkRoute:
    def __init__(self, flow: Any, env: Any, campaign: Any, target: Any, store: StateStore, *,
                 forced: bool | None = None, links_to: Sequence[str] = ()) -> None:
        self.flow = flow
        self.rules = FlowRules.of(flow)
        self.settings = env.bulk
        self.sftp = env.campaign.sftp if env.campaign is not None else None
        self.campaign = campaign
        self.target = target
        self.store = store
        self.forced = forced
        self.why_not = unavailable(flow, env, links_to)
        self.choice: Choice | None = None
        self.failpoint = Failpoint.from_env()
        self._folder_root = self.settings.work_dir / env.name / flow.name
        self._reading = False
        self._held: list[_Held] = []
        self._held_writes = 0
        self._send: Send | None = None
        self._counts: Any = None
        self._writer: ChunkWriter | None = None
        self._staging: Staging | None = None
        self._load: BulkLoad | None = None
        self._cursor: str | None = None
        self._rows = 0

    def decide(self, *, full: bool, writes: int) -> Choice:
        """The path a read with ``writes`` planned writes takes (``mapsync plan``)."""
        return choose(self.why_not, full=full, writes=writes, min_records=self.settings.min_records,
                      forced=self.forced)

    # ------------------------------------------------------------------------------------------- the read

    def possible(self, *, full: bool) -> bool:
        """Whether a read could go bulk once its writes are counted."""
        return self.decide(full=full, writes=10**18).bulk

    def begin(self, *, full: bool, counts: Any, send: Send) -> None:
        self._counts, self._send = counts, send
        self._reading = self.possible(full=full)
        if not self._reading:
            self.choice = self.decide(full=full, writes=0)

    async def take(self, writes: Sequence[Write], dead: Sequence[DeadLetterPlan], settled: Sequence[str],
                   cursor: str | None) -> bool:
        """Take a planned page; False: the executor writes it through REST itself."""
        if not self._reading:
            return False
        if self._writer is None:
            self._held.append(_Held(writes, dead, settled, cursor))
            self._held_writes += sum(w.op in BULK_OPS for w in writes)
            if self.forced or self._held_writes > self.settings.min_records:
                await self._start()
            return True
        await self._divert(writes, dead, settled, cursor)
        return True

    @contextlib.contextmanager
    def _local_files(self) -> Iterator[None]:
        """A full disk or an unusable ``bulk.work_dir`` is the user's to fix, in one line (the load is still
        being written: nothing of it was uploaded, and the next run drops it and writes it again)."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SyncError(f"flow {self.flow.name}: cannot write the bulk load's files in {self._folder_root} "
                            f"({why}); free space there, or set bulk.work_dir to a folder with room (about {ROW_BYTES} "
                            "bytes a record). Nothing was uploaded: the next run writes the load again") from None

    async def finish(self) -> None:
        """The read is done: a load goes through its stages; pages held below the threshold go through REST."""
        if not self._reading:
            return
        self._reading = False
        if self._writer is None:
            self.choice = self.decide(full=True, writes=self._held_writes)
            held, self._held = self._held, []
            assert self._send is not None
            for page in held:
                await self._send(page.writes, page.dead, page.settled, page.cursor)
            return
        assert self._staging is not None and self._load is not None
        with self._local_files():
            self._writer.close()
            await asyncio.to_thread(self._staging.flush)
        self._load = await asyncio.to_thread(self.store.put_bulk_load,
                                             replace(self._load, stage="written", cursor=self._cursor, rows=self._rows))
        self._log(self._load, "written")
        self.failpoint.reach("bulk-written")
        await self._complete(self._load)

    async def _start(self) -> None:
        self.choice = self.decide(full=True, writes=self._held_writes)
        run_id = new_run_id(datetime.now(UTC))
        self._load = await asyncio.to_thread(self.store.put_bulk_load, BulkLoad(self.flow.name, run_id, "writing"))
        folder = self._folder(run_id)
        with self._local_files():
            shutil.rmtree(folder, ignore_errors=True)
            self._staging = Staging(folder / "rows.sqlite")
            self._writer = ChunkWriter(folder, self.flow.name, run_id, self.flow.key_target,
                                       self.settings.chunk_records, self._closed)
        log.info("flow %s: bulk load %s (%s)", self.flow.name, run_id, self.choice.why,
                 extra={"event": "bulk.started", "flow": self.flow.name, "run_id": run_id})
        held, self._held = self._held, []
        for page in held:
            await self._divert(page.writes, page.dead, page.settled, page.cursor)

    async def _divert(self, writes: Sequence[Write], dead: Sequence[DeadLetterPlan], settled: Sequence[str],
                      cursor: str | None) -> None:
        """Creates and updates into files; what else the page needs (deletes, dead letters) through REST now,
        without its cursor: the cursor moves once the load is imported and reconciled."""
        assert self._writer is not None and self._staging is not None and self._send is not None
        with self._local_files():
            for w in writes:
                if w.op in BULK_OPS:
                    chunk = self._writer.add(w.key, w.payload)
                    self._staging.add(w.key, w.hash, w.ours if w.op is Op.UPDATE else True, w.op is Op.CREATE,
                                      chunk, relinks=w.relinks)
                    self._rows += 1
        await self._send([w for w in writes if w.op not in BULK_OPS], dead, settled, None)
        if cursor is not None:
            self._cursor = cursor

    def _closed(self, chunk: ChunkFile) -> None:
        assert self._load is not None and self._staging is not None
        self._staging.flush()  # the file's rows are staged before the file counts as written
        self.store.put_bulk_chunks([BulkChunk(self.flow.name, self._load.run_id, chunk.chunk, chunk.name, "written",
                                              chunk.rows)])
        self.failpoint.reach("bulk-writing")

    def _folder(self, run_id: str) -> Path:
        return self._folder_root / run_id

    # ------------------------------------------------------------------------------------------- after the read

    async def resume(self, counts: Any) -> str | None:
        """Finish (or drop) a load a stopped run left; returns a note for the run, None when there was none."""
        load = await asyncio.to_thread(self.store.bulk_load, self.flow.name)
        if load is None or load.stage == "done":
            return None
        self._counts = counts
        if self.why_not is not None and load.stage != "writing":
            raise ConfigError(f"flow {self.flow.name}: bulk load {load.run_id} is unfinished ({describe(load.stage)}) "
                              f"but the flow cannot use the bulk path now ({self.why_not}); restore the settings to "
                              f"finish it, or run with --replay {self.flow.name} to load it again",
                              setting="bulk")
        if load.stage == "writing":
            # Nothing of it was uploaded: its files are dropped and this run's read writes them again.
            shutil.rmtree(self._folder(load.run_id), ignore_errors=True)
            await asyncio.to_thread(self.store.delete_bulk_load, self.flow.name)
            return f"an unfinished bulk load ({load.run_id}, stopped while writing files) was dropped: nothing of it " \
                   "was uploaded"
        log.info("flow %s: resuming bulk load %s (%s)", self.flow.name, load.run_id, describe(load.stage),
                 extra={"event": "bulk.resumed", "flow": self.flow.name, "run_id": load.run_id})
        self.choice = Choice(True, f"resumed bulk load {load.run_id} from stage {load.stage}")
        await self._complete(load)
        return f"bulk load {load.run_id} resumed from stage {load.stage!r} and finished"

    async def _complete(self, load: BulkLoad) -> None:
        staging = self._staging or Staging(self._folder(load.run_id) / "rows.sqlite")
        try:
            from mapsync.engine.bulk.sftp import SftpStorage  # asyncssh is loaded only when a load runs

            async with SftpStorage(self.sftp) as storage:
                load = await self._upload(load, storage)
                self._log(load, "uploaded")
                load = await self._signal(load)
                self._log(load, "signalled")
                load = await self._await_imports(load, storage, staging)
                self._log(load, "imported")
            await self._reconcile(load, staging)
        finally:
            staging.close()
            self._staging = self._writer = None
        shutil.rmtree(self._folder(load.run_id), ignore_errors=True)

    def _log(self, load: BulkLoad, stage: str) -> None:
        log.info("flow %s: bulk load %s %s", self.flow.name, load.run_id, stage,
                 extra={"event": f"bulk.{stage}", "flow": self.flow.name, "run_id": load.run_id})

    async def _set(self, load: BulkLoad, stage: str, **changes: Any) -> BulkLoad:
        return await asyncio.to_thread(self.store.put_bulk_load, replace(load, stage=stage, **changes))

    async def _set_chunks(self, chunks: Sequence[BulkChunk]) -> None:
        await asyncio.to_thread(self.store.put_bulk_chunks, chunks)

    async def _chunks(self, load: BulkLoad) -> list[BulkChunk]:
        return await asyncio.to_thread(self.store.bulk_chunks, self.flow.name, load.run_id)

    async def _upload(self, load: BulkLoad, storage: SftpStorage) -> BulkLoad:
        for chunk in await self._chunks(load):
            if chunk.stage == "written":
                await self._upload_one(storage, self._folder(load.run_id) / chunk.file, chunk.file)
                await self._set_chunks([replace(chunk, stage="uploaded")])
                self.failpoint.reach("bulk-uploaded")
        return await self._set(load, "uploaded") if load.stage == "written" else load

    @staticmethod
    async def _upload_one(storage: SftpStorage, local: Path, name: str) -> None:
        """Upload one file; a dropped connection is reopened and the file sent again (its ``.part`` replaced)."""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                await storage.upload(local, name)
                return
            except TransientError as exc:
                if attempt == UPLOAD_ATTEMPTS:
                    raise
                log.warning("%s; connecting again (attempt %d of %d)", exc, attempt + 1, UPLOAD_ATTEMPTS,
                            extra={"event": "bulk.upload_retry"})
                await asyncio.sleep(min(5.0, 0.5 * attempt))
                with contextlib.suppress(TransientError):
                    await storage.reconnect()

    async def _signal(self, load: BulkLoad) -> BulkLoad:
        """One signal for every file not imported yet; files already signalled are never signalled again, unless
        the workflow stopped with an error before importing them."""
        chunks = [c for c in await self._chunks(load) if c.stage in ("uploaded", "failed")]
        if not chunks:
            return load
        workflow = self._workflow()
        sent = await workflow.signal({"fileMask": file_mask(self.flow.name, load.run_id)})
        with self.store.transaction():
            self.store.put_bulk_chunks([replace(c, stage="signalled") for c in chunks])
            load = self.store.put_bulk_load(replace(load, stage="signalled", signalled_at=sent))
        self.failpoint.reach("bulk-signalled")
        return load

    def _workflow(self) -> Workflow:
        spec = self.settings.workflows[self.flow.target.name]
        return Workflow(self.campaign.http, spec.workflow, spec.signal, self.store,
                        interval=self.settings.signal_interval_seconds)

    async def _await_imports(self, load: BulkLoad, storage: SftpStorage, staging: Staging) -> BulkLoad:
        """Poll the files' ``.done`` markers and the workflow's state until every file is imported."""
        workflow = self._workflow()
        waited = said = 0.0
        while True:
            for chunk in [c for c in await self._chunks(load) if c.stage == "signalled"]:
                done = await storage.read(chunk.file + ".done")
                if done is not None:
                    marker = parse_done(done)
                    rejects = parse_rejects(await storage.read(chunk.file + ".rejects.csv"))
                    await self._imported(chunk, marker, rejects, load, staging)
                    self.failpoint.reach("bulk-imported")
                    self._say_imported(load, await self._chunks(load), chunk.file)
                    said = waited
            chunks = await self._chunks(load)
            if not [c for c in chunks if c.stage == "signalled"]:
                break
            if waited - said >= WAITING_NOTE_SECONDS:  # a long import is not a silent one
                self._say_waiting(load, chunks, waited)
                said = waited
            execution = await workflow.execution()
            if execution.state in ("error", "stopped"):
                await self._failed(load)
                workflow._check_running(execution)
            if waited >= self.settings.timeout_seconds:
                raise SyncError(f"flow {self.flow.name}: the import of bulk load {load.run_id} has not finished after "
                                f"{waited:.0f}s (bulk.timeout_seconds); the next run goes on waiting for it")
            await asyncio.sleep(self.settings.poll_seconds)
            waited += self.settings.poll_seconds
        return await self._set(load, "imported") if load.stage == "signalled" else load

    def _say_imported(self, load: BulkLoad, chunks: Sequence[BulkChunk], file: str) -> None:
        imported = [c for c in chunks if c.stage in ("imported", "reconciled")]
        rows = sum(c.imported or 0 for c in imported)
        refused = sum(c.rejected or 0 for c in imported)
        log.info("flow %s: bulk load %s: %s imported; %d of %d files, %s rows imported, %s refused", self.flow.name,
                 load.run_id, file, len(imported), len(chunks), f"{rows:,}", f"{refused:,}",
                 extra={"event": "bulk.file_imported", "flow": self.flow.name, "run_id": load.run_id,
                        "files_done": len(imported), "files": len(chunks), "rows": rows, "refused": refused})

    def _say_waiting(self, load: BulkLoad, chunks: Sequence[BulkChunk], waited: float) -> None:
        imported = sum(c.stage in ("imported", "reconciled") for c in chunks)
        log.info("flow %s: bulk load %s: waiting for the import workflow %s (%d of %d files imported after %s)",
                 self.flow.name, load.run_id, self.settings.workflows[self.flow.target.name].workflow, imported,
                 len(chunks), format_duration(waited),
                 extra={"event": "bulk.waiting", "flow": self.flow.name, "run_id": load.run_id,
                        "files_done": imported, "files": len(chunks)})

    async def _failed(self, load: BulkLoad) -> None:
        """The workflow stopped before these files were imported: the next signal covers them again."""
        chunks = [c for c in await self._chunks(load) if c.stage == "signalled"]
        await self._set_chunks([replace(c, stage="failed") for c in chunks])

    async def _imported(self, chunk: BulkChunk, done: Any, rejects: list[Reject], load: BulkLoad,
                        staging: Staging) -> None:
        """Record a file's rejected rows as dead letters (with the row as written) and mark it imported."""
        rows = await asyncio.to_thread(read_rows, self._folder(load.run_id) / chunk.file, {r.line for r in rejects})
        keys = [r.key or rows.get(r.line, {}).get(self.flow.key_target, "") for r in rejects]
        await asyncio.to_thread(staging.reject, [k for k in keys if k])

        def commit() -> None:
            with self.store.transaction():
                for reject, key in zip(rejects, keys, strict=True):
                    record = rows.get(reject.line) or {"key": key}
                    reason = f"bulk import rejected the row: {reject.reason} ({chunk.file}, line {reject.line})"
                    self.store.add_dead_letter(self.flow.name, key or f"{chunk.file}:{reject.line}", record, reason,
                                               field=rejected_field(reject.reason), mapping_file=self.rules.file,
                                               mapping_line=self.rules.line, mapping_version=self.rules.version)
                self.store.put_bulk_chunks([replace(chunk, stage="imported", imported=done.imported,
                                                    rejected=len(rejects))])

        await asyncio.to_thread(commit)
        if self._counts is not None:
            self._counts.failed += len(rejects)

    async def _reconcile(self, load: BulkLoad, staging: Staging) -> None:
        if load.stage != "reconciled":
            said = time.monotonic()

            def on_page(mapped: int) -> None:
                nonlocal said
                self.failpoint.reach("bulk-reconciling")
                if time.monotonic() - said >= WAITING_NOTE_SECONDS:
                    said = time.monotonic()
                    log.info("flow %s: bulk load %s: reconciling, %s of %s rows key-mapped", self.flow.name,
                             load.run_id, f"{mapped:,}", f"{load.rows:,}",
                             extra={"event": "bulk.reconciling", "flow": self.flow.name, "run_id": load.run_id,
                                    "mapped": mapped, "rows": load.rows})

            await reconcile(self.target, self.flow.key_target, staging, self.store, self.rules, on_page=on_page)
            self.failpoint.reach("bulk-reconciled")
        created, updated = await asyncio.to_thread(staging.count)
        relinked = await asyncio.to_thread(staging.relinks)
        if self._counts is not None:
            self._counts.created += created
            self._counts.updated += updated

        def commit() -> None:
            with self.store.transaction():
                chunks = self.store.bulk_chunks(self.flow.name, load.run_id)
                self.store.put_bulk_chunks([replace(c, stage="reconciled") for c in chunks])
                if relinked:
                    relinks.bump_generation(self.store, self.flow.name)
                if load.cursor is not None:
                    self.store.set_cursor(self.flow.name, load.cursor)
                self.store.put_bulk_load(replace(load, stage="done"))

        await asyncio.to_thread(commit)
        log.info("flow %s: bulk load %s done: %d created, %d updated", self.flow.name, load.run_id, created, updated,
                 extra={"event": "bulk.done", "flow": self.flow.name, "run_id": load.run_id})


def route_for(flow: Any, env: Any, connectors: Any, target: Any, store: StateStore, *, forced: bool | None,
              links_to: Sequence[str]) -> BulkRoute | None:
    """The bulk path of a flow into Campaign (which may say why it is never taken); None for other targets."""
    if flow.target.system != "campaign" or connectors.campaign is None:
        return None
    return BulkRoute(flow, env, connectors.campaign, target, store, forced=forced, links_to=links_to)
