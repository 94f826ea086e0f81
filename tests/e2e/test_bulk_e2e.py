"""Campaign bulk loads end to end: files over SFTP (host key pinned), one signal to the import workflow, its
rejects as dead letters, the key map from a paged read of Campaign; then incremental runs through REST.

Both systems are compared record by record with what the mappings imply (``mapsync.engine.demo.verify``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapsync import resources
from mapsync.dsl.runtime import Mapped
from mapsync.emulators.server import Emulator, start_in_thread, write_config
from mapsync.engine.demo import verify
from mapsync.engine.errors import ConfigError
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import BOTH_STATES, Live, counts
from tests.e2e.holdings import duplicates

TOO_LONG = "Chief Executive of Long Titles and Other Important Matters"  # 61 characters
NARROWED = 40  # cusJobTitle in the live Campaign: narrower than the project's snapshot (100) says


def narrowed_snapshots(folder: Path) -> Path:
    """The emulator's snapshots with cusJobTitle narrowed: a field changed in Campaign after the project's
    snapshot was pulled, so rows the mapping lets through are refused by the service (REST and import alike)."""
    shutil.copytree(resources.snapshots_dir(), folder)
    profile = folder / "campaign" / "profile.json"
    data = json.loads(profile.read_text())
    fields = data.get("fields", data)
    assert fields["cusJobTitle"]["max_length"] == 100
    fields["cusJobTitle"]["max_length"] = NARROWED
    profile.write_text(json.dumps(data))
    return folder


def bulk_live(project: Path, *, contacts: int, state: str = "sqlite:///.mapsync/e2e.sqlite",
              **bulk: Any) -> tuple[Live, Any]:
    emulator = Emulator(seed=5, contacts=contacts, signal_interval_seconds=1.0, import_rows_per_second=1e6,
                        snapshots=narrowed_snapshots(project / "served-snapshots"))
    served = start_in_thread(emulator)
    config = write_config(project / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                          state=state, mappings="mappings", bulk=emulator.bulk_setup())
    document = yaml.safe_load(config.read_text())
    document["environments"]["emulator"]["bulk"].update({"poll_seconds": 0.05, **bulk})
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    return Live(emulator, served, config), served


@pytest.fixture
def small(project: Path) -> Iterator[Live]:
    live, served = bulk_live(project, contacts=300, min_records=100, chunk_records=120)
    try:
        yield live
    finally:
        served.stop()


def plant_too_long(live: Live, n: int) -> list[str]:
    """``n`` active contacts whose job title the import refuses (the REST API would refuse it too)."""
    keys = []
    for i in range(n):
        live.control("POST", "d365/contact", {"firstname": "Long", "lastname": f"Title{i}", "statecode": 0,
                                               "statuscode": 1, "emailaddress1": f"long{i}@example.com",
                                               "jobtitle": TOO_LONG})
    store = live.emulator.dataverse.store
    keys = [r["contactid"] for r in store.rows("contact") if r.get("jobtitle") == TOO_LONG]
    assert len(keys) == n
    return keys


def contact_problems(job: Any, emulator: Emulator, bad: list[str]) -> list[str]:
    """What ``verify`` finds wrong with the profiles, but for the rows Campaign refused (reported missing); the
    other flows and the opt-out rule did not run."""
    return [p for p in verify(job, emulator) if p.startswith(("contact ", "profile ")) and "donotbulkemail" not in p
            and not any(k in p for k in bad)]


def profiles_by_key(live: Live) -> dict[str, dict[str, Any]]:
    store = live.emulator.adobe.store
    return {p["externalId"]: {**p, "PKey": store.pkey("profile", row_id)}
            for row_id, p in store.rows_where("profile") if p.get("externalId")}


def expected_keys(live: Live) -> set[str]:
    flow = live.job().flows["contacts"]
    return {r["contactid"] for r in live.emulator.dataverse.store.rows("contact") if isinstance(flow.evaluate(r), Mapped)}


def test_a_first_run_above_the_threshold_loads_through_files_and_the_next_one_through_rest(small: Live) -> None:
    bad = plant_too_long(small, 3)
    report = small.run(only=["contacts"], optouts=False)
    result = next(r for r in report.flows if r.flow == "contacts")
    assert result.route.bulk and "bulk.min_records 100" in result.route.why
    c = counts(report, "contacts")
    wanted = expected_keys(small) - set(bad)
    assert c["created"] == len(wanted) and c["failed"] == 3
    # One signal for the whole load, files in chunks of 120 rows, no REST create.
    assert small.emulator.counters()["requests"]["campaign"] < 50
    incoming = small.emulator.sftp_root / "incoming"
    rows = [len(p.read_text().splitlines()) - 1 for p in sorted(incoming.glob("mapsync_contacts_*.csv"))]
    assert sum(rows) == len(wanted) + 3 and max(rows) <= 120 and not list(incoming.glob("*.part"))
    # Campaign holds exactly the records the REST path would have written, once each.
    assert set(profiles_by_key(small)) == wanted and duplicates(small.emulator) == {}
    job = small.job()
    with open_store(job.env.state_url) as store:
        assert store.count_keys("contacts") == len(wanted)
        entries = store.get_keys("contacts", sorted(wanted))
        held = profiles_by_key(small)
        assert all(entries[k].target_id == held[k]["PKey"] and entries[k].payload_hash for k in wanted)
        letters = {d.source_key: d for d in store.open_dead_letters("contacts")}
        assert set(letters) == set(bad)
        assert all("too long" in d.reason and d.field == "cusJobTitle" for d in letters.values())
        assert store.bulk_load("contacts").stage == "done" and store.get_cursor("contacts") is not None
    problems = contact_problems(job, small.emulator, bad)
    assert problems == [], "\n".join(problems)

    # The next run is incremental: through REST, writing only what changed.
    key = sorted(wanted)[0]
    small.control("PATCH", f"d365/contact/{key}", {"lastname": "Changed"})
    again = small.run(only=["contacts"], optouts=False)
    result = next(r for r in again.flows if r.flow == "contacts")
    assert not result.route.bulk and result.route.why == "incremental read"
    assert counts(again, "contacts")["updated"] == 1 and counts(again, "contacts")["created"] == 0
    assert profiles_by_key(small)[key]["lastName"] == "Changed"


def test_a_bulk_full_read_over_a_key_map_that_lost_records_keeps_their_once_fields(small: Live) -> None:
    """An import cannot look a row up before writing it: a record the key map lost would be imported as a
    create, over the profile Campaign holds, `once` fields included. The read adopts first, so the lost
    records are updates without their `once` fields, as through REST."""
    small.run(only=["contacts"], optouts=False)
    with open_store(small.job().env.state_url) as store:
        lost = sorted(e.source_key for e in store.iter_keys("contacts"))[:5]
        store.delete_keys("contacts", lost)  # an old backup restored, say: the rest of the key map is right
    campaign = small.emulator.adobe.store
    for row_id, profile in campaign.rows_where("profile"):
        if profile.get("externalId") in lost:
            campaign.update("profile", row_id, {"cusSource": "tradeshow"})  # set in Campaign since
    report = small.run(only=["contacts"], optouts=False, full=True, bulk=True)
    assert next(r for r in report.flows if r.flow == "contacts").route.bulk
    c = counts(report, "contacts")
    assert c["created"] == 0 and c["updated"] == len(lost)
    held = profiles_by_key(small)
    assert {held[k]["cusSource"] for k in lost} == {"tradeshow"}
    assert duplicates(small.emulator) == {} and set(held) == expected_keys(small)
    with open_store(small.job().env.state_url) as store:
        entries = store.get_keys("contacts", lost)
        assert all(entries[k].target_id == held[k]["PKey"] and entries[k].payload_hash for k in lost)


def test_a_load_says_how_its_import_goes_file_by_file_and_while_it_waits(
        small: Live, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load of millions waits an hour on the import workflow: each imported file is a line with the running
    totals, and a wait without news says so every WAITING_NOTE_SECONDS, naming the workflow."""
    from mapsync.engine.bulk import route

    monkeypatch.setattr(route, "WAITING_NOTE_SECONDS", 0.0)  # every poll without news, every reconciled batch
    small.emulator.adobe.importer.rows_per_second = 300  # about a second for the load's ~270 rows
    bad = plant_too_long(small, 2)
    with caplog.at_level(logging.INFO, logger="mapsync.bulk"):
        small.run(only=["contacts"], optouts=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "mapsync.bulk"]
    imported = [line for line in lines if " imported; " in line]
    wanted = len(expected_keys(small)) - len(bad)
    files = len(list((small.emulator.sftp_root / "incoming").glob("mapsync_contacts_*.csv")))
    assert files >= 3  # ~270 rows in files of at most 120
    assert [line.split("; ")[1].split(" files")[0] for line in imported] == [f"{n} of {files}"
                                                                              for n in range(1, files + 1)]
    assert imported[-1].endswith(f"{wanted:,} rows imported, 2 refused")
    assert any(f"waiting for the import workflow WKFIMPPROFILE (0 of {files} files imported after" in line
               for line in lines), lines
    assert any(line.endswith(f"reconciling, {wanted:,} of {wanted + 2:,} rows key-mapped") for line in lines), lines


