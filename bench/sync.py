"""bench/sync: a full sync of N Dynamics 365 contacts into the emulated Campaign with service limits on,
then an incremental run after 1% of the contacts changed.

    .venv/bin/python -m bench.sync [--sizes 100000,1000000] [--campaign-rps 100] [--change 0.01]

Three processes, so that each number belongs to one of them:

- the emulator (``bench.sync serve``): every service over TLS on loopback, Campaign limited to
  ``--campaign-rps`` requests per second (a sliding window of ``--window`` seconds);
- the runner (``bench.sync run``): ``mapsync.engine.runner.run_job`` for the contacts flow, in its own process, so
  its peak RSS (``ru_maxrss``) is the runner's alone; it reports counts, wall time and RSS as JSON;
- this driver, which starts both, edits 1% of the contacts through the emulator's control endpoints and
  reads the emulator's request counters around each run.

Campaign has no batch endpoint: one record costs one request, so the ceiling the limit allows is
``campaign-rps`` records/s, and ``fraction of ceiling`` = records written / the requests the sliding
window lets through in the run's wall time (``allowed_in``). The runner is told the same limit
(``limits.requests_per_window``), as a real deployment would be.

``measure(...)`` returns the figures as a dict; ``main`` prints them. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mapsync.emulators.seed import contact_id

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SEED = 42  # the emulator's data set: contact i has the id contact_id(SEED, i)
READY_TIMEOUT_S = 1800.0  # seeding 1M contacts takes minutes on a busy machine


def peak_rss_mb() -> float:
    """This process's own peak RSS. ``VmHWM`` (the high-water mark of this process image), not ``ru_maxrss``:
    Linux carries ``ru_maxrss`` across ``execve``, so a child of a big parent would report the parent's size."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: kilobytes on Linux, close enough


# ------------------------------------------------------------------------------ the emulator process


