"""How a run shows itself: a live progress display on a terminal, plain structured log lines otherwise,
and the summary table at the end. Nothing here decides anything about the sync.

On a terminal the table is redrawn four times a second from the counts the executor keeps moving (records
transformed, writes that came back), and every log line is printed through the same console, above the table,
never into it. Elsewhere (CI, a pipe) there are no escape codes: one progress line per flow at most every
``every_seconds``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mapsync.engine.executor import FlowCounts, FlowResult

__all__ = ["RunDisplay", "configure_logging", "console", "format_duration", "remaining_seconds", "summary_table"]

# Off a terminal, 140 columns unless COLUMNS says otherwise (rich would assume 80).
console = Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
log = logging.getLogger("mapsync.progress")

_COLUMNS = ("read", "filtered", "created", "updated", "unchanged", "deleted", "rejected", "deferred", "failed")
# The rate behind "left" is measured over this many recent seconds: a run slows as its key map grows.
_RATE_WINDOW_SECONDS = 20.0
_live: Live | None = None  # the live display on screen now, if any: log lines are printed above it


class _KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`: one line per event, greppable, no secrets (none are logged)."""

    _skip = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in self._skip)
        return f"{base} {extras}".rstrip()


class _ConsoleHandler(logging.Handler):
    """Log lines to stderr; while the live display is on screen, through its console, so a line is printed
    above the table on a line of its own instead of into the middle of it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if _live is not None:
                _live.console.print(Text(line), soft_wrap=True)
            else:
                sys.stderr.write(line + "\n")  # looked up now: whoever redirected stderr gets the line
                sys.stderr.flush()
        except Exception:  # a broken terminal must not end the run
            self.handleError(record)


def configure_logging(verbose: bool = False, *, quiet: bool = False) -> None:
    handler = _ConsoleHandler()
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger("mapsync")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


class _Pace:
    """Recent (time, records done) samples of one flow: its current rate, not the average since the start."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.samples: deque[tuple[float, int]] = deque([(now, 0)])

    def add(self, now: float, done: int) -> None:
        if done != self.samples[-1][1]:
            self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] > _RATE_WINDOW_SECONDS:
            self.samples.popleft()

    def rate(self, now: float, done: int) -> float:
        first_time, first_done = self.samples[0]
        return (done - first_done) / max(1e-6, now - first_time)


