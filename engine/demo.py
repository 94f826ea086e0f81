"""`mapsync demo`: the whole product on one machine, start to finish, with a verdict.

Starts the emulators (TLS, seeded CRM data), runs every flow, then lives one day of a CRM: contacts are
edited, deactivated and deleted, a profile opts out in Campaign, a delivery goes out. A second,
incremental run carries exactly those changes across. Finally both emulated systems are compared with
what the mappings say they should hold; any difference makes the demo fail.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mapsync.dsl.runtime import Filtered, Mapped
from mapsync.emulators.server import Emulator, start_in_thread, write_config
from mapsync.engine.progress import RunDisplay, console, optout_line, summary_table
from mapsync.engine.runner import Job, RunReport, load_job, run_job
from mapsync.engine.state.base import open_store

__all__ = ["DemoResult", "run_demo", "verify"]


@dataclass
class DemoResult:
    mismatches: list[str] = field(default_factory=list)
    runs: list[RunReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def run_demo(project: Path, *, contacts: int = 500, seed: int = 42, faults: str = "none") -> DemoResult:
    workdir = project / ".mapsync" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    emulator = Emulator(seed=seed, contacts=contacts, faults=faults)
    served = start_in_thread(emulator)
    try:
        config = write_config(workdir / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                              state="sqlite:///demo.sqlite", mappings=str((project / "mappings").resolve()))
        console.print(f"[bold]mapsync demo[/bold]: emulators on {served.base_url} ({contacts:,} seeded contacts, "
                      f"faults: {faults}); configuration {config}")
        job = load_job(config, "emulator")
        return asyncio.run(_story(job, emulator, served.base_url, served.ca_file))
    finally:
        served.stop()


async def _story(job: Job, emulator: Emulator, base_url: str, ca_file: Path) -> DemoResult:
    result = DemoResult()
    first = await _run(job, "1. first run: everything", result)
    del first
    async with httpx.AsyncClient(base_url=base_url, verify=ssl.create_default_context(cafile=str(ca_file)),
                                 timeout=30) as control:
        changes = await _day_in_the_life(job, emulator, control)
    for line in changes:
        console.print(f"   - {line}")
    await _run(job, "2. incremental run: just those changes", result)
    await _run(job, "3. again: nothing left to do", result)
    _explain_dead_letters(job)
    result.mismatches = verify(job, emulator)
    if result.mismatches:
        console.print(f"[red]demo failed: {len(result.mismatches)} difference(s) between the systems and the mappings:[/red]")
        for m in result.mismatches[:30]:
            console.print(f"  {m}", markup=False)
    else:
        console.print("[green]both systems hold exactly what the mappings say: demo passed[/green]")
    return result


def _explain_dead_letters(job: Job) -> None:
    """What did not go across, grouped by why: the records a consultant would take back to the CRM team."""
    with open_store(job.env.state_url, password=job.env.state_password) as store:
        letters = [d for name in job.flows for d in store.open_dead_letters(name)]
    if not letters:
        return
    groups = Counter((d.flow, d.field or "", _shape(d.reason)) for d in letters)
    console.print(f"\n{len(letters)} record(s) did not go across (`mapsync deadletters list` shows each one):")
    for (flow, field_name, reason), n in groups.most_common(8):
        console.print(f"  {n:>4} × {flow}" + (f".{field_name}" if field_name else "") + f": {reason}", markup=False)


def _shape(reason: str) -> str:
    """A reason without what differs per record (URLs, ids, counts), so alike reasons group together."""
    text = re.sub(r"https?://\S+", "…", reason)
    text = re.sub(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|\b\d+\b", "…", text)
    return text if len(text) <= 110 else text[:109] + "…"


async def _run(job: Job, title: str, result: DemoResult) -> RunReport:
    display = RunDisplay()
    with display.live():
        report = await run_job(job, on_progress=display.on_progress)
    console.print()
    console.print(summary_table(report.flows, title=title))
    for o in report.optouts:
        console.print(optout_line(o))
    result.runs.append(report)
    return report


async def _control(client: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Any:
    resp = await client.request(method, f"/_emulator/{path}", json=body)
    resp.raise_for_status()
    return resp.json() if resp.content else None


async def _day_in_the_life(job: Job, emulator: Emulator, control: httpx.AsyncClient) -> list[str]:
    """Change both systems through the emulators' control endpoints, as their users would."""
    contacts_flow = job.flows["contacts"]
    synced = [r for r in emulator.dataverse.store.rows("contact")
              if isinstance(contacts_flow.evaluate(r), Mapped)]
    edited, deactivated, deleted = synced[0], synced[1], synced[2]
    lines = []
    await _control(control, "PATCH", f"d365/contact/{edited['contactid']}", {"lastname": "Lindqvist-Berg",
                                                                          "jobtitle": "Head of Procurement"})
    lines.append(f"contact {edited['contactid']}: last name and job title edited in Dynamics 365")
    await _control(control, "PATCH", f"d365/contact/{deactivated['contactid']}", {"statecode": 1, "statuscode": 2})
    lines.append(f"contact {deactivated['contactid']}: deactivated (stops matching the contacts filter)")
    await _control(control, "DELETE", f"d365/contact/{deleted['contactid']}")
    lines.append(f"contact {deleted['contactid']}: deleted in Dynamics 365")
    opted = synced[3]
    profile = _profile_by_external_id(emulator, opted["contactid"])
    if profile is not None:
        await _control(control, "POST", f"campaign/profiles/{profile['PKey']}/opt-out", {"channel": "email"})
        lines.append(f"profile {profile['PKey']} (contact {opted['contactid']}): opted out of email in Campaign")
    delivery = await _control(control, "POST", "campaign/deliveries", {"label": "Winter newsletter",
                                                                        "campaign": "Winter 2026"})
    counts = delivery.get("counts", {})
    lines.append("delivery 'Winter newsletter' sent: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + " events")
    return lines


def _profiles(emulator: Emulator, resource: str = "profile") -> Iterable[dict[str, Any]]:
    store = emulator.adobe.store
    for row_id, fields in store.rows_where(resource):
        yield {"PKey": store.pkey(resource, row_id), **fields}


def _profile_by_external_id(emulator: Emulator, external_id: str) -> dict[str, Any] | None:
    return next((p for p in _profiles(emulator) if p.get("externalId") == external_id), None)


# ------------------------------------------------------------------------------------------- verification


def verify(job: Job, emulator: Emulator) -> list[str]:
    """Compare both emulated systems with what the mappings imply from the source data; list differences."""
    problems: list[str] = []
    profiles: dict[str, list[dict[str, Any]]] = {}
    for p in _profiles(emulator):
        if p.get("externalId"):
            profiles.setdefault(p["externalId"], []).append(p)
    contacts = {r["contactid"]: r for r in emulator.dataverse.store.rows("contact")}
    flow = job.flows["contacts"]
    expected_profiles: set[str] = set()
    for key, row in contacts.items():
        outcome = flow.evaluate(row)
        found = profiles.get(key, [])
        if len(found) > 1:
            problems.append(f"contact {key}: {len(found)} profiles (duplicates)")
        if not isinstance(outcome, Mapped):
            if found:
                problems.append(f"contact {key}: has a profile but should not ({type(outcome).__name__.lower()})")
            continue
        expected_profiles.add(key)
        if not found:
            problems.append(f"contact {key}: no profile in Campaign")
            continue
        problems.extend(f"contact {key}: profile {d}" for d in _differences(outcome.payload, found[0]))
    for key in set(profiles) - expected_profiles:
        if key not in contacts:
            problems.append(f"profile {profiles[key][0]['PKey']}: its contact {key} no longer exists")
    problems.extend(_verify_vehicles(job, emulator, profiles))
    problems.extend(_verify_events(job, emulator, contacts))
    problems.extend(_verify_optout(emulator, contacts, profiles))
    return problems


def _differences(payload: dict[str, Any], record: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for name, want in payload.items():
        have = record.get(name)
        if isinstance(want, dict) and "PKey" not in want:
            out.extend(_differences(want, have if isinstance(have, dict) else {}, f"{prefix}{name}."))
        elif want is not None and have != want:
            out.append(f"{prefix}{name} is {have!r}, expected {want!r}")
    return out


def _verify_vehicles(job: Job, emulator: Emulator, profiles: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    flow = job.flows["vehicles"]
    resources = {v.get("cusExternalId"): v for v in _profiles(emulator, "cusVehicle")}
    for row in emulator.dataverse.store.rows("new_vehicle"):
        key = row["new_vehicleid"]
        outcome = flow.evaluate(row)
        have = resources.get(key)
        owner = row.get("_new_contactid_value")
        owner_profile = profiles.get(owner or "", [None])[0]
        if isinstance(outcome, Filtered) and key in resources:
            problems.append(f"vehicle {key}: filtered out in Dynamics 365 but still in Campaign")
        if isinstance(outcome, Mapped) and owner_profile is not None:
            if have is None:
                problems.append(f"vehicle {key}: no cusVehicle in Campaign")
                continue
            problems.extend(f"vehicle {key}: {d}" for d in _differences(outcome.payload, have))
            link = (have.get("cusProfile") or {}).get("PKey") if isinstance(have.get("cusProfile"), dict) else None
            if link != owner_profile["PKey"]:
                problems.append(f"vehicle {key}: linked to {link}, expected the owner's profile {owner_profile['PKey']}")
        # A vehicle whose owner's profile left Campaign later keeps its (now dangling) link until the
        # vehicle itself changes: the emulated Campaign, like a link without cascade, does not delete it.
    return problems


def _verify_events(job: Job, emulator: Emulator, contacts: dict[str, Any]) -> list[str]:
    problems = []
    journal = emulator.adobe.journal
    events = [e.get("event", e) for e in journal.events(offset=0, limit=len(journal) + 1)]
    for flow in (f for f in job.flows.values() if f.source.name.startswith("events.")):
        feed = flow.source.name.split(".", 1)[1]
        table = flow.target.name
        written = {r.get("acs_eventid"): r for r in emulator.dataverse.store.rows(table)}
        expected = set()
        for event in events:
            if event.get("type") != feed or not isinstance(flow.evaluate(event), Mapped):
                continue
            contact = (event.get("profile") or {}).get("externalId")
            if contact not in contacts:
                # The contact is gone: an activity written before went with it (Dataverse cascades the
                # delete to activities about it), one written after is refused (a dead letter).
                continue
            expected.add(event["id"])
            row = written.get(event["id"])
            if row is None:
                problems.append(f"{feed} event {event['id']}: no {table} activity")
            elif row.get("_regardingobjectid_value") != contact:
                problems.append(f"{feed} event {event['id']}: regarding {row.get('_regardingobjectid_value')}, "
                                f"expected contact {contact}")
        extra = set(written) - expected
        if extra:
            problems.append(f"{table}: {len(extra)} activities without a matching event")
    return problems


def _verify_optout(emulator: Emulator, contacts: dict[str, Any], profiles: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = []
    for key, found in profiles.items():
        contact = contacts.get(key)
        if contact is None or not found:
            continue
        if bool(contact.get("donotbulkemail")) != bool(found[0].get("blackListEmail")):
            problems.append(f"contact {key}: donotbulkemail={contact.get('donotbulkemail')} but its profile's "
                            f"blackListEmail={found[0].get('blackListEmail')}")
    return problems


