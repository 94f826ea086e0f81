"""Campaign's import workflows in the emulator, end to end: files uploaded with a real SFTP client, the
External signal fired through the REST API as Adobe documents it, then the import job's results (the
store, `<name>.rejects.csv`, `<name>.done`), the 10-minute rule, the workflow's states, and the faults
`signal_refused` and `import_failed`."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync.emulators.campaign.store import Condition
from mapsync.emulators.server import Emulator, Served, start_in_thread
from tests.emulators.sftp_client import upload

MASK = "mapsync_contacts_run1_*.csv"


class Api:
    """Campaign's REST API over TLS with an IMS token: the workflow resource, its trigger, its commands."""

    def __init__(self, emulator: Emulator, served: Served) -> None:
        self.emulator = emulator
        c = emulator.credentials
        self.client = httpx.Client(verify=served.client_ssl(), base_url=served.base_url, timeout=30)
        token = self.client.post("/ims/token/v3", data={
            "grant_type": "client_credentials", "client_id": c.campaign_client_id,
            "client_secret": c.campaign_client_secret, "scope": "openid,AdobeID,campaign_sdk"}).json()["access_token"]
        self.client.headers.update({"Authorization": f"Bearer {token}", "X-Api-Key": c.campaign_client_id})
        self.base = f"/{c.organization}/campaign"

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        reply = self.client.get(f"{self.base}/workflow/execution/{workflow_id}")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def signal(self, workflow_id: str, mask: str = MASK) -> httpx.Response:
        href = self.workflow(workflow_id)["activities"]["activity"]["signal1"]["trigger"]["href"]
        return self.client.post(href, json={"source": "mapsync", "parameters": {"fileMask": mask}})

    def command(self, workflow_id: str, method: str) -> httpx.Response:
        return self.client.post(f"{self.base}/workflow/execution/{workflow_id}/commands", json={"method": method})

    def profile(self, key: str) -> dict[str, Any]:
        reply = self.client.get(f"{self.base}/profileAndServicesExt/profile/byExternalId",
                                params={"externalId_parameter": key})
        content = reply.json()["content"]
        assert len(content) == 1, f"{len(content)} profiles with externalId {key}"
        return dict(content[0])


@pytest.fixture
def live() -> Iterator[Api]:
    emulator = Emulator(seed=5, contacts=20, signal_interval_seconds=1.0, import_rows_per_second=1e6)
    served = start_in_thread(emulator)
    api = Api(emulator, served)
    try:
        yield api
    finally:
        api.client.close()
        served.stop()


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def outgoing(emulator: Emulator, name: str) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    folder = emulator.sftp_root / "outgoing"
    done = folder / f"{name}.done"
    rejects = folder / f"{name}.rejects.csv"
    marker = json.loads(done.read_text(encoding="utf-8")) if done.exists() else None
    rows = list(csv.DictReader(rejects.open(encoding="utf-8", newline=""))) if rejects.exists() else []
    return marker, rows


def imported(api: Api) -> None:
    assert api.emulator.adobe.importer is not None
    assert api.emulator.adobe.importer.wait_idle(60)


def advance(api: Api, seconds: float) -> None:
    api.emulator.clock.advance(seconds)


def test_the_import_workflows_are_there_for_every_resource(live: Api) -> None:
    for workflow_id in ("WKFIMPPROFILE", "WKFIMPCUSVEHICLE"):
        wf = live.workflow(workflow_id)
        assert wf["id"] == workflow_id and wf["state"] == "started" and "lastError" not in wf
        assert wf["activities"]["activity"]["signal1"]["parameters"] == {"fileMask": "string"}


