"""The import job of Campaign's import workflows: files from the SFTP storage into the profile or
custom-resource store, as a consultant builds the workflow (External signal -> Transfer file -> Load file
-> Update data "insert or update" -> rejects and completion marker -> Transfer file).

Adobe documents only the signal; everything here is an assumption (docs/emulators.md, "Assumptions"):

- a signal's ``fileMask`` selects the files of ``incoming/`` it matches (by name, ``fnmatch``), imported in
  name order, each name once per workflow (a file imported once is skipped by later signals);
- rows are read as a stream (never the whole file) and stored at ``rows_per_second``;
- each row is inserted, or updated when a record already has its key value (the first column);
- for each file, ``outgoing/<name>.rejects.csv`` (``line,key,reason``, one row per refused data row) and
  then, last, ``outgoing/<name>.done`` (JSON ``{"file", "imported", "rejected", "created", "updated"}``);
- a file that cannot be read, or the fault ``import_failed``, stops the job part-way: the rows before stay
  stored, no ``.done`` is written, the workflow's state becomes ``error`` with ``lastError``; after a
  ``start`` command a new signal imports the file again (an upsert, so nothing is doubled);
- pausing the workflow holds the job between rows; stopping it ends the job before the next row.

The job runs in a thread of its own, so the signal's HTTP reply does not wait for it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from mapsync.emulators.campaign.import_rows import Accepted, ImportColumns
from mapsync.emulators.campaign.store import CampaignStore
from mapsync.emulators.errors import EmulatorError
from mapsync.emulators.faults import FaultInjector

if TYPE_CHECKING:
    from mapsync.emulators.campaign.workflows import Workflow

__all__ = ["IMPORT_ROWS_PER_SECOND", "ImportResult", "Importer"]

log = logging.getLogger("mapsync.emulator")

IMPORT_ROWS_PER_SECOND = 5000.0  # assumed pace of Load file + Update data on a Campaign instance
REJECTS_HEADER = ("line", "key", "reason")
MAX_BATCH = 1000  # rows stored per transaction: a REST request waits at most one batch


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ``<name>.done`` says."""

    file: str
    imported: int
    rejected: int
    created: int
    updated: int


class ImportFailed(EmulatorError):
    """A file stopped part-way; the message is the workflow's ``lastError``."""


class _Stopped(EmulatorError):
    """The workflow was stopped, or the emulator is shutting down, while a file was imported."""


