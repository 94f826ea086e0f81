"""bench/bulk: a full load of N Dynamics 365 contacts into the emulated Campaign through the bulk path (CSV
files over SFTP, one signal to the import workflow, a paged read to fill the key map) and through the REST
path (one request per record), at the same Campaign request limit, in one run.

    .venv/bin/python -m bench.bulk [--sizes 20000] [--campaign-rps 250] [--import-rate 5000]

Each path gets a fresh emulator process (a Campaign the other path has not filled) and its own runner
process (``bench.sync run``: its peak RSS is the runner's alone). The emulated import job loads
``--import-rate`` rows/s (an assumption: Adobe publishes no figure; ``docs/emulators.md``). Figures per path:
records/s (records written / the run's wall time), API calls by service, wall time, runner peak RSS; and
``speedup`` = bulk records/s / REST records/s. Nothing is asserted.
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

from bench.sync import SEED, _diff, _total_requests, run_in_process, start_emulator

WINDOW = 10.0


def _load(size: int, *, campaign_rps: float, bulk: bool, import_rate: float, concurrency: int,
          log: Any) -> dict[str, Any]:
    """One full load of ``size`` contacts through one path, on its own emulator."""
    requests = max(1, round(campaign_rps * WINDOW))
    path = "bulk" if bulk else "REST"
    log(f"[bulk {size:,}] {path}: seeding the emulator ...")
    emu = start_emulator(contacts=size, seed=SEED,
                         limits={"campaign_requests": requests, "campaign_window_seconds": WINDOW,
                                 "campaign_concurrency": concurrency * 2},
                         bulk={"signal_interval_seconds": 600.0, "import_rows_per_second": import_rate})
    folder = Path(tempfile.mkdtemp(prefix="mapsync-bench-bulk-"))
    try:
        config = emu.write_config(folder, limits={"campaign": {
            "requests_per_window": requests, "window_seconds": WINDOW, "concurrency": concurrency}})
        doc = yaml.safe_load(config.read_text(encoding="utf-8"))
        env = doc["environments"]["emulator"]
        if bulk:
            if emu.bulk is None:
                raise RuntimeError("the emulator serves no SFTP storage: the bulk path cannot be measured")
            env["campaign"]["sftp"] = emu.bulk["sftp"]
            env["bulk"] = {**emu.bulk["bulk"], "min_records": 0, "poll_seconds": 1.0,
                           "work_dir": str(folder / "bulk")}
        config.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        log(f"[bulk {size:,}] {path}: seeded in {emu.seed_seconds:.0f} s; full load (Campaign limited to "
            f"{requests / WINDOW:g} requests/s) ...")
        before = _total_requests(emu.counters())
        run = run_in_process(config)
        calls = _diff(_total_requests(emu.counters()), before)
        counts = run["flows"]["contacts"]["counts"]
        written = counts["created"] + counts["updated"]
        stages = _stage_seconds(run.get("bulk_stages") or {})
        out = {"path": path, "records_written": written, "stages": stages, "counts": counts, "seconds": run["seconds"],
               "records_per_s": written / run["seconds"], "peak_rss_mb": run["peak_rss_mb"], "calls": calls,
               "campaign_rps": requests / WINDOW, "notes": run["flows"]["contacts"]["notes"],
               "errors": run["errors"]}
        log(f"[bulk {size:,}] {path}: {written:,} records in {run['seconds']:.1f} s = {out['records_per_s']:,.1f} "
            f"records/s; runner peak RSS {run['peak_rss_mb']:.0f} MB; calls {calls}")
        if stages:
            log(f"[bulk {size:,}] {path}: stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        return out
    finally:
        emu.stop()


# The bulk load's stages, each as the span between two of the events the runner logs.
STAGES = (("before the load", None, "started"), ("read and write files", "started", "written"),
          ("upload", "written", "uploaded"), ("signal", "uploaded", "signalled"),
          ("import", "signalled", "imported"), ("reconcile", "imported", "done"))


def _stage_seconds(seen: dict[str, float]) -> dict[str, float]:
    return {name: seen[end] - (seen[start] if start else 0.0) for name, start, end in STAGES
            if end in seen and (start is None or start in seen)}


def measure(size: int, *, campaign_rps: float, import_rate: float = 5000.0, concurrency: int = 16,
            log: Any = print, rest: dict[str, Any] | None = None, rest_size: int | None = None) -> dict[str, Any]:
    """Both paths for ``size`` contacts, and the bulk path's speedup over REST. ``rest``: the REST path's full
    load at the same limit, already measured in this run (``bench.sync``), instead of a new one. ``rest_size``:
    measure the REST side at that many contacts (a quick run: REST records/s is flat in the size)."""
    rest_size = rest_size or size
    bulk = _load(size, campaign_rps=campaign_rps, bulk=True, import_rate=import_rate, concurrency=concurrency,
                 log=log)
    if rest is None:
        rest = _load(rest_size, campaign_rps=campaign_rps, bulk=False, import_rate=import_rate,
                     concurrency=concurrency, log=log)
    else:
        log(f"[bulk {size:,}] REST: the sync benchmark's full run of this size in this run, "
            f"{rest['records_per_s']:,.1f} records/s")
    speedup = bulk["records_per_s"] / rest["records_per_s"] if rest["records_per_s"] else None
    log(f"[bulk {size:,}] bulk / REST records/s = {speedup:.1f}" if speedup else f"[bulk {size:,}] no REST rate")
    return {"size": size, "rest_size": rest_size, "bulk": bulk, "rest": rest, "speedup": speedup, "import_rows_per_second": import_rate,
            "campaign_rps": campaign_rps}


def extrapolate(result: dict[str, Any], records: int = 15_000_000) -> dict[str, float]:
    """Hours for ``records`` at the measured rates (both paths scale linearly in the records they write)."""
    return {path: records / result[path]["records_per_s"] / 3600 for path in ("bulk", "rest")
            if result[path]["records_per_s"]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000", help="contacts per full load, comma-separated")
    parser.add_argument("--campaign-rps", type=float, default=250.0, help="Campaign requests/s the limit allows")
    parser.add_argument("--import-rate", type=float, default=5000.0, help="rows/s the emulated import job loads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = {str(n): measure(n, campaign_rps=args.campaign_rps, import_rate=args.import_rate)
               for n in (int(s) for s in args.sizes.split(",") if s.strip())}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