class RunDisplay:
    """Receives ``on_progress(flow, counts)`` from the executor and shows records, rate and time left.

    ``counts`` is the executor's own live object: the terminal display re-reads it at every refresh, so it
    moves as records are transformed and writes come back, not once per page."""

    def __init__(self, *, interactive: bool | None = None, every_seconds: float = 10.0) -> None:
        self.interactive = console.is_terminal if interactive is None else interactive
        self.every = every_seconds
        self.started: dict[str, float] = {}
        self.latest: dict[str, FlowCounts] = {}
        self.finished: dict[str, float] = {}
        self._pace: dict[str, _Pace] = {}
        self._last_line: dict[str, float] = {}
        self._live: Live | None = None

    def on_progress(self, flow: str, counts: FlowCounts) -> None:
        now = time.monotonic()
        if flow not in self.started:
            self.started[flow] = self._last_line[flow] = now
            self._pace[flow] = _Pace(now)
        self.latest[flow] = counts
        self._pace[flow].add(now, counts.settled)
        if self._live is None and now - self._last_line[flow] >= self.every:
            self._last_line[flow] = now
            self._log_line(flow, counts, now)

    def on_finished(self, flow: str) -> None:
        """The flow is done: its row stops its clock and shows no time left."""
        self.finished.setdefault(flow, time.monotonic())

    def _log_line(self, flow: str, counts: FlowCounts, now: float) -> None:
        rate = self._pace[flow].rate(now, counts.settled)
        left = remaining_seconds(counts, rate, done=counts.settled)
        share = "" if not counts.expected_reads else \
            f", {min(counts.settled, counts.expected_reads) / counts.expected_reads:.0%} of about {counts.expected_reads:,}"
        share += "" if left is None else f", {format_duration(left)} left"
        log.info("%s: %d read, %d written, %d rejected (%.0f records/s%s)", flow, counts.read,
                 counts.written + counts.landed, counts.rejected + counts.failed, rate, share,
                 extra={"event": "run.progress", "flow": flow, "rate": round(rate),
                        **({} if not counts.expected_reads else {"expected": counts.expected_reads}),
                        **({} if left is None else {"eta_s": round(left)}),
                        **{f"n_{k}": v for k, v in counts.as_dict().items()}})

    def _table(self) -> Table:
        table = Table(show_edge=False, box=None, pad_edge=False)
        for col in ("flow", "read", "of about", "written", "rejected", "records/s", "left", "time"):
            table.add_column(col, justify="left" if col == "flow" else "right")
        now = time.monotonic()
        for flow, counts in self.latest.items():
            end = self.finished.get(flow, now)
            elapsed = end - self.started[flow]
            pace = self._pace[flow]
            pace.add(end, counts.settled)
            rate = pace.rate(end, counts.settled)
            left = None if flow in self.finished else remaining_seconds(counts, rate, done=counts.settled)
            table.add_row(flow, f"{counts.read:,}", f"{counts.expected_reads:,}" if counts.expected_reads else "",
                          f"{counts.written + counts.landed:,}", f"{counts.rejected + counts.failed:,}",
                          f"{rate:,.0f}" if elapsed >= 1 and counts.settled else "",
                          "" if left is None else format_duration(left), f"{elapsed:.0f} s")
        return table

    @contextmanager
    def live(self) -> Iterator[RunDisplay]:
        global _live
        if not self.interactive:
            yield self
            return
        with Live(get_renderable=self._table, console=console, refresh_per_second=4, transient=True) as live:
            self._live = _live = live
            try:
                yield self
            finally:
                self._live = _live = None


def remaining_seconds(counts: FlowCounts, rate: float, *, done: int | None = None) -> float | None:
    """Time left at ``rate`` for the records not yet ``done`` (default: not yet read), when the read's size is
    known; None when it cannot be said honestly: too early, no progress, or more done than the (possibly
    day-old) count expected."""
    position = counts.read if done is None else done
    if not counts.expected_reads or rate <= 0 or position < min(100, counts.expected_reads / 10):
        return None
    if done is not None and position >= counts.expected_reads:
        return None
    return max(0.0, counts.expected_reads - position) / rate


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def summary_table(results: Sequence[FlowResult], *, title: str | None = None, planned: bool = False) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("flow")
    columns = _COLUMNS
    if any(r.counts.absent for r in results):  # `mode update` only: keys the target has no record for
        columns = ("read", "filtered", "absent", *_COLUMNS[2:])
    for col in columns:
        label = {"created": "to create", "updated": "to update", "deleted": "to delete"}.get(col, col) if planned else col
        table.add_column(label, justify="right")
    table.add_column("time", justify="right")
    for r in results:
        counts = r.counts.as_dict()
        cells = [f"{counts[c]:,}" if counts[c] else "·" for c in columns]
        outcome = "" if r.outcome == "ok" else f" ({r.outcome})"
        table.add_row(r.flow + outcome, *cells, f"{r.seconds:.1f}s")
    return table


def print_notes(results: Sequence[Any]) -> None:
    for r in results:
        for note in getattr(r, "notes", ()):
            console.print(f"[yellow]note[/yellow] {r.flow}: {note}")


def optout_line(result: Any) -> str:
    """One line per opt-out rule: what moved which way."""
    verb = "would write" if result.dry_run else "wrote"
    return (f"opt-out {result.name}: {result.pairs:,} pairs; {verb} {result.written_to_campaign:,} to Campaign and "
            f"{result.written_to_d365:,} to Dynamics 365 ({result.d365_changes_seen:,} Dynamics 365 and "
            f"{result.campaign_changes_seen:,} Campaign changes seen, {result.conflicts:,} conflicts, "
            f"{result.failed:,} failed)")