class Importer:
    """Runs the import jobs of every import workflow over one SFTP root (``incoming/``, ``outgoing/``)."""

    def __init__(self, store: CampaignStore, root: Path, *, rows_per_second: float = IMPORT_ROWS_PER_SECOND,
                 faults: FaultInjector | None = None) -> None:
        if rows_per_second <= 0:
            raise ValueError("import_rows_per_second must be above 0")
        self.store = store
        self.root = root
        self.rows_per_second = rows_per_second
        self.faults = faults
        self.imported: dict[str, set[str]] = {}  # workflow id -> file names imported
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._generation = 0  # bumped by stop(): jobs started before it end, even those still waiting
        self._wake = threading.Event()  # interrupts a pacing sleep
        self._jobs: set[threading.Thread] = set()

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def outgoing(self) -> Path:
        return self.root / "outgoing"

    # ---- jobs ---------------------------------------------------------------------------------
    def start(self, workflow: Workflow, mask: str) -> threading.Thread:
        """Import the files ``mask`` selects, in the background; jobs of one workflow run one after another."""
        thread = threading.Thread(target=self._run, args=(workflow, mask, self._generation), daemon=True,
                                  name=f"mapsync-emulator-import-{workflow.id}")
        with self._guard:
            self._jobs = {t for t in self._jobs if t.is_alive()}
            self._jobs.add(thread)
        thread.start()
        return thread

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no job runs (tests); False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._guard:
            jobs = list(self._jobs)
        for job in jobs:
            job.join(max(0.0, deadline - time.monotonic()))
        return not any(job.is_alive() for job in jobs)

    def stop(self) -> None:
        """End every running or waiting job before its next row (the emulator stops or resets)."""
        with self._guard:
            self._generation += 1
        self._wake.set()
        self.wait_idle(10.0)
        self._wake.clear()

    def reset(self) -> None:
        """Back to no file ever imported, and empty folders."""
        self.stop()
        self.imported.clear()
        for folder in (self.incoming, self.outgoing):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

    def _run(self, workflow: Workflow, mask: str, generation: int) -> None:
        with self._guard:
            lock = self._locks.setdefault(workflow.id, threading.Lock())
        with lock:
            if generation != self._generation:
                return
            done = self.imported.setdefault(workflow.id, set())
            try:
                names = sorted(n for n in os.listdir(self.incoming) if fnmatchcase(n, mask) and n not in done)
            except OSError as exc:
                self._fail(workflow, f"cannot list the incoming folder: {exc.strerror or exc}")
                return
            for name in names:
                try:
                    self.import_file(workflow, name, generation=generation)
                except _Stopped:
                    return
                except ImportFailed as exc:
                    self._fail(workflow, str(exc))
                    return
                done.add(name)

    @staticmethod
    def _fail(workflow: Workflow, message: str) -> None:
        log.warning("emulator: import workflow %s failed: %s", workflow.id, message)
        workflow.last_error = message
        workflow.state = "error"

    # ---- one file -----------------------------------------------------------------------------
    def import_file(self, workflow: Workflow, name: str, *, generation: int | None = None) -> ImportResult:
        """Import one file of ``incoming/`` into the workflow's resource; write its rejects, then its marker.
        ``generation``: the job's, to end it when the importer was stopped since (default: now's)."""
        assert workflow.resource is not None
        generation = self._generation if generation is None else generation
        spec = self.store.resources[workflow.resource]
        source = self.incoming / name
        fail_after: int | None = None
        if self.faults is not None and self.faults.take("import_failed"):
            fail_after = math.floor(self._count_rows(source) * self.faults.profile.import_fail_fraction)
        rejects = self.outgoing / f"{name}.rejects.csv"
        created = updated = rejected = 0
        started = time.monotonic()
        batch: list[tuple[int, Accepted]] = []
        step = max(1, min(MAX_BATCH, int(self.rows_per_second / 10)))

        def flush() -> None:
            nonlocal created, updated
            if not batch:
                return
            outcome = self.store.upsert_many(spec.name, columns.key_field or "", [a.fields for _, a in batch])
            created += sum(outcome)
            updated += len(outcome) - sum(outcome)
            batch.clear()

        try:
            with source.open(newline="", encoding="utf-8-sig") as fh, \
                    rejects.open("w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(REJECTS_HEADER)
                reader = csv.reader(fh)
                columns = ImportColumns.plan(spec, next(reader, []))
                line = 0
                for line, row in enumerate(reader, 1):
                    if not row:  # a blank line holds no record (its number still counts)
                        continue
                    if fail_after is not None and line > fail_after:
                        flush()
                        raise ImportFailed(f"import of '{name}' failed at data row {line} (injected fault "
                                           f"import_failed); rows before it were imported")
                    outcome = columns.convert(row)
                    if isinstance(outcome, Accepted):
                        batch.append((line, outcome))
                    else:
                        writer.writerow((line, outcome.key, outcome.reason))
                        rejected += 1
                    if len(batch) >= step or line % step == 0:
                        flush()
                        self._pace(workflow, line, started, generation)
                flush()
        except FileNotFoundError:
            raise ImportFailed(f"file '{name}' is no longer in the incoming folder") from None
        except UnicodeDecodeError as exc:
            raise ImportFailed(f"file '{name}' is not UTF-8 text (byte {exc.start} of a block)") from None
        except csv.Error as exc:
            raise ImportFailed(f"file '{name}' is not valid CSV: {exc}") from None
        result = ImportResult(name, created + updated, rejected, created, updated)
        marker = self.outgoing / f"{name}.done"
        partial = self.outgoing / f"{name}.done.part"
        partial.write_text(json.dumps(asdict(result)), encoding="utf-8")
        os.replace(partial, marker)  # the marker appears whole, after the rejects
        return result

    def _pace(self, workflow: Workflow, rows: int, started: float, generation: int) -> None:
        """Hold the job so that ``rows`` take ``rows / rows_per_second`` seconds; honour pause and stop."""
        while True:
            if generation != self._generation or workflow.state == "stopped":
                raise _Stopped(workflow.id)
            if workflow.state != "paused":
                wait = started + rows / self.rows_per_second - time.monotonic()
                if wait <= 0:
                    return
            else:
                wait = 0.05
            self._wake.wait(min(wait, 0.5))

    @staticmethod
    def _count_rows(source: Path) -> int:
        """Data rows of a file (a streaming pass; only for the fault that fails a file half-way)."""
        with source.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
            return max(0, sum(1 for _ in csv.reader(fh)) - 1)