def test_below_the_threshold_a_full_read_goes_through_rest(small: Live) -> None:
    document = yaml.safe_load(small.config.read_text())
    document["environments"]["emulator"]["bulk"]["min_records"] = 100_000
    small.config.write_text(yaml.safe_dump(document, sort_keys=False))
    report = small.run(only=["contacts"], optouts=False)
    result = next(r for r in report.flows if r.flow == "contacts")
    assert not result.route.bulk and "<= bulk.min_records 100,000" in result.route.why
    assert not list((small.emulator.sftp_root / "incoming").glob("*.csv"))
    assert set(profiles_by_key(small)) == expected_keys(small)


def test_linked_flows_stay_on_rest_and_no_bulk_forces_rest(small: Live) -> None:
    report = small.run(bulk=True)
    routes = {r.flow: r.route for r in report.flows}
    assert routes["contacts"].bulk
    assert not routes["vehicles"].bulk and routes["vehicles"].why.startswith("linked flow (links to contacts)")
    assert routes["email_sends"] is None  # writes to Dynamics 365: no bulk path at all
    assert verify(small.job(), small.emulator) == []
    replay = small.run(only=["contacts"], optouts=False, replay=["contacts"], bulk=False)
    assert next(r for r in replay.flows if r.flow == "contacts").route.why == "--no-bulk"
    assert duplicates(small.emulator) == {}