def test_a_signal_imports_the_matching_files_and_writes_rejects_then_done(live: Api) -> None:
    good = csv_bytes([
        ["externalId", "email", "firstName", "location.city", "gender", "birthDate", "blackListEmail"],
        ["k1", "ann@example.com", "Ann", "Lyon", "female", "1980-02-29", "false"],
        ["k2", "bob@example.com", "B" * 31, "Paris", "male", "", "true"],  # firstName too long
        ["", "nokey@example.com", "No", "Nice", "", "", ""],  # missing key
        ["k4", "c@example.com", "Cy", "Metz", "robot", "", ""],  # not an enumeration value
        ["k5", "d@example.com", "Di", "Caen", "", "1980-02-30", ""],  # not a date
        ["k6", "e@example.com", "Ed", "Nancy", "", "", "maybe"],  # not a boolean
        ["k7", "f@example.com"],  # too few fields
        ["k8", "g,h \"quoted\"@example.com", "Émile", "Zürich\nNord", "unknown", "", ""],
    ])
    other = csv_bytes([["externalId", "email"], ["z1", "z@example.com"]])
    upload(live.emulator, {"mapsync_contacts_run1_00001.csv": good, "mapsync_other_run1_00001.csv": other})
    reply = live.signal("WKFIMPPROFILE")
    assert reply.status_code == 200 and reply.json() == {}
    imported(live)

    marker, rejects = outgoing(live.emulator, "mapsync_contacts_run1_00001.csv")
    assert marker == {"file": "mapsync_contacts_run1_00001.csv", "imported": 2, "rejected": 6, "created": 2,
                      "updated": 0}
    assert rejects == [
        {"line": "2", "key": "k2", "reason": "field 'firstName' is too long (max 30)"},
        {"line": "3", "key": "", "reason": "missing key"},
        {"line": "4", "key": "k4", "reason": "field 'gender' is not a valid enumeration value "
                                             "(one of male, female, unknown, notApplicable)"},
        {"line": "5", "key": "k5", "reason": "field 'birthDate' is not a valid date"},
        {"line": "6", "key": "k6", "reason": "field 'blackListEmail' is not a valid boolean"},
        {"line": "7", "key": "k7", "reason": "expected 7 fields, found 2"},
    ]
    ann = live.profile("k1")
    assert (ann["email"], ann["firstName"], ann["location"]["city"], ann["gender"], ann["birthDate"]) == \
        ("ann@example.com", "Ann", "Lyon", "female", "1980-02-29")
    emile = live.profile("k8")
    assert emile["email"] == 'g,h "quoted"@example.com' and emile["location"]["city"] == "Zürich\nNord"
    # Only the files the mask selects: the other flow's file is untouched.
    assert outgoing(live.emulator, "mapsync_other_run1_00001.csv") == (None, [])
    assert not list(live.emulator.adobe.store.rows_where("profile", [Condition(("externalId",), "z1")]))


def test_files_are_imported_in_name_order_and_each_name_once(live: Api) -> None:
    upload(live.emulator, {
        "mapsync_contacts_run1_00002.csv": csv_bytes([["externalId", "firstName"], ["k1", "Second"]]),
        "mapsync_contacts_run1_00001.csv": csv_bytes([["externalId", "firstName"], ["k1", "First"]]),
    })
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    assert live.profile("k1")["firstName"] == "Second"  # 00002 after 00001
    first, _ = outgoing(live.emulator, "mapsync_contacts_run1_00001.csv")
    assert first is not None and first["created"] == 1
    # A later signal with the same mask imports nothing again: the names were imported once.
    for name in ("mapsync_contacts_run1_00001.csv.done", "mapsync_contacts_run1_00002.csv.done"):
        (live.emulator.sftp_root / "outgoing" / name).unlink()
    advance(live, 1)
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    assert not list((live.emulator.sftp_root / "outgoing").glob("*.done"))


