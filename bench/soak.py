"""bench/soak (`make soak`): every flow and the opt-out rule, run again and again against emulators with
the ``hostile`` fault profile while the emulated CRM and Campaign keep changing; at the end both systems
are compared field by field with what the mappings say they should hold.

    .venv/bin/python -m bench.soak [--seconds 150] [--contacts 300] [--seed 1]

How it goes, bounded in time:

1. churn (``--seconds``): a mutator edits, deactivates, reactivates, deletes and creates contacts, edits
   vehicles, opts profiles out in Campaign and sends deliveries (journal events), through the emulators'
   control endpoints, *while* the real ``mapsync run --watch 1`` runs every flow in its own process; at
   the end it gets SIGTERM and finishes its current run, as under systemd. Its runs are read back from
   the state store, its retries from its log lines (``event=http.retry``);
2. settle: faults off, the CRM stops changing; dead letters left by transient failures are queued again
   with the real CLI (``mapsync deadletters retry --all``, as an operator would), and the flows run until a
   run writes nothing (at most ``SETTLE_RUNS`` runs);
3. verify: the expected Campaign profiles and vehicles are computed from the final CRM rows by running the
   compiled mappings (``mapsync.dsl.compiler.compile_project``, through ``load_job``), the expected activities from
   the journal's events, and compared field by field with what the emulators hold (``mapsync.engine.demo.verify``),
   plus duplicate checks (one target record per source key / event id) and the activities' mapped fields.

Prints records moved, faults injected, retries, then the mismatches; the last line is exactly
``mismatches = <n>``. Exit status 1 when n > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from mapsync.dsl.runtime import Mapped
from mapsync.emulators.server import Emulator, start_in_thread, write_config
from mapsync.engine.runner import Job, RunReport, load_job, run_job
from mapsync.engine.state.base import open_store

ROOT = Path(__file__).resolve().parent.parent
SETTLE_RUNS = 4
MUTATION_PAUSE_S = 0.5


_RETRY_LINE = re.compile(r"event=http\.retry\b.*?\bservice=(\S+).*?\bstatus=(\S+)")


def _retries_logged(log_text: str) -> Counter[str]:
    """The HTTP layer's retries (its ``event=http.retry`` log lines) by service and status."""
    found: Counter[str] = Counter()
    for match in _RETRY_LINE.finditer(log_text):
        status = match.group(2)
        found[f"{match.group(1)} {'no reply' if status == 'None' else status}"] += 1
    return found