@pytest.mark.slow
def test_fifty_thousand_contacts_through_files_verified_record_by_record(project: Path) -> None:
    live, served = bulk_live(project, contacts=50_000, min_records=20_000, chunk_records=10_000)
    try:
        bad = plant_too_long(live, 5)
        report = live.run(only=["contacts"], optouts=False)
        result = next(r for r in report.flows if r.flow == "contacts")
        assert result.route.bulk
        wanted = expected_keys(live) - set(bad)
        assert counts(report, "contacts")["created"] == len(wanted) > 20_000
        assert counts(report, "contacts")["failed"] == 5
        problems = contact_problems(live.job(), live.emulator, bad)
        assert problems == [], "\n".join(problems[:20])
        with open_store(live.job().env.state_url) as store:
            assert {d.source_key for d in store.open_dead_letters("contacts")} == set(bad)
            assert store.count_keys("contacts") == len(wanted)
        key = sorted(wanted)[7]
        live.control("PATCH", f"d365/contact/{key}", {"firstname": "Incremental"})
        again = live.run(only=["contacts"], optouts=False)
        assert not next(r for r in again.flows if r.flow == "contacts").route.bulk
        assert counts(again, "contacts")["updated"] == 1
        assert profiles_by_key(live)[key]["firstName"] == "Incremental"
    finally:
        served.stop()