def test_insert_or_update_by_the_key_never_duplicates_and_touches_only_the_columns_present(live: Api) -> None:
    upload(live.emulator, {"mapsync_contacts_run1_00001.csv": csv_bytes([
        ["externalId", "email", "firstName", "location.city", "location.zipCode"],
        ["k1", "a@example.com", "Ann", "Lyon", "69001"],
        ["k2", "b@example.com", "Bob", "Paris", "75001"]])})
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    before = live.emulator.adobe.store.count("profile")
    pkey = live.profile("k1")["PKey"]

    # Another run's file: the same keys (one twice) and a new one, fewer columns.
    upload(live.emulator, {"mapsync_contacts_run2_00001.csv": csv_bytes([
        ["externalId", "firstName", "location.city"],
        ["k1", "Anne", "Lille"], ["k2", "Bobby", ""], ["k3", "Cy", "Metz"], ["k1", "Annie", "Lille"]])})
    advance(live, 1)
    assert live.signal("WKFIMPPROFILE", "mapsync_contacts_run2_*.csv").status_code == 200
    imported(live)
    marker, rejects = outgoing(live.emulator, "mapsync_contacts_run2_00001.csv")
    assert marker == {"file": "mapsync_contacts_run2_00001.csv", "imported": 4, "rejected": 0, "created": 1,
                      "updated": 3}
    assert rejects == []
    assert live.emulator.adobe.store.count("profile") == before + 1
    ann = live.profile("k1")
    assert ann["PKey"] == pkey  # updated in place, the same record
    assert (ann["firstName"], ann["email"], ann["location"]["city"], ann["location"]["zipCode"]) == \
        ("Annie", "a@example.com", "Lille", "69001")  # email and zipCode were not in the file: kept
    assert live.profile("k2")["location"]["city"] == ""  # an empty field empties the value


def test_header_problems_reject_every_row_with_the_reason(live: Api) -> None:
    upload(live.emulator, {
        "mapsync_contacts_run1_00001.csv": csv_bytes([["externalId", "shoeSize"], ["k1", "42"], ["k2", "43"]]),
        "mapsync_contacts_run1_00002.csv": csv_bytes([["externalId", "created"], ["k3", "2024-01-01"]]),
    })
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    marker, rejects = outgoing(live.emulator, "mapsync_contacts_run1_00001.csv")
    assert marker is not None and (marker["imported"], marker["rejected"]) == (0, 2)
    assert [r["reason"] for r in rejects] == ["unknown column 'shoeSize'"] * 2
    assert [r["key"] for r in rejects] == ["k1", "k2"]
    _, rejects = outgoing(live.emulator, "mapsync_contacts_run1_00002.csv")
    assert [r["reason"] for r in rejects] == ["unknown column 'created'"]


def test_a_custom_resource_is_imported_with_its_own_types(live: Api) -> None:
    name = "mapsync_vehicles_run1_00001.csv"
    upload(live.emulator, {name: csv_bytes([
        ["cusExternalId", "cusVin", "cusMake", "cusYear"],
        ["v1", "1HGCM82633A004352", "Honda", "2003"],
        ["v2", "1HGCM82633A0043520", "Honda", "2003"],  # 18 characters: too long
        ["v3", "JH4KA8260MC000000", "Acura", "nineteen"]])})
    assert live.signal("WKFIMPCUSVEHICLE", "mapsync_vehicles_run1_*.csv").status_code == 200
    imported(live)
    marker, rejects = outgoing(live.emulator, name)
    assert marker is not None and (marker["created"], marker["rejected"]) == (1, 2)
    assert [r["reason"] for r in rejects] == ["field 'cusVin' is too long (max 17)",
                                              "field 'cusYear' is not a valid integer"]
    rows = list(live.emulator.adobe.store.rows_where("cusVehicle", [Condition(("cusExternalId",), "v1")]))
    assert [(r["cusMake"], r["cusYear"]) for _, r in rows] == [("Honda", 2003)]


def test_the_10_minute_rule_with_a_short_interval(live: Api) -> None:
    assert live.signal("WKFIMPPROFILE").status_code == 200
    refused = live.signal("WKFIMPPROFILE")
    assert refused.status_code == 400 and "10 minutes" in refused.json()["message"]
    advance(live, 1.0)
    assert live.signal("WKFIMPPROFILE").status_code == 200


def test_a_payload_above_64_kb_is_refused(live: Api) -> None:
    refused = live.signal("WKFIMPPROFILE", "x" * (64 * 1024))
    assert refused.status_code == 400 and "64 KB" in refused.json()["message"]
    assert live.signal("WKFIMPPROFILE").status_code == 200  # the refused one did not count as fired


def test_the_10_minute_rule_by_default() -> None:
    emulator = Emulator(contacts=0)
    served = start_in_thread(emulator)
    api = Api(emulator, served)
    try:
        assert api.signal("WKFIMPPROFILE").status_code == 200
        advance(api, 599)
        assert api.signal("WKFIMPPROFILE").status_code == 400
        advance(api, 1)
        assert api.signal("WKFIMPPROFILE").status_code == 200
    finally:
        api.client.close()
        served.stop()