class Mutator:
    """Changes both emulated systems through their control endpoints, as their users would."""

    def __init__(self, client: httpx.AsyncClient, contacts: list[str], vehicles: list[str], seed: int) -> None:
        self.client = client
        self.contacts = contacts
        self.vehicles = vehicles
        self.inactive: list[str] = []
        self.rnd = random.Random(seed)
        self.done: Counter[str] = Counter()
        self.errors: list[str] = []

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        reply = await self.client.request(method, f"/_emulator/{path}", json=body)
        if reply.status_code >= 400:
            self.errors.append(f"{method} {path}: {reply.status_code} {reply.text[:120]}")
            return None
        return reply.json() if reply.content else None

    async def step(self, n: int) -> None:
        rnd = self.rnd
        action = rnd.choices(["edit", "email", "deactivate", "reactivate", "delete", "create", "vehicle", "optout",
                              "delivery"], weights=[30, 8, 6, 4, 4, 12, 10, 8, 3])[0]
        if action in ("edit", "email", "deactivate", "delete") and not self.contacts:
            return
        if action == "edit":
            cid = rnd.choice(self.contacts)
            changes = rnd.choice([{"lastname": f"Soak-{n}"}, {"jobtitle": f"Role {n}"}, {"jobtitle": None},
                                  {"firstname": f"  Zoë {n}  "}, {"telephone1": f"+33 1 {n:08d}"},
                                  {"address1_city": f"Ville {n}", "address1_postalcode": f"{n:05d}"}])
            await self.control("PATCH", f"d365/contact/{cid}", changes)
        elif action == "email":
            cid = rnd.choice(self.contacts)
            email = rnd.choice([f"  Soak.{n}@Example.COM ", f"soak{n}@example.org", None])
            await self.control("PATCH", f"d365/contact/{cid}", {"emailaddress1": email})
        elif action == "deactivate":
            cid = rnd.choice(self.contacts)
            if await self.control("PATCH", f"d365/contact/{cid}", {"statecode": 1, "statuscode": 2}) is not None:
                self.inactive.append(cid)
        elif action == "reactivate" and self.inactive:
            cid = self.inactive.pop(rnd.randrange(len(self.inactive)))
            await self.control("PATCH", f"d365/contact/{cid}", {"statecode": 0, "statuscode": 1})
        elif action == "delete":
            cid = self.contacts.pop(rnd.randrange(len(self.contacts)))
            with contextlib.suppress(ValueError):
                self.inactive.remove(cid)
            await self.control("DELETE", f"d365/contact/{cid}")
        elif action == "create":
            row = await self.control("POST", "d365/contact", {
                "firstname": rnd.choice(["Åsa", "Noé", "Li", "Olu"]), "lastname": f"New {n}",
                "emailaddress1": f"new.{n}@example.net", "statecode": 0, "statuscode": 1, "jobtitle": "Buyer"})
            if row is not None:
                self.contacts.append(row["contactid"])
        elif action == "vehicle" and self.vehicles:
            vid = rnd.choice(self.vehicles)
            await self.control("PATCH", f"d365/new_vehicle/{vid}", rnd.choice([{"new_model": f"Model {n}"},
                                                                              {"new_year": 2000 + n % 25}]))
        elif action in ("optout", "delivery"):
            ours = await self._our_profiles()
            if not ours:
                return
            if action == "optout":
                await self.control("POST", f"campaign/profiles/{rnd.choice(ours)}/opt-out", {"channel": "email"})
            else:
                await self.control("POST", "campaign/deliveries", {
                    "label": f"Soak {n}", "campaign": "Soak", "profiles": rnd.sample(ours, min(25, len(ours)))})
        else:
            return
        self.done[action] += 1

    async def _our_profiles(self) -> list[str]:
        body = await self.control("GET", "state/campaign/profile?offset=0&limit=5000")
        return [p["PKey"] for p in (body or {}).get("rows", []) if p.get("externalId")]

    async def run_until(self, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                await self.step(n)
            except httpx.HTTPError as exc:  # the control endpoints are on loopback; note it and go on
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(MUTATION_PAUSE_S)


def _moved(report: RunReport) -> int:
    return sum(r.counts.written for r in report.flows)


def _start_watch(config: Path, folder: Path) -> subprocess.Popen[bytes]:
    """``mapsync run --watch 1`` as an operator runs it: its own process, its log in files."""
    cmd = [sys.executable, "-m", "mapsync.engine.cli", "--config", str(config), "run", "--env", "emulator", "--watch", "1"]
    with (folder / "watch.out").open("wb") as out, (folder / "watch.err").open("wb") as err:
        return subprocess.Popen(cmd, cwd=folder, stdout=out, stderr=err)


def _stop_watch(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM: the current run finishes, then the process exits. A second one after a while interrupts it."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def _watch_runs(job: Job) -> tuple[int, int, int, int]:
    """From the state store: flow runs of the watch process, how many failed, records written, dead letters."""
    store = open_store(job.env.state_url, password=job.env.state_password)
    try:
        runs = store.list_runs(limit=1_000_000)
    finally:
        store.close()
    written = sum(r.counts.get("created", 0) + r.counts.get("updated", 0) + r.counts.get("deleted", 0) for r in runs)
    dead = sum(r.counts.get("rejected", 0) + r.counts.get("failed", 0) for r in runs)
    return len(runs), sum(r.outcome != "ok" for r in runs), written, dead


def _duplicates(emulator: Emulator) -> list[str]:
    """One target record per source key: profiles/vehicles by their external id, activities by event id."""
    problems = []
    store = emulator.adobe.store
    for resource, key in (("profile", "externalId"), ("cusVehicle", "cusExternalId")):
        seen = Counter(fields.get(key) for _, fields in store.rows_where(resource) if fields.get(key))
        problems += [f"{resource} {k}: {n} records" for k, n in seen.items() if n > 1]
    for table in ("acs_emailsend", "acs_emailopen", "acs_emailclick", "acs_emailbounce"):
        seen = Counter(r.get("acs_eventid") for r in emulator.dataverse.store.rows(table))
        problems += [f"{table} event {k}: {n} activities" for k, n in seen.items() if n > 1]
    return problems


def _activity_fields(job: Job, emulator: Emulator) -> list[str]:
    """Every mapped field of every written activity equals what the mapping makes of its event."""
    problems = []
    journal = emulator.adobe.journal
    events = {}
    for entry in journal.events(offset=0, limit=len(journal) + 1):
        event = entry.get("event", entry)
        events[event.get("id")] = event
    for flow in (f for f in job.flows.values() if f.source.name.startswith("events.")):
        for row in emulator.dataverse.store.rows(flow.target.name):
            event = events.get(row.get("acs_eventid"))
            if event is None:
                problems.append(f"{flow.target.name} {row.get('acs_eventid')}: an activity without a journal event")
                continue
            outcome = flow.evaluate(event)
            if not isinstance(outcome, Mapped):
                problems.append(f"{flow.target.name} {row.get('acs_eventid')}: written, but the mapping "
                                f"{type(outcome).__name__.lower()}s its event")
                continue
            for name, want in outcome.payload.items():
                have = row.get(name)
                if want is not None and not _same(have, want):
                    problems.append(f"{flow.target.name} {row.get('acs_eventid')}: {name} is {have!r}, expected {want!r}")
    return problems


def _same(have: Any, want: Any) -> bool:
    if have == want:
        return True
    # Dataverse answers datetimes as ...Z without fractions; the payload may carry an offset form.
    return isinstance(have, str) and isinstance(want, str) and have.replace("Z", "+00:00")[:19] == want.replace("Z", "+00:00")[:19]


def soak(*, seconds: float, contacts: int, seed: int, faults: str = "hostile", log: Any = print) -> int:
    from mapsync.engine.demo import verify

    emulator = Emulator(seed=seed, contacts=contacts, faults=faults)
    served = start_in_thread(emulator)
    # uvicorn prints a traceback for every connection the fault injector drops on purpose (set after
    # start: uvicorn configures its loggers when the server is built).
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    folder = Path(tempfile.mkdtemp(prefix="mapsync-soak-"))
    config = write_config(folder / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                          state=f"sqlite:///{folder / 'state.sqlite'}", mappings=str((ROOT / "mappings").resolve()))
    started = time.monotonic()
    try:
        job = load_job(config, "emulator")
        contact_ids = [r["contactid"] for r in emulator.dataverse.store.rows("contact")]
        vehicle_ids = [r["new_vehicleid"] for r in emulator.dataverse.store.rows("new_vehicle")]
        log(f"soak: {contacts} contacts, faults {faults!r}, {seconds:g} s of churn; emulators on {served.base_url}; "
            f"`mapsync run --watch 1` logging to {folder}")

        async def churn() -> Mutator:
            async with httpx.AsyncClient(base_url=served.base_url, verify=served.client_ssl(), timeout=30) as client:
                mutator = Mutator(client, contact_ids, vehicle_ids, seed)
                await mutator.run_until(time.monotonic() + seconds)
                return mutator

        watch = _start_watch(config, folder)
        try:
            mutator = asyncio.run(churn())
        finally:
            exit_code = _stop_watch(watch)
        churn_counters = emulator.counters()
        runs, failed_runs, moved, dead_letters = _watch_runs(job)
        retries = _retries_logged((folder / "watch.err").read_text(encoding="utf-8", errors="replace"))
        emulator.set_faults("none")
        log(f"settle: watch process stopped (exit {exit_code}) after {runs} flow runs ({failed_runs} failed); "
            "faults off; CRM changes: " + ", ".join(f"{k} {v}" for k, v in sorted(mutator.done.items())))
        retried = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(config), "deadletters", "retry",
                                  "--all", "--env", "emulator"], cwd=folder, capture_output=True, text=True,
                                 timeout=120, check=False)
        log(f"  mapsync deadletters retry --all: exit {retried.returncode}: {retried.stdout.strip()[-300:]}"
            f"{retried.stderr.strip()[-300:]}")
        for i in range(SETTLE_RUNS):
            report = asyncio.run(run_job(job))
            moved += _moved(report)
            log(f"  settle run {i + 1}: {_moved(report)} records written, "
                f"{sum(r.counts.deferred for r in report.flows)} deferred, "
                f"{sum(r.counts.rejected + r.counts.failed for r in report.flows)} dead letters")
            if _moved(report) == 0:
                break
        mismatches = verify(job, emulator) + _duplicates(emulator) + _activity_fields(job, emulator)
    finally:
        served.stop()

    faults_injected = {service: dict(kinds) for service, kinds in churn_counters["faults_injected"].items()}
    total_faults = sum(sum(k.values()) for k in faults_injected.values())
    log("")
    log(f"duration:         {time.monotonic() - started:.0f} s ({runs} flow runs by `mapsync run --watch` under "
        f"faults, {failed_runs} failed and were taken up by the next run)")
    log(f"records moved:    {moved:,}")
    log(f"requests:         {sum(churn_counters['requests'].values()):,} under faults {churn_counters['requests']}")
    log(f"faults injected:  {total_faults:,} {faults_injected}")
    log(f"retries:          {sum(retries.values()):,} {dict(retries.most_common())}")
    log(f"dead letters:     {dead_letters:,} recorded during the churn (queued again before settling)")
    for error in mutator.errors[:5]:
        log(f"  control call refused: {error}")
    for m in mismatches[:50]:
        log(f"  mismatch: {m}")
    print(f"mismatches = {len(mismatches)}")
    return 1 if mismatches else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="how long the CRM keeps changing under faults")
    parser.add_argument("--contacts", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="hostile", choices=("none", "flaky", "hostile"))
    args = parser.parse_args(argv)
    return soak(seconds=args.seconds, contacts=args.contacts, seed=args.seed, faults=args.faults)


if __name__ == "__main__":
    sys.exit(main())
