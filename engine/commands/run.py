"""`mapsync run --env E [--flow F] [--full] [--replay F] [--watch SECONDS] [--bulk/--no-bulk]`: sync now, or keep
syncing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from rich.markup import escape

from mapsync.engine.auth import TokenCache
from mapsync.engine.commands._common import add_command
from mapsync.engine.errors import ConfigError
from mapsync.engine.progress import (
    RunDisplay,
    configure_logging,
    console,
    optout_line,
    print_notes,
    summary_table,
)
from mapsync.engine.runner import RunReport, load_job, run_job

T = TypeVar("T")


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "run", "run the flows of an environment (full first, incremental after)", run, env=True)
    p.add_argument("--flow", action="append", metavar="F", help="run only this flow (repeatable)")
    p.add_argument("--full", action="store_true", help="read every source record again, not just the changes")
    p.add_argument("--replay", action="append", default=[], metavar="F",
                   help="forget the flow's cursor and key map and re-sync it from scratch (repeatable)")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="keep running: an incremental run every SECONDS until SIGINT/SIGTERM")
    p.add_argument("--rebind", action="store_true",
                   help="accept that the environment's services moved (a sandbox copy, a new URL): record their "
                        "identity and read the moved side in full once")
    p.add_argument("--bulk", action=argparse.BooleanOptionalAction, default=None,
                   help="full reads into Campaign: --bulk always through file import, --no-bulk always through the "
                        "REST API (default: file import above bulk.min_records writes)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every retry and decision")


def run(args: argparse.Namespace) -> int:
    if args.watch is not None and not (math.isfinite(args.watch) and args.watch > 0):
        raise ConfigError(f"--watch needs a finite positive number of seconds, not {args.watch:g}", setting="--watch")
    configure_logging(args.verbose)
    job = load_job(Path(args.config), args.env)
    return asyncio.run(_watch(job, args) if args.watch else _once(job, args))


# Exit statuses of a run stopped by a signal: 128 + the signal's number, as shells report them.
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


async def until_signalled(work: Awaitable[T]) -> T | int:
    """Await ``work``; SIGINT or SIGTERM cancels it, so every flow records `interrupted` and releases its
    lease on the way out. Returns the work's result, or the exit status of the signal that stopped it."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        task.cancel()

    for sig in SIGNAL_EXIT:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        console.print("interrupted: each flow kept what it had acknowledged; the next run resumes from there")
        return SIGNAL_EXIT[received[0]]
    finally:
        for sig in SIGNAL_EXIT:
            loop.remove_signal_handler(sig)


async def _once(job: Any, args: argparse.Namespace) -> int:
    display = RunDisplay()
    with display.live():
        report = await until_signalled(run_job(job, only=args.flow, full=args.full, replay=args.replay,
                                               on_progress=display.on_progress, on_finished=display.on_finished,
                                               rebind=args.rebind, bulk=args.bulk))
    if isinstance(report, int):
        return report
    _print(report, job.env.name)
    return 0 if report.ok and report.dead_letters == 0 else 1


async def _watch(job: Any, args: argparse.Namespace) -> int:
    """Incremental runs every N seconds. First SIGINT/SIGTERM: finish the current run and stop;
    a second one interrupts the run (what was acknowledged stays acknowledged)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    current: asyncio.Task[RunReport] | None = None

    def on_signal() -> None:
        if stop.is_set() and current is not None:
            current.cancel()
        stop.set()
        console.print("[yellow]stopping after the current run (signal again to interrupt it)[/yellow]")

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    first = True
    status = 0
    tokens = TokenCache()  # one Entra ID and one IMS token for as long as they last, not one per round
    try:
        while not stop.is_set():
            current = asyncio.create_task(run_job(job, only=args.flow, full=args.full and first,
                                                  replay=args.replay if first else (), tokens=tokens,
                                                  rebind=args.rebind and first, bulk=args.bulk))
            try:
                report = await current
            except asyncio.CancelledError:
                console.print("run interrupted; the next run resumes from the last acknowledged page")
                break
            first = False
            changed = [r for r in report.flows if r.counts.written or r.counts.rejected or r.counts.failed]
            if changed or report.optouts:
                _print(report, job.env.name)
            status = 0 if report.ok else 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.watch)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print("stopped")
    return status


def _print(report: RunReport, env: str) -> None:
    console.print(summary_table(report.flows, title=f"mapsync run — environment {env}"))
    print_notes(report.flows)
    for o in report.optouts:
        console.print(optout_line(o))
    for error in report.errors:
        console.print(f"[red]error[/red] {error}", highlight=False)
    for line in report.outage_lines():
        console.print(f"[red]unreachable[/red] {escape(line)}", highlight=False)
    if report.dead_letters:
        console.print(f"{report.dead_letters} record(s) went to dead letters: see `mapsync deadletters list --env {env}`")
    deferred = sum(r.counts.deferred for r in report.flows)
    if deferred:
        console.print(f"{deferred} record(s) deferred: waiting for the records they link to, the next run takes them "
                      "again by itself")