def test_a_stopped_workflow_refuses_signals_and_a_start_runs_it_again(live: Api) -> None:
    assert live.command("WKFIMPPROFILE", "stop").status_code == 200
    refused = live.signal("WKFIMPPROFILE")
    assert refused.status_code == 400 and "is not running" in refused.json()["message"]
    assert live.command("WKFIMPPROFILE", "start").status_code == 200
    assert live.signal("WKFIMPPROFILE").status_code == 200


def test_the_reply_does_not_wait_for_the_import_and_stop_ends_the_job() -> None:
    emulator = Emulator(contacts=0, signal_interval_seconds=0, import_rows_per_second=20)
    served = start_in_thread(emulator)
    api = Api(emulator, served)
    name = "mapsync_contacts_run1_00001.csv"
    try:
        rows = [["externalId", "firstName"]] + [[f"k{i}", "x"] for i in range(200)]  # 10 s at 20 rows/s
        upload(emulator, {name: csv_bytes(rows)})
        assert api.signal("WKFIMPPROFILE").status_code == 200
        assert outgoing(emulator, name)[0] is None  # the reply came back while the import runs
        assert api.command("WKFIMPPROFILE", "stop").status_code == 200
        imported(api)
        assert outgoing(emulator, name)[0] is None  # stopped part-way: no marker
        assert emulator.adobe.store.count("profile", [Condition(("externalId",), "k199")]) == 0
        # Started again, a signal imports the file whole (it was never marked imported).
        emulator.adobe.importer.rows_per_second = 1e6  # type: ignore[union-attr]
        assert api.command("WKFIMPPROFILE", "start").status_code == 200
        assert api.signal("WKFIMPPROFILE").status_code == 200
        imported(api)
        marker, _ = outgoing(emulator, name)
        assert marker is not None and marker["imported"] == 200
    finally:
        api.client.close()
        served.stop()


def test_a_paused_workflow_holds_its_import_until_resumed() -> None:
    emulator = Emulator(contacts=0, signal_interval_seconds=0, import_rows_per_second=20)
    served = start_in_thread(emulator)
    api = Api(emulator, served)
    name = "mapsync_contacts_run1_00001.csv"
    importer = emulator.adobe.importer
    assert importer is not None
    try:
        upload(emulator, {name: csv_bytes([["externalId"]] + [[f"k{i}"] for i in range(200)])})
        assert api.signal("WKFIMPPROFILE").status_code == 200
        assert api.command("WKFIMPPROFILE", "pause").status_code == 200
        importer.rows_per_second = 1e6  # were it not held, the rest would load at once
        assert not importer.wait_idle(0.5)
        assert outgoing(emulator, name)[0] is None
        assert api.command("WKFIMPPROFILE", "resume").status_code == 200
        imported(api)
        marker, _ = outgoing(emulator, name)
        assert marker is not None and marker["imported"] == 200
    finally:
        api.client.close()
        served.stop()


def test_signal_refused_answers_400_once(live: Api) -> None:
    live.emulator.set_faults("signal_refused")
    refused = live.signal("WKFIMPPROFILE")
    assert refused.status_code == 400 and "10 minutes" in refused.json()["message"]
    assert live.signal("WKFIMPPROFILE").status_code == 200  # the refused one did not count as fired
    assert live.emulator.adobe_faults.counts["signal_refused"] == 1


def test_one_shot_faults_are_armed_through_the_control_endpoint(live: Api) -> None:
    armed = live.client.put("/_emulator/faults", json={"refuse_signals": 2})
    assert armed.status_code == 200 and armed.json()["refuse_signals"] == 2
    assert [live.signal("WKFIMPPROFILE").status_code for _ in range(3)] == [400, 400, 200]
    live.client.put("/_emulator/faults", json={"refuse_signals": 2})  # set again: armed again
    advance(live, 1)
    assert live.signal("WKFIMPPROFILE").status_code == 400