@pytest.mark.parametrize("state_kind", BOTH_STATES, indirect=True)
def test_killed_bulk_loads_resume_to_the_exact_state(project: Path, state_url: str) -> None:
    """SIGKILL `mapsync run` at every stage of one bulk load, each restart resuming from the stage the last one
    recorded: while writing files, once they are written, between two uploads, after the signal, between two
    imported files, between two pages of the reconciliation's read of Campaign, after it. Then one clean run: Campaign holds every record once, the refused
    rows are dead letters, the key map is complete, and the workflow was signalled once for the load."""
    live, served = bulk_live(project, contacts=1300, state=state_url, min_records=100, chunk_records=250)
    try:
        bad = plant_too_long(live, 2)
        command = [sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                   "emulator", "--flow", "contacts"]
        for point in ("bulk-writing:2", "bulk-written:1", "bulk-uploaded:2", "bulk-signalled:1", "bulk-imported:2",
                      "bulk-reconciling:1", "bulk-reconciled:1"):
            proc = subprocess.run(command, cwd=live.config.parent, env={**os.environ, "MAPSYNC_FAILPOINT": point},
                                  capture_output=True, text=True, timeout=300)
            assert proc.returncode == -signal.SIGKILL, f"{point} was not reached: {proc.stdout}{proc.stderr}"
        final = subprocess.run(command, cwd=live.config.parent, capture_output=True, text=True, timeout=300)
        # The refused rows became dead letters in the run that saw their file imported (exit 1 there).
        assert final.returncode == 0, final.stdout + final.stderr
        wanted = expected_keys(live) - set(bad)
        assert set(profiles_by_key(live)) == wanted and duplicates(live.emulator) == {}
        assert contact_problems(live.job(), live.emulator, bad) == []
        job = live.job()
        with open_store(job.env.state_url, password=job.env.state_password) as store:
            load = store.bulk_load("contacts")
            assert load is not None and load.stage == "done"
            assert {d.source_key for d in store.open_dead_letters("contacts")} == set(bad)
            assert store.count_keys("contacts") == len(wanted)
        received = live.emulator.adobe.workflows.find("WKFIMPPROFILE").signals["signal1"].received
        masks = [str(r) for r in received]
        assert len(masks) == 1 and load.run_id in masks[0], masks  # the load written twice was signalled once
    finally:
        served.stop()


def test_a_failed_import_stops_with_the_workflow_named_and_the_next_run_signals_only_what_is_missing(
        small: Live) -> None:
    small.emulator.set_faults("import_failed")  # the next file stops half-way: the workflow goes to "error"
    report = small.run(only=["contacts"], optouts=False)
    assert [r.outcome for r in report.flows] == ["failed"]
    assert "WKFIMPPROFILE is not running (state error" in report.errors[0] and "start it" in report.errors[0]
    job = small.job()
    with open_store(job.env.state_url) as store:
        from mapsync.engine.commands.status import bulk_line

        line = bulk_line(store, "contacts")
        assert line is not None and "importing" in line and "the next run resumes it" in line
    small.emulator.set_faults("none")
    still = small.run(only=["contacts"], optouts=False)  # mapsync never starts a workflow by itself
    assert "is not running" in still.errors[0]
    small.emulator.adobe.workflows.command("WKFIMPPROFILE", {"method": "start"})
    done = small.run(only=["contacts"], optouts=False)
    assert done.ok, done.errors
    assert set(profiles_by_key(small)) == expected_keys(small) and duplicates(small.emulator) == {}
    assert contact_problems(job, small.emulator, []) == []
    received = small.emulator.adobe.workflows.find("WKFIMPPROFILE").signals["signal1"].received
    assert len(received) == 2  # the load's signal, then one for the files the failed import left


def test_a_work_dir_that_cannot_hold_the_files_stops_the_flow_in_one_line_and_loses_nothing(small: Live) -> None:
    (small.config.parent / "blocked").write_text("a file where the load's folder should go\n")
    document = yaml.safe_load(small.config.read_text())
    document["environments"]["emulator"]["bulk"]["work_dir"] = "blocked"
    small.config.write_text(yaml.safe_dump(document, sort_keys=False))
    report = small.run(only=["contacts"], optouts=False)
    assert [r.outcome for r in report.flows] == ["failed"] and len(report.errors) == 1
    error = report.errors[0]
    assert "cannot write the bulk load's files in" in error and "blocked" in error and "bulk.work_dir" in error
    assert "Nothing was uploaded: the next run writes the load again" in error and "Traceback" not in error
    assert not list((small.emulator.sftp_root / "incoming").iterdir()) and profiles_by_key(small) == {}

    document["environments"]["emulator"]["bulk"]["work_dir"] = ".mapsync/bulk"
    small.config.write_text(yaml.safe_dump(document, sort_keys=False))
    again = small.run(only=["contacts"], optouts=False)
    assert again.ok, again.errors
    assert any("stopped while writing files) was dropped" in n for r in again.flows for n in r.notes)
    assert set(profiles_by_key(small)) == expected_keys(small) and duplicates(small.emulator) == {}


@pytest.mark.parametrize("fault", ["sftp_disconnect", "signal_refused"])
def test_a_dropped_upload_and_a_refused_signal_are_retried_within_the_run(small: Live, fault: str) -> None:
    small.emulator.set_faults(fault)
    report = small.run(only=["contacts"], optouts=False)
    assert report.ok, report.errors
    assert small.emulator.adobe_faults.counts[fault] == 1  # it did fire
    assert next(r for r in report.flows if r.flow == "contacts").route.bulk
    assert set(profiles_by_key(small)) == expected_keys(small) and duplicates(small.emulator) == {}


