"""How a run shows itself: a live progress display on a terminal, plain structured log lines otherwise,
and the summary table at the end. Nothing here decides anything about the sync."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mapsync.engine.executor import FlowCounts, FlowResult

__all__ = ["RunDisplay", "configure_logging", "console", "format_duration", "remaining_seconds", "summary_table"]

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
log = logging.getLogger("mapsync.progress")

_COLUMNS = ("read", "filtered", "created", "updated", "unchanged", "deleted", "rejected", "deferred", "failed")


class _KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`: one line per event, greppable, no secrets (none are logged)."""

    _skip = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in self._skip)
        return f"{base} {extras}".rstrip()


def configure_logging(verbose: bool = False, *, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger("mapsync")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


class RunDisplay:
    """Receives ``on_progress(flow, counts)`` from the executor and shows records, rate and elapsed time."""

    def __init__(self, *, interactive: bool | None = None, every_seconds: float = 5.0) -> None:
        self.interactive = console.is_terminal if interactive is None else interactive
        self.every = every_seconds
        self.started: dict[str, float] = {}
        self.latest: dict[str, FlowCounts] = {}
        self._last_line = 0.0
        self._live: Live | None = None

    def on_progress(self, flow: str, counts: FlowCounts) -> None:
        now = time.monotonic()
        if flow not in self.started:
            self.started[flow] = self._last_line = now
        self.latest[flow] = counts
        if self._live is not None:
            self._live.update(self._table())
        elif now - self._last_line >= self.every:
            self._last_line = now
            rate = counts.read / max(1e-6, now - self.started[flow])
            left = remaining_seconds(counts, rate)
            share = "" if left is None or not counts.expected_reads else \
                f", {counts.read / counts.expected_reads:.0%} of about {counts.expected_reads:,}, {format_duration(left)} left"
            log.info("%s: %d read, %d written, %d rejected (%.0f records/s%s)", flow, counts.read, counts.written,
                     counts.rejected + counts.failed, rate, share,
                     extra={"event": "run.progress", "flow": flow, "rate": round(rate),
                            **({} if left is None else {"expected": counts.expected_reads, "eta_s": round(left)}),
                            **{f"n_{k}": v for k, v in counts.as_dict().items()}})

    def _table(self) -> Table:
        table = Table(show_edge=False, box=None, pad_edge=False)
        for col in ("flow", "read", "of about", "written", "rejected", "records/s", "left"):
            table.add_column(col, justify="left" if col == "flow" else "right")
        now = time.monotonic()
        for flow, counts in self.latest.items():
            elapsed = now - self.started[flow]
            rate = counts.read / max(1e-6, elapsed)
            left = remaining_seconds(counts, rate)
            table.add_row(flow, f"{counts.read:,}", f"{counts.expected_reads:,}" if counts.expected_reads else "",
                          f"{counts.written:,}", f"{counts.rejected + counts.failed:,}",
                          f"{rate:,.0f}" if elapsed >= 1 else "", "" if left is None else format_duration(left))
        return table

    @contextmanager
    def live(self) -> Iterator[RunDisplay]:
        if not self.interactive:
            yield self
            return
        with Live(self._table(), console=console, refresh_per_second=4, transient=True) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None


def remaining_seconds(counts: FlowCounts, rate: float) -> float | None:
    """Time left at the rate so far, when the read's size is known (an estimate: the count can be a day old)."""
    if not counts.expected_reads or rate <= 0 or counts.read < 100:
        return None
    return max(0.0, counts.expected_reads - counts.read) / rate


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def summary_table(results: Sequence[FlowResult], *, title: str | None = None, planned: bool = False) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("flow")
    for col in _COLUMNS:
        label = {"created": "to create", "updated": "to update", "deleted": "to delete"}.get(col, col) if planned else col
        table.add_column(label, justify="right")
    table.add_column("time", justify="right")
    for r in results:
        counts = r.counts.as_dict()
        cells = [f"{counts[c]:,}" if counts[c] else "·" for c in _COLUMNS]
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