@dataclass
class EmulatorProcess:
    """An emulator served by a child process; talk to it over HTTPS (control endpoints under ``/_emulator/``)."""

    base_url: str
    ca_file: Path
    process: subprocess.Popen[bytes]
    seed_seconds: float
    bulk: dict[str, Any] | None = None  # campaign.sftp and bulk of a config pointing at it (bench.bulk)
    _client: httpx.Client | None = field(default=None, repr=False)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, verify=ssl.create_default_context(cafile=str(self.ca_file)),
                                       timeout=120)
        return self._client

    def control(self, method: str, path: str, body: Any = None) -> Any:
        reply = self.client.request(method, f"/_emulator/{path.lstrip('/')}", json=body)
        if reply.status_code >= 400:
            raise RuntimeError(f"emulator control {method} {path}: {reply.status_code} {reply.text[:200]}")
        return reply.json() if reply.content else None

    def counters(self) -> dict[str, Any]:
        return self.control("GET", "counters")  # type: ignore[no-any-return]

    def rows(self, kind: str, name: str, *, page: int = 5000) -> list[dict[str, Any]]:
        """Every row of a Dataverse table (``kind='d365'``) or a Campaign resource (``kind='campaign'``)."""
        out: list[dict[str, Any]] = []
        while True:
            body = self.control("GET", f"state/{kind}/{name}?offset={len(out)}&limit={page}")
            out.extend(body["rows"])
            if not body["rows"] or len(out) >= body["count"]:
                return out

    def journal(self, *, page: int = 5000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            body = self.control("GET", f"state/journal?offset={len(out)}&limit={page}")
            out.extend(body["events"])
            if not body["events"] or len(out) >= body["count"]:
                return out

    def write_config(self, folder: Path, *, mappings: Path = ROOT / "mappings",
                     limits: dict[str, dict[str, Any]] | None = None) -> Path:
        """A mapsync.yaml (environment ``emulator``) in ``folder``, state in a SQLite file beside it."""
        from mapsync.emulators.server import write_config

        path = write_config(folder / "mapsync.yaml", base_url=self.base_url, ca_file=self.ca_file,
                            state=f"sqlite:///{folder / 'state.sqlite'}", mappings=str(mappings.resolve()))
        if limits:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            for service, values in limits.items():
                doc["environments"]["emulator"][service]["limits"] = values
            path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return path

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_emulator(*, contacts: int, seed: int = 42, faults: str = "none",
                   limits: dict[str, Any] | None = None, token_lifetime: int | None = None,
                   bulk: dict[str, float] | None = None) -> EmulatorProcess:
    """Start ``bench.sync serve`` and wait (bounded) until it listens. ``bulk``: the import workflows'
    ``signal_interval_seconds`` and ``import_rows_per_second`` (``bench.bulk``)."""
    ready = Path(tempfile.mkdtemp(prefix="mapsync-bench-")) / "ready.json"
    cmd = [PYTHON, "-m", "bench.sync", "serve", "--contacts", str(contacts), "--seed", str(seed),
           "--faults", faults, "--limits", json.dumps(limits or {}), "--ready", str(ready),
           "--bulk", json.dumps(bulk or {})]
    if token_lifetime is not None:
        cmd += ["--token-lifetime", str(token_lifetime)]
    started = time.monotonic()
    process = subprocess.Popen(cmd, cwd=ROOT)
    while not ready.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the emulator process exited with {process.returncode} before it was ready")
        if time.monotonic() - started > READY_TIMEOUT_S:
            process.kill()
            raise RuntimeError("the emulator did not start in time")
        time.sleep(0.2)
    info = json.loads(ready.read_text())
    return EmulatorProcess(info["base_url"], Path(info["ca_file"]), process, info["seed_seconds"], info.get("bulk"))


def _serve(args: argparse.Namespace) -> int:
    """The emulator process: seed, serve over TLS on loopback, write the ready file, wait for SIGTERM."""
    import dataclasses

    from mapsync.emulators.server import Emulator, Limits, start_in_thread

    started = time.perf_counter()
    limits = dataclasses.replace(Limits(), **json.loads(args.limits))
    emulator = Emulator(seed=args.seed, contacts=args.contacts, faults=args.faults, limits=limits,
                        token_lifetime=args.token_lifetime, **json.loads(args.bulk))
    seeded = time.perf_counter() - started
    served = start_in_thread(emulator)
    setup = emulator.bulk_setup()
    bulk = dict(zip(("sftp", "bulk"), setup.config(), strict=True)) if setup is not None else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    tmp = Path(args.ready).with_suffix(".tmp")
    tmp.write_text(json.dumps({"base_url": served.base_url, "ca_file": str(served.ca_file), "seed_seconds": seeded,
                               "bulk": bulk}))
    tmp.rename(args.ready)  # atomic: the driver never reads half a file
    while not stop.wait(1.0):
        if os.getppid() == 1:  # the driver died: do not outlive it
            break
    served.stop()
    return 0


# ------------------------------------------------------------------------------ the runner process


def run_in_process(config: Path, *, flows: Sequence[str] = ("contacts",), full: bool = False,
                   timeout: float = 6 * 3600) -> dict[str, Any]:
    """Run ``flows`` once in a fresh ``bench.sync run`` process; its JSON report (counts, seconds, peak RSS)."""
    cmd = [PYTHON, "-m", "bench.sync", "run", "--config", str(config), "--flows", ",".join(flows)]
    if full:
        cmd.append("--full")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"runner process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


class _BulkStages(logging.Handler):
    """When a bulk load reached each stage (``bulk.started`` ... ``bulk.done``), in seconds since ``started``."""

    def __init__(self, started: float) -> None:
        super().__init__(logging.INFO)
        self.started = started
        self.seen: dict[str, float] = {}
        bulk_log = logging.getLogger("mapsync.bulk")
        bulk_log.setLevel(logging.INFO)
        bulk_log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", "")
        if event.startswith("bulk.") and event[5:] not in self.seen:
            self.seen[event[5:]] = time.perf_counter() - self.started


def _run(args: argparse.Namespace) -> int:
    from mapsync.engine.runner import load_job, run_job

    job = load_job(Path(args.config), "emulator")
    flows = [f for f in args.flows.split(",") if f]
    started = time.perf_counter()
    stages = _BulkStages(started)
    report = asyncio.run(run_job(job, only=flows, full=args.full, optouts=False))
    seconds = time.perf_counter() - started
    out = {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "bulk_stages": stages.seen,
        "flows": {r.flow: {"counts": r.counts.as_dict(), "seconds": r.seconds, "outcome": r.outcome,
                           "notes": r.notes} for r in report.flows},
        "errors": report.errors,
    }
    print(json.dumps(out))
    return 0


# ------------------------------------------------------------------------------ the measurement


def _total_requests(counters: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in counters["requests"].items()}


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))
            if after.get(k, 0) - before.get(k, 0)}


