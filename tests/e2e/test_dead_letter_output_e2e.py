"""Dead letters a person can act on: `status` and `deadletters list` count the same things in the same words,
each letter says why in terms of the mappings (`file:line`), the list fits 100 columns, `explain` speaks plainly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mapsync.engine.executor import DEFERRED_PREFIX
from mapsync.engine.state.base import DeadLetter, open_store
from tests.e2e.conftest import Live


def mapsync(live: Live, *args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), *args],
                          cwd=live.config.parent, env=env, capture_output=True, text=True, timeout=300)


def letters(live: Live) -> list[DeadLetter]:
    job = live.job()
    with open_store(job.env.state_url, password=job.env.state_password) as store:
        return [d for flow in (*job.flows, "optout:email") for d in store.open_dead_letters(flow)]


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def add_vehicle_without_vin(live: Live) -> None:
    owner = next(r["contactid"] for r in live.emulator.dataverse.store.rows("contact"))
    live.control("POST", "d365/new_vehicle", {"new_name": "no VIN", "statecode": 0,  # the mapping requires a VIN
                                              "new_contactid@odata.bind": f"/contacts({owner})"})


def test_status_and_deadletters_list_count_the_same_letters_in_the_same_words(live: Live) -> None:
    add_vehicle_without_vin(live)
    live.run()
    stored = letters(live)
    deferred = sum(1 for d in stored if d.reason.startswith(DEFERRED_PREFIX))
    failed = len(stored) - deferred
    assert deferred and failed, "the seeded data defers vehicles of filtered owners; the VIN-less one fails"
    status = mapsync(live, "status", "--env", "emulator")
    listed = mapsync(live, "deadletters", "list", "--env", "emulator", "--limit", "3")
    summary = f"{len(stored)} open dead letter(s): {deferred} deferred"
    assert summary in status.stdout.replace("\n", " "), status.stdout
    assert summary in listed.stdout.replace("\n", " "), listed.stdout
    assert f"{failed} failed" in status.stdout and f"{failed} failed" in listed.stdout
    assert f"3 dead letter(s) shown of {len(stored)}" in listed.stdout
    assert status.returncode == 1  # a failed letter needs a person


def test_a_link_to_a_filtered_record_says_so_and_where_and_one_not_written_yet_says_that(live: Live) -> None:
    mappings = live.config.parent / "mappings"
    where = re.escape(f"mappings/contacts.map:{line_of(mappings / 'contacts.map', 'where ')})")
    link_line = line_of(mappings / "vehicles.map", "link(")
    live.run(only=["vehicles"])  # the contacts flow has not run: no owner has a profile yet
    early = [d for d in letters(live) if d.flow == "vehicles"]
    assert early and all("linked record" in d.reason for d in early)
    assert any("linked record not written yet" in d.reason for d in early)
    live.run()
    later = [d for d in letters(live) if d.flow == "vehicles"]
    assert later, "the seeded data has vehicles whose owner the contacts flow filters out"
    for d in later:
        assert re.search(r"linked record filtered out by the `where` of flow contacts \(\S*" + where, d.reason), d.reason
        assert "not written yet" not in d.reason
        # The letter points at the line of the link in the vehicles mapping.
        assert (Path(d.mapping_file or "").name, d.mapping_line) == ("vehicles.map", link_line)
    owners = {d.record["_new_contactid_value"] for d in later}
    contacts = {r["contactid"]: r for r in live.emulator.dataverse.store.rows("contact")}
    assert all(contacts[o]["statecode"] != 0 or not contacts[o].get("emailaddress1") for o in owners)


def test_a_failed_write_points_at_its_flow_in_the_mapping(live: Live) -> None:
    live.run()
    sends = live.job().flows["email_sends"]
    contact = next(r["contactid"] for r in live.emulator.dataverse.store.rows("contact"))
    live.control("POST", "campaign/deliveries", {"label": "Spring", "campaign": "Spring 2027"})
    live.control("DELETE", f"d365/contact/{contact}")  # its events now regard a missing contact: refused
    live.run()
    refused = [d for d in letters(live) if d.flow.startswith("email_")]
    assert refused, "an activity regarding a deleted contact is refused by Dataverse"
    header = line_of(Path(sends.file) if Path(sends.file).is_absolute() else live.config.parent / sends.file,
                     "flow email_sends")
    for d in refused:
        assert d.mapping_file and d.mapping_line, d
    assert any(d.flow == "email_sends" and d.mapping_line == header for d in refused)
    shown = json.loads(mapsync(live, "deadletters", "list", "--env", "emulator", "--format", "json").stdout)
    assert all(re.fullmatch(r".+\.map:\d+", row["mapping"]) for row in shown), shown


def test_deadletters_list_is_one_line_per_letter_within_100_columns(live: Live) -> None:
    add_vehicle_without_vin(live)
    live.run()
    stored = letters(live)
    out = mapsync(live, "deadletters", "list", "--env", "emulator", columns=100)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    rows = [line for line in lines if re.match(r"\s*\d+ \S+ (deferred|retrying|queued|failed) ", line)]
    assert sorted(int(r.split()[0]) for r in rows) == sorted(d.id for d in stored)  # one line each, no wrapping
    assert "\x1b[" not in out.stdout


def test_explain_describes_links_in_plain_words(live: Live) -> None:
    live.run()
    mappings = live.config.parent / "mappings"
    waiting = next(d for d in letters(live) if d.flow == "vehicles")
    out = mapsync(live, "explain", "--env", "emulator", "--flow", "vehicles", "--key", waiting.source_key)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "LinkRef(" not in text and "ContactRef(" not in text
    owner = waiting.record["_new_contactid_value"]
    assert (f"cusProfile links to the record flow contacts writes for {owner} "
            f"(link(...) at mappings/vehicles.map:{line_of(mappings / 'vehicles.map', 'link(')})") in text
    assert "does not resolve: linked record filtered out by the `where` of flow contacts" in text
    linked = next(r for r in live.emulator.dataverse.store.rows("new_vehicle")
                  if r["new_vehicleid"] not in {d.source_key for d in letters(live)} and r.get("_new_contactid_value")
                  and r.get("statecode") == 0 and r.get("new_vin"))
    out = mapsync(live, "explain", "--env", "emulator", "--flow", "vehicles", "--key", linked["new_vehicleid"])
    assert "resolves to target record @" in " ".join(out.stdout.split()), out.stdout