def test_a_server_showing_another_host_key_is_refused_with_the_setting_to_check(small: Live) -> None:
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    document = yaml.safe_load(small.config.read_text())
    document["environments"]["emulator"]["campaign"]["sftp"]["host_key"] = other
    small.config.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ConfigError, match=r"campaign.sftp.host_key: the SFTP server .* showed another host key"
                                          ) as info:
        small.run(only=["contacts"], optouts=False)
    assert small.emulator.sftp_credentials[1] not in str(info.value)
    assert not list((small.emulator.sftp_root / "incoming").iterdir())  # nothing was uploaded


def use_key_login(live: Live, monkeypatch: pytest.MonkeyPatch, key: Any) -> str:
    """The config logs in with ``key`` (its text in ${E2E_SFTP_KEY}, encrypted, with ${E2E_SFTP_PASSPHRASE}),
    no password. Returns the key's text."""
    private = key.export_private_key("openssh", "e2e-passphrase").decode()
    monkeypatch.setenv("E2E_SFTP_KEY", private)
    monkeypatch.setenv("E2E_SFTP_PASSPHRASE", "e2e-passphrase")
    document = yaml.safe_load(live.config.read_text())
    sftp = document["environments"]["emulator"]["campaign"]["sftp"]
    sftp.pop("password", None)
    sftp.update(private_key="${E2E_SFTP_KEY}", passphrase="${E2E_SFTP_PASSPHRASE}")
    live.config.write_text(yaml.safe_dump(document, sort_keys=False))
    return private


def test_a_load_logs_in_with_a_private_key_from_the_environment(small: Live, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    private = use_key_login(small, monkeypatch, key)
    small.emulator.sftp.authorize(key.export_public_key().decode())
    report = small.run(only=["contacts"], optouts=False)
    assert next(r for r in report.flows if r.flow == "contacts").route.bulk
    assert set(profiles_by_key(small)) == expected_keys(small)

    # A key the server does not know: one line naming the setting, the key and passphrase nowhere in it.
    use_key_login(small, monkeypatch, asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(ConfigError, match=r"campaign.sftp: the SFTP server .* refused user") as info:
        small.run(only=["contacts"], optouts=False, full=True, bulk=True)
    assert "PRIVATE KEY" not in str(info.value) and "e2e-passphrase" not in str(info.value)
    assert private.splitlines()[1] not in str(info.value)


def cli(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), *args],
                          cwd=live.config.parent, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_plan_names_each_flows_path_and_its_cost_both_ways_and_status_shows_the_load(small: Live) -> None:
    plan = cli(small, "plan", "--env", "emulator")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    text = " ".join(plan.stdout.split())
    assert "path: bulk (full read, " in text and "writes > bulk.min_records 100)" in text
    assert "path: REST (linked flow (links to contacts))" in text
    assert "REST " in text and "bulk about " in text and "file(s) over SFTP" in text
    assert not list((small.emulator.sftp_root / "incoming").iterdir())  # a plan uploads nothing
    cli(small, "run", "--env", "emulator", "--flow", "contacts")
    status = cli(small, "status", "--env", "emulator")
    assert "contacts: bulk load " in status.stdout and ": done (" in status.stdout
    incremental = " ".join(cli(small, "plan", "--env", "emulator", "--flow", "contacts").stdout.split())
    assert "path: REST (incremental read)" in incremental
    forced_off = cli(small, "run", "--env", "emulator", "--flow", "contacts", "--full", "--no-bulk")
    assert forced_off.returncode == 0, forced_off.stdout + forced_off.stderr


def test_an_unfinished_load_whose_settings_are_gone_is_a_clear_error_not_a_silent_rest_run(small: Live) -> None:
    small.emulator.set_faults("import_failed")
    assert not small.run(only=["contacts"], optouts=False).ok  # stopped with the load at "importing"
    document = yaml.safe_load(small.config.read_text())
    del document["environments"]["emulator"]["campaign"]["sftp"]
    small.config.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ConfigError, match=r"bulk load .* is unfinished \(importing\) but the flow cannot use the bulk "
                                          r"path now \(no campaign.sftp settings\).*--replay contacts"):
        small.run(only=["contacts"], optouts=False)