def allowed_in(seconds: float, requests: int, window: float) -> int:
    """The most requests a sliding-window limit lets through in ``seconds``: a full window's worth at the
    start, then another each time a window has passed. This, not ``requests / window * seconds``, is the
    ceiling of a run that is not much longer than the window."""
    return requests * (int(seconds // window) + 1)


def edit_contacts(emu: EmulatorProcess, fraction: float, *, size: int, seed: int = 42, pick: int = 7) -> int:
    """Change ``fraction`` of the ``size`` seeded contacts as a CRM user would (a new job title); returns how
    many. Their ids follow from the emulator's seed, so nothing is read back (1M rows would be gigabytes)."""
    chosen = random.Random(pick).sample(range(size), max(1, round(size * fraction)))
    for n, i in enumerate(chosen):
        emu.control("PATCH", f"d365/contact/{contact_id(seed, i)}", {"jobtitle": f"Changed {n}"})
    return len(chosen)


def measure(size: int, *, campaign_rps: float, window: float = 10.0, change: float = 0.01,
            concurrency: int = 16, incremental: bool = True, log: Any = print) -> dict[str, Any]:
    """Full sync of ``size`` contacts (and, if asked, an incremental run after ``change`` of them changed)."""
    requests = max(1, round(campaign_rps * window))
    log(f"[sync {size:,}] seeding the emulator ...")
    emu = start_emulator(contacts=size, seed=SEED, limits={"campaign_requests": requests, "campaign_window_seconds": window,
                                                "campaign_concurrency": concurrency * 2})
    folder = Path(tempfile.mkdtemp(prefix="mapsync-bench-sync-"))
    try:
        log(f"[sync {size:,}] seeded in {emu.seed_seconds:.0f} s; full run (Campaign limited to {requests} requests "
            f"per {window:g} s = {requests / window:g} records/s) ...")
        config = emu.write_config(folder, limits={"campaign": {
            "requests_per_window": requests, "window_seconds": window, "concurrency": concurrency}})
        before = _total_requests(emu.counters())
        full = run_in_process(config)
        after = _total_requests(emu.counters())
        counts = full["flows"]["contacts"]["counts"]
        written = counts["created"] + counts["updated"] + counts["deleted"]
        ceiling = requests / window
        rate = written / full["seconds"]
        allowed = allowed_in(full["seconds"], requests, window)
        result: dict[str, Any] = {
            "size": size, "records_written": written, "counts": counts, "seconds": full["seconds"],
            "records_per_s": rate, "ceiling_records_per_s": ceiling, "requests_allowed": allowed,
            "fraction_of_ceiling": written / allowed,
            "peak_rss_mb": full["peak_rss_mb"], "calls": _diff(after, before), "seed_seconds": emu.seed_seconds,
            "throttled_429": emu.counters()["throttled_429"].get("campaign", 0),
        }
        log(f"[sync {size:,}] full: {written:,} records in {full['seconds']:.1f} s = {rate:,.1f} records/s = "
            f"{written / allowed:.3f} of the {allowed:,} writes the limit allows in that time; runner peak RSS {full['peak_rss_mb']:.0f} MB; "
            f"calls {result['calls']}")
        if incremental:
            changed = edit_contacts(emu, change, size=size, seed=SEED)
            before = _total_requests(emu.counters())
            inc = run_in_process(config)
            after = _total_requests(emu.counters())
            calls = _diff(after, before)
            full_calls = sum(result["calls"].values())
            result["incremental"] = {
                "changed": changed, "seconds": inc["seconds"], "counts": inc["flows"]["contacts"]["counts"],
                "calls": calls, "calls_ratio": sum(calls.values()) / full_calls,
                "time_ratio": inc["seconds"] / full["seconds"], "peak_rss_mb": inc["peak_rss_mb"],
            }
            log(f"[sync {size:,}] incremental after {changed:,} changes: {inc['seconds']:.1f} s "
                f"({result['incremental']['time_ratio']:.4f} of the full run), {sum(calls.values()):,} calls "
                f"({result['incremental']['calls_ratio']:.4f} of the full run's {full_calls:,}); "
                f"counts {result['incremental']['counts']}")
        return result
    finally:
        emu.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sync", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="(internal) the emulator process")
    serve.add_argument("--contacts", type=int, required=True)
    serve.add_argument("--seed", type=int, default=42)
    serve.add_argument("--faults", default="none")
    serve.add_argument("--limits", default="{}")
    serve.add_argument("--token-lifetime", type=int, default=None)
    serve.add_argument("--ready", required=True)
    serve.add_argument("--bulk", default="{}", help="signal_interval_seconds, import_rows_per_second (JSON)")
    run = sub.add_parser("run", help="(internal) the runner process")
    run.add_argument("--config", required=True)
    run.add_argument("--flows", default="contacts")
    run.add_argument("--full", action="store_true")
    parser.add_argument("--sizes", default="100000", help="comma-separated numbers of contacts (e.g. 100000,1000000)")
    parser.add_argument("--campaign-rps", type=float, default=100.0, help="Campaign requests/s the limit allows")
    parser.add_argument("--window", type=float, default=10.0, help="the limit's sliding window (seconds)")
    parser.add_argument("--change", type=float, default=0.01, help="fraction of contacts changed before the incremental run")
    parser.add_argument("--concurrency", type=int, default=16, help="the runner's concurrency ceiling for Campaign")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "run":
        return _run(args)
    results = {}
    for size in (int(s) for s in args.sizes.split(",") if s):
        results[str(size)] = measure(size, campaign_rps=args.campaign_rps, window=args.window, change=args.change,
                                     concurrency=args.concurrency)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
