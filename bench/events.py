"""bench/events: email events (send, open, click, bounce) from the Campaign journal onto the Dynamics 365
timeline as activities, written through ``$batch``, as a fraction of the ceiling the Dataverse limit allows.

    .venv/bin/python -m bench.events [--contacts 3000] [--events 20000] [--dataverse-rps 5] [--batch-size 100]

Steps: an emulator process (``bench.sync`` helper) with Dataverse limited to ``--dataverse-rps`` requests
per second over a ``--window``-second sliding window; the contacts flow runs once so that profiles carry
the contacts' ids; deliveries are sent to those profiles until the journal holds ``--events`` events; then
the four event flows run in a separate runner process, timed. The runner is told the same limit.

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

from bench.sync import _diff, _total_requests, allowed_in, run_in_process, start_emulator

EVENT_FLOWS = ("email_sends", "email_opens", "email_clicks", "email_bounces")
MAX_DELIVERIES = 200  # bounds the loop that fills the journal


def measure(*, contacts: int = 3000, events: int = 20_000, dataverse_rps: float = 5.0, window: float = 10.0,
            batch_size: int = 100, concurrency: int = 8, log: Any = print) -> dict[str, Any]:
    requests = max(1, round(dataverse_rps * window))
    log(f"[events] seeding {contacts:,} contacts; Dataverse limited to {requests} requests per {window:g} s ...")
    emu = start_emulator(contacts=contacts, limits={"dataverse_requests": requests, "dataverse_window_seconds": window,
                                                    "dataverse_execution_ms": None})
    folder = Path(tempfile.mkdtemp(prefix="mapsync-bench-events-"))
    try:
        config = emu.write_config(folder, limits={"d365": {
            "requests_per_window": requests, "window_seconds": window, "batch_size": batch_size,
            "concurrency": concurrency}})
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
        ceiling = requests / window * batch_size
        rate = written / run["seconds"]
        allowed = allowed_in(run["seconds"], requests, window) * batch_size
        out = {
            "journal_events": journal, "activities_written": written, "seconds": run["seconds"],
            "activities_per_s": rate, "ceiling_per_s": ceiling, "activities_allowed": allowed,
            "fraction_of_ceiling": written / allowed,
            "counts": counts, "calls": _diff(after, before), "peak_rss_mb": run["peak_rss_mb"],
            "throttled_429": emu.counters()["throttled_429"].get("dataverse", 0),
        }
        log(f"[events] {written:,} activities in {run['seconds']:.1f} s = {rate:,.0f}/s = {written / allowed:.3f} of the "
            f"{allowed:,} the limit allows in that time ({ceiling:,.0f}/s) ({requests} requests per {window:g} s x {batch_size} per $batch); "
            f"calls {out['calls']}; 429s {out['throttled_429']}")
        return out
    finally:
        emu.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.events", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--events", type=int, default=20_000, help="journal events to fill before timing")
    parser.add_argument("--dataverse-rps", type=float, default=5.0, help="Dataverse requests/s the limit allows")
    parser.add_argument("--window", type=float, default=10.0, help="the limit's sliding window (seconds)")
    parser.add_argument("--batch-size", type=int, default=100, help="records per $batch")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    out = measure(contacts=args.contacts, events=args.events, dataverse_rps=args.dataverse_rps, window=args.window,
                  batch_size=args.batch_size, concurrency=args.concurrency)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
