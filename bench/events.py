"""bench/events: email events (send, open, click, bounce) from the Campaign journal onto the Dynamics 365
timeline as activities, written through ``$batch`` and through the bulk message ``CreateMultiple``, side by
side at the same Dataverse limit, and the ``$batch`` path as a fraction of the ceiling that limit allows.

    .venv/bin/python -m bench.events [--contacts 3000] [--events 100000] [--dataverse-rps 5] [--batch-size 100]

Steps: an emulator process (``bench.sync`` helper) with Dataverse limited to ``--dataverse-rps`` requests
per second over a ``--window``-second sliding window; the contacts flow runs once so that profiles carry
the contacts' ids; deliveries are sent to those profiles until the journal holds ``--events`` events; then
the four event flows run in a separate runner process, timed. The runner is told the same limit.

The two paths run one after the other on two emulators seeded alike (the same journal), with the same limit:
requests per window and, as Dataverse counts it, execution time (Dataverse's ratio, 1,200,000 ms per 300 s,
scaled to the window; a bulk request is charged the emulator's assumed time per row on top of its own). The
``$batch`` run has the bulk messages removed from the activity tables (the setup switch ``messages``), so the
engine falls back to ``$batch`` as it does against an org without them. ``compare(...)`` returns both and
the ratio of their rates.

A ``$batch`` carries up to ``--batch-size`` records, so the ceiling is ``dataverse-rps * batch-size``
activities per second. ``fraction of ceiling`` = activities written / what the requests the limit lets
through in the event flows' wall time could carry (``bench.sync.allowed_in``: the sliding window's first
burst included). ``measure(...)`` returns the figures as a dict. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.sync import _diff, _total_requests, allowed_in, run_in_process, start_emulator
from mapsync.emulators.dataverse.bulk import BULK_ROW_EXECUTION_MS
from mapsync.engine.connectors.d365_bulk import BULK_SIZE

EVENT_FLOWS = ("email_sends", "email_opens", "email_clicks", "email_bounces")
ACTIVITY_TABLES = ("acs_emailsend", "acs_emailopen", "acs_emailclick", "acs_emailbounce")
MAX_DELIVERIES = 200  # bounds the loop that fills the journal
# Journal events per page (the `events.page_size` setting): each event flow reads the whole journal one page
# after the other, so small pages, not Dataverse, bound a run whose writes are fast.
JOURNAL_PAGE = 1000
# Dataverse's execution-time limit per request-window second: 1,200,000 ms over 300 s ("Service protection API limits").
EXECUTION_MS_PER_WINDOW_SECOND = 1_200_000 / 300


def compare(*, log: Any = print, **options: Any) -> dict[str, Any]:
    """Both write paths at the same limit: ``{"batch": ..., "bulk": ..., "speedup": bulk rate / batch rate}``."""
    batch = measure(bulk=False, log=log, **options)
    bulk = measure(bulk=True, log=log, **options)
    speedup = bulk["activities_per_s"] / batch["activities_per_s"] if batch["activities_per_s"] else None
    log(f"[events] bulk messages / $batch = {speedup:.2f}" if speedup else "[events] nothing written through $batch")
    return {"batch": batch, "bulk": bulk, "speedup": speedup}


def measure(*, contacts: int = 3000, events: int = 100_000, dataverse_rps: float = 5.0, window: float = 10.0,
            batch_size: int = 100, concurrency: int = 8, bulk: bool = False, journal_page: int = JOURNAL_PAGE,
            log: Any = print) -> dict[str, Any]:
    requests = max(1, round(dataverse_rps * window))
    path = "bulk" if bulk else "$batch"
    execution_ms = round(EXECUTION_MS_PER_WINDOW_SECOND * window)
    log(f"[events {path}] seeding {contacts:,} contacts; Dataverse limited to {requests} requests and "
        f"{execution_ms:,} ms of execution per {window:g} s ...")
    emu = start_emulator(contacts=contacts, limits={"dataverse_requests": requests, "dataverse_window_seconds": window,
                                                    "dataverse_execution_ms": execution_ms})
    folder = Path(tempfile.mkdtemp(prefix="mapsync-bench-events-"))
    try:
        if not bulk:  # an org whose activity tables lack the message: the engine writes through $batch
            emu.control("PUT", "setup", {"messages": {"remove": [f"{t}:CreateMultiple" for t in ACTIVITY_TABLES]}})
        config = emu.write_config(folder, limits={"d365": {
            "requests_per_window": requests, "window_seconds": window, "batch_size": batch_size,
            "concurrency": concurrency}})
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        doc["environments"]["emulator"]["events"]["page_size"] = journal_page  # the same for both paths
        config.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        setup = run_in_process(config, flows=("contacts",))
        log(f"[events] contacts flow: {setup['flows']['contacts']['counts']['created']:,} profiles in "
            f"{setup['seconds']:.1f} s")
        ours = [p["PKey"] for p in emu.rows("campaign", "profile") if p.get("externalId")]
        journal = 0
        deliveries = 0
        while journal < events and deliveries < MAX_DELIVERIES:
            deliveries += 1
            result = emu.control("POST", "campaign/deliveries",
                                 {"label": f"Bench {deliveries}", "campaign": "Benchmark", "profiles": ours})
            journal += sum(result["counts"].values())
        log(f"[events] {deliveries} deliveries to {len(ours):,} profiles put {journal:,} events in the journal")
        before = _total_requests(emu.counters())
        run = run_in_process(config, flows=EVENT_FLOWS)
        after = _total_requests(emu.counters())
        counts = {name: run["flows"][name]["counts"] for name in EVENT_FLOWS}
        written = sum(c["created"] + c["updated"] for c in counts.values())
        # Per window: requests x records per request, and for bulk requests also what the execution time allows.
        per_window = min(requests * BULK_SIZE, execution_ms / BULK_ROW_EXECUTION_MS) if bulk else requests * batch_size
        ceiling = per_window / window
        rate = written / run["seconds"]
        allowed = round(allowed_in(run["seconds"], requests, window) / requests * per_window)
        out = {
            "path": path,
            "journal_events": journal, "activities_written": written, "seconds": run["seconds"],
            "activities_per_s": rate, "ceiling_per_s": ceiling, "activities_allowed": allowed,
            "fraction_of_ceiling": written / allowed,
            "counts": counts, "calls": _diff(after, before), "peak_rss_mb": run["peak_rss_mb"],
            "throttled_429": emu.counters()["throttled_429"].get("dataverse", 0),
        }
        log(f"[events {path}] {written:,} activities in {run['seconds']:.1f} s = {rate:,.0f}/s = {written / allowed:.3f} of the "
            f"{allowed:,} the limit allows in that time ({ceiling:,.0f}/s); "
            f"calls {out['calls']}; 429s {out['throttled_429']}")
        return out
    finally:
        emu.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--events", type=int, default=100_000,
                        help="journal events to fill before timing (the bulk run must span several windows)")
    parser.add_argument("--dataverse-rps", type=float, default=5.0, help="Dataverse requests/s the limit allows")
    parser.add_argument("--window", type=float, default=10.0, help="the limit's sliding window (seconds)")
    parser.add_argument("--batch-size", type=int, default=100, help="records per $batch")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out = compare(contacts=args.contacts, events=args.events, dataverse_rps=args.dataverse_rps, window=args.window,
                  batch_size=args.batch_size, concurrency=args.concurrency)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