def test_import_failed_stops_part_way_and_a_new_signal_after_start_imports_without_duplicates(live: Api) -> None:
    name = "mapsync_contacts_run1_00001.csv"
    upload(live.emulator, {name: csv_bytes([["externalId", "firstName"]] + [[f"k{i}", f"n{i}"] for i in range(10)])})
    live.emulator.set_faults("import_failed")
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    wf = live.workflow("WKFIMPPROFILE")
    assert wf["state"] == "error" and "failed at data row 6" in wf["lastError"]
    assert outgoing(live.emulator, name)[0] is None  # no .done for a failed file
    store = live.emulator.adobe.store
    assert [store.count("profile", [Condition(("externalId",), f"k{i}")]) for i in range(10)] == [1] * 5 + [0] * 5
    advance(live, 1)
    refused = live.signal("WKFIMPPROFILE")
    assert refused.status_code == 400 and "is not running" in refused.json()["message"]
    assert live.command("WKFIMPPROFILE", "resume").status_code == 400  # only start leaves the error
    assert live.command("WKFIMPPROFILE", "start").status_code == 200
    wf = live.workflow("WKFIMPPROFILE")
    assert wf["state"] == "started" and "lastError" not in wf
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    marker, _ = outgoing(live.emulator, name)
    assert marker == {"file": name, "imported": 10, "rejected": 0, "created": 5, "updated": 5}
    assert [store.count("profile", [Condition(("externalId",), f"k{i}")]) for i in range(10)] == [1] * 10


def test_a_file_that_is_not_utf8_puts_the_workflow_in_error(live: Api) -> None:
    name = "mapsync_contacts_run1_00001.csv"
    upload(live.emulator, {name: b"externalId,firstName\nk1,\xe9mile\n"})
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    wf = live.workflow("WKFIMPPROFILE")
    assert wf["state"] == "error" and name in wf["lastError"] and "UTF-8" in wf["lastError"]


def test_reset_empties_the_folders_and_forgets_imported_names(live: Api) -> None:
    upload(live.emulator, {"mapsync_contacts_run1_00001.csv": csv_bytes([["externalId"], ["k1"]])})
    assert live.signal("WKFIMPPROFILE").status_code == 200
    imported(live)
    live.emulator.reset()
    root = live.emulator.sftp_root
    assert not any((root / "incoming").iterdir()) and not any((root / "outgoing").iterdir())
    assert live.emulator.adobe.importer is not None and live.emulator.adobe.importer.imported == {}


def test_an_import_streams_the_file() -> None:
    """Python memory while importing 40,000 rows stays that of one batch, not of the file (~1.6 MB)."""
    emulator = Emulator(contacts=0, import_rows_per_second=1e9)
    name = "mapsync_contacts_run1_00001.csv"
    path = emulator.sftp_root / "incoming" / name
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["externalId", "email", "firstName"])
        writer.writerows([f"key-{i:08d}", f"person{i}@example.com", "Firstname"] for i in range(40_000))
    importer = emulator.adobe.importer
    assert importer is not None
    workflow = emulator.adobe.workflows.find("WKFIMPPROFILE")
    tracemalloc.start()
    try:
        result = importer.import_file(workflow, name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.created == 40_000
    assert peak < path.stat().st_size / 2, f"peak {peak} bytes for a {path.stat().st_size}-byte file"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r"), max_size=40))
def test_any_text_goes_through_the_file_unchanged_or_is_rejected_for_its_length(first: str) -> None:
    emulator = _shared_emulator()
    name = f"mapsync_prop_{abs(hash(first)):x}_00001.csv"
    (emulator.sftp_root / "incoming" / name).write_bytes(csv_bytes([["externalId", "firstName"], ["p1", first]]))
    importer = emulator.adobe.importer
    assert importer is not None
    result = importer.import_file(emulator.adobe.workflows.find("WKFIMPPROFILE"), name)
    stored = [row for _, row in emulator.adobe.store.rows_where("profile", [Condition(("externalId",), "p1")])]
    assert len(stored) == 1 or (result.rejected == 1 and not stored)
    if len(first) <= 30:
        assert result.imported == 1 and stored[-1]["firstName"] == first
    else:
        assert result.rejected == 1


_EMULATOR: list[Emulator] = []


def _shared_emulator() -> Emulator:
    if not _EMULATOR:
        _EMULATOR.append(Emulator(contacts=0, import_rows_per_second=1e9))
    return _EMULATOR[0]
