"""`mapsync schema pull` and `mapsync validate --env` against the emulators served over TLS.

The emulators serve schema metadata in the services' own shapes (Dataverse EntityDefinitions, Campaign
resourceType); a pull through the connectors must give back the shipped snapshots byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mapsync.dsl.schema import DEFAULT_ROOT, load_catalog, render_table
from mapsync.emulators.server import Emulator, Served, start_in_thread, write_config
from mapsync.engine.commands.schema import EVENT_FEED_NOTE, live_catalog, pull, tables_used_by_mappings
from mapsync.engine.config import load_config
from mapsync.engine.connectors import Connectors, build_connectors
from mapsync.engine.errors import TerminalError

ROOT = Path(__file__).resolve().parents[2]
USED = tables_used_by_mappings(sorted((ROOT / "mappings").glob("*.map")))
PULLED = [t for t in USED if not t.startswith("campaign.events.")]


class Live:
    def __init__(self, emulator: Emulator, served: Served, config: Path) -> None:
        self.emulator, self.served, self.config = emulator, served, config

    def env(self) -> Any:
        return load_config(self.config).environments["emulator"]

    def mapsync(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(self.config), *args],
                              cwd=self.config.parent, env={**os.environ, "COLUMNS": "200"},
                              capture_output=True, text=True, timeout=120)

    def with_connectors(self, use: Callable[[Connectors], Awaitable[Any]]) -> Any:
        async def scenario() -> Any:
            connectors = build_connectors(self.env())
            try:
                return await use(connectors)
            finally:
                await connectors.aclose()

        return asyncio.run(scenario())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    project = tmp_path_factory.mktemp("schema_pull")
    shutil.copytree(ROOT / "mappings", project / "mappings")
    emulator = Emulator(seed=3, contacts=10)
    served = start_in_thread(emulator)
    config = write_config(project / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                          state="sqlite:///.mapsync/schema.sqlite", mappings="mappings")
    try:
        yield Live(emulator, served, config)
    finally:
        served.stop()


def shipped(dotted: str) -> str:
    system, _, name = dotted.partition(".")
    return (DEFAULT_ROOT / system / f"{name}.json").read_text(encoding="utf-8")


# -- schema pull ----------------------------------------------------------------------------------


def test_pull_reproduces_every_shipped_snapshot_the_mappings_use(live: Live, tmp_path: Path) -> None:
    assert set(PULLED) == {"d365.contact", "d365.new_vehicle", "d365.acs_emailsend", "d365.acs_emailopen",
                           "d365.acs_emailclick", "d365.acs_emailbounce", "campaign.profile", "campaign.cusVehicle"}
    out = live.mapsync("schema", "pull", "--env", "emulator", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    written = sorted(f"{p.parent.name}.{p.stem}" for p in tmp_path.glob("*/*.json"))
    assert written == sorted(PULLED)  # no event feed file: the journal has no metadata to pull
    for dotted in PULLED:
        system, _, name = dotted.partition(".")
        assert (tmp_path / system / f"{name}.json").read_text(encoding="utf-8") == shipped(dotted), dotted
        assert f"wrote {tmp_path / system / f'{name}.json'}" in out.stdout
    for feed in (t for t in USED if t.startswith("campaign.events.")):
        assert f"skipped {feed}: {EVENT_FEED_NOTE}" in out.stdout
    again = live.mapsync("schema", "pull", "--env", "emulator", "--out", str(tmp_path), "--table", "d365.contact")
    assert again.returncode == 0 and again.stdout.strip() == f"unchanged {tmp_path / 'd365' / 'contact.json'}"


def test_pull_keeps_the_field_order_of_an_existing_snapshot(live: Live, tmp_path: Path) -> None:
    # A service may list columns in another order than the file: a pull must not turn that into a diff.
    for dotted in ("d365.contact", "campaign.profile"):
        system, _, name = dotted.partition(".")
        doc = json.loads(shipped(dotted))
        doc["fields"] = dict(reversed(doc["fields"].items()))
        if "location" in doc["fields"]:
            loc = doc["fields"]["location"]
            loc["fields"] = dict(reversed(loc["fields"].items()))
        del doc["fields"][next(iter(doc["fields"]))]  # and one field the file does not know yet
        (tmp_path / system).mkdir(exist_ok=True)
        (tmp_path / system / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
    paths = asyncio.run(pull(live.env(), ["d365.contact", "campaign.profile"], tmp_path))
    assert len(paths) == 2
    for dotted, path in zip(("d365.contact", "campaign.profile"), paths, strict=True):
        got, want = json.loads(path.read_text(encoding="utf-8")), json.loads(shipped(dotted))
        assert got == want  # same content ...
        names = list(got["fields"])
        dropped = list(want["fields"])[-1]
        assert names[-1] == dropped  # ... the new field last ...
        assert names[:-1] == [n for n in reversed(want["fields"]) if n != dropped]  # ... the rest as the file had it
    profile = json.loads(paths[1].read_text(encoding="utf-8"))
    assert list(profile["fields"]["location"]["fields"]) == list(reversed(json.loads(shipped("campaign.profile"))
                                                                          ["fields"]["location"]["fields"]))


def test_unknown_table_is_an_error_without_traceback(live: Live, tmp_path: Path) -> None:
    out = live.mapsync("schema", "pull", "--env", "emulator", "--out", str(tmp_path), "--table", "d365.nosuchtable")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "nosuchtable" in out.stderr
    out = live.mapsync("schema", "pull", "--env", "emulator", "--out", str(tmp_path), "--table", "campaign.cusNope")
    assert out.returncode == 1 and "no resource named 'cusNope'" in out.stderr and "Traceback" not in out.stderr
    out = live.mapsync("schema", "pull", "--env", "emulator", "--table", "contact")
    assert out.returncode == 2 and "expected d365.<table>" in out.stderr
    assert list(tmp_path.iterdir()) == []


# -- validate --env -------------------------------------------------------------------------------


def test_validate_env_is_clean_on_the_shipped_mappings(live: Live) -> None:
    before = live.emulator.counters()["requests"]
    out = live.mapsync("validate", "--env", "emulator", "mappings/")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 errors" in out.stdout
    assert f"live schema of emulator: {len(PULLED)} tables pulled" in out.stderr
    after = live.emulator.counters()["requests"]
    assert all(after.get(s, 0) > before.get(s, 0) for s in ("dataverse", "campaign")), (before, after)  # it asked both
    assert not (live.config.parent / "schemas").exists()  # and wrote nothing


def test_validate_env_reports_columns_the_live_service_does_not_have(live: Live, tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    text = (mappings / "contacts.map").read_text(encoding="utf-8")
    text = text.replace("cusJobTitle        = jobtitle", "cusJobTitle        = new_loyaltytier")
    text = text.replace("cusSource          =", "cusLoyaltySource   =")
    (mappings / "contacts.map").write_text(text, encoding="utf-8")
    out = live.mapsync("validate", "--env", "emulator", str(mappings), "--format", "json")
    assert out.returncode == 1, out.stderr
    found = {(d["code"], d["message"]) for d in json.loads(out.stdout)}
    assert ("E103", "unknown field `new_loyaltytier` on d365.contact") in found
    assert ("E104", "unknown field `cusLoyaltySource` on campaign.profile") in found


def test_live_catalog_holds_the_pulled_tables_and_the_shipped_event_feeds(live: Live) -> None:
    import argparse

    args = argparse.Namespace(config=str(live.config), env="emulator", paths=[str(ROOT / "mappings")])
    catalog = live_catalog(args)
    assert sorted(f"{s}.{n}" for s, n in catalog.by_key) == sorted(USED)  # nothing else (no d365.account)
    shipped_catalog = load_catalog()
    for (system, name), table in catalog.by_key.items():
        assert render_table(table) == render_table(shipped_catalog.table(system, name)), name  # type: ignore[arg-type]


def test_validate_env_with_an_unknown_environment_is_a_usage_error(live: Live) -> None:
    out = live.mapsync("validate", "--env", "prod", "mappings/")
    assert out.returncode == 2 and "no such environment" in out.stderr and "Traceback" not in out.stderr


# -- the metadata the emulators serve --------------------------------------------------------------


def test_dataverse_entity_definitions_in_the_web_api_shape(live: Live) -> None:
    async def use(c: Connectors) -> tuple[Any, ...]:
        assert c.d365 is not None
        http = c.d365.http
        entity = (await http.request("GET", "EntityDefinitions(LogicalName='acs_emailsend')"
                                            "?$select=LogicalName,DisplayName&$expand=Attributes($select=LogicalName,"
                                            "ColumnNumber,IsValidForCreate,IsValidForUpdate,RequiredLevel),Keys")).json()
        bare = (await http.request("GET", "EntityDefinitions(LogicalName='contact')")).json()
        keys = (await http.request("GET", "EntityDefinitions(LogicalName='acs_emailsend')/Keys")).json()
        states = (await http.request("GET", "EntityDefinitions(LogicalName='contact')/Attributes/"
                                            "Microsoft.Dynamics.CRM.StateAttributeMetadata?$expand=OptionSet")).json()
        lookups = (await http.request("GET", "EntityDefinitions(LogicalName='contact')/Attributes/"
                                             "Microsoft.Dynamics.CRM.LookupAttributeMetadata")).json()
        csdl = (await http.request("GET", "$metadata", headers={"Accept": "application/xml"})).text
        with pytest.raises(TerminalError) as bad_cast:
            await http.request("GET", "EntityDefinitions(LogicalName='contact')/Attributes/Microsoft.Dynamics.CRM.Nope")
        return entity, bare, keys, states, lookups, csdl, bad_cast.value

    entity, bare, keys, states, lookups, csdl, bad_cast = live.with_connectors(use)
    assert entity["DisplayName"]["UserLocalizedLabel"]["Label"] == "Email Send (custom activity)"
    assert "EntitySetName" not in entity  # $select is honoured
    attrs = entity["Attributes"]
    names = [a["LogicalName"] for a in attrs]
    assert names == list(json.loads(shipped("d365.acs_emailsend"))["fields"])  # snapshot order, no versionnumber
    assert [a["ColumnNumber"] for a in attrs] == list(range(1, len(attrs) + 1))
    pk = attrs[0]
    assert (pk["IsValidForCreate"], pk["IsValidForUpdate"], pk["RequiredLevel"]["Value"]) == (True, False, "SystemRequired")
    created = next(a for a in attrs if a["LogicalName"] == "createdon")
    assert (created["IsValidForCreate"], created["IsValidForUpdate"]) == (False, False)
    subject = next(a for a in attrs if a["LogicalName"] == "subject")
    assert subject["RequiredLevel"]["Value"] == "ApplicationRequired"
    assert entity["Keys"][0]["KeyAttributes"] == ["acs_eventid"] == keys["value"][0]["KeyAttributes"]
    assert "Attributes" not in bare and "Keys" not in bare  # only when expanded, as in Dataverse
    assert bare["IsActivity"] is False and bare["ChangeTrackingEnabled"] is True and bare["EntitySetName"] == "contacts"
    assert {a["LogicalName"]: a["AttributeType"] for a in states["value"]} == {"statecode": "State"}
    assert [o["Value"] for o in states["value"][0]["OptionSet"]["Options"]] == [0, 1]
    types = {a["LogicalName"]: a["AttributeType"] for a in lookups["value"]}
    assert types == {"parentcustomerid": "Customer", "ownerid": "Owner"}
    # Rows carry versionnumber on activities (the change log needs it), so the wire schema declares it.
    assert '<EntityType Name="acs_emailsend"' in csdl and csdl.count('Name="versionnumber"') >= 5
    assert bad_cast.status == 404


def test_campaign_resource_type_in_the_documented_shape(live: Live) -> None:
    async def use(c: Connectors) -> tuple[Any, ...]:
        assert c.campaign is not None
        http = c.campaign.http
        plain = (await http.request("GET", "profileAndServices/resourceType/profile")).json()
        ext = (await http.request("GET", "profileAndServicesExt/resourceType/profile")).json()
        filters = (await http.request("GET", ext["filters"]["href"])).json()
        vehicle = (await http.request("GET", "profileAndServicesExt/resourceType/cusVehicle")).json()
        missing = await http.request("GET", "profileAndServices/resourceType/cusVehicle", accept=(404,))
        return plain, ext, filters, vehicle, missing.status_code

    plain, ext, filters, vehicle, missing = live.with_connectors(use)
    assert (plain["name"], plain["label"], plain["data"]) == ("profile", "Profile", "/profileAndServices/profile/")
    assert ext["data"] == "/profileAndServicesExt/profile/"
    assert "cusFullName" not in plain["content"] and ext["content"]["cusFullName"]["length"] == 100
    email = ext["content"]["email"]
    assert (email["apiName"], email["label"], email["type"], email["length"]) == ("email", "Email", "string", 128)
    assert ext["content"]["gender"]["type"] == "enumeration"
    assert ext["content"]["location"]["type"] == "item" and ext["content"]["location"]["content"]["city"]["length"] == 50
    assert ext["content"]["PKey"]["readOnly"] is True
    assert {k: v["data"] for k, v in filters.items()} == {
        "byEmail": "/profileAndServicesExt/profile/byEmail?email=$value",
        "byText": "/profileAndServicesExt/profile/byText?text=$value",
        "byExternalId": "/profileAndServicesExt/profile/byExternalId?externalId_parameter=$value",
    }
    link = vehicle["content"]["cusProfile"]
    assert (link["type"], link["resTarget"]) == ("link", "profile")
    assert vehicle["content"]["cusYear"]["type"] == "number"
    assert missing == 404  # a custom resource lives in profileAndServicesExt only


# -- under faults -----------------------------------------------------------------------------------


def test_fetch_schema_under_hostile_faults_still_gives_the_snapshots() -> None:
    # In-process rigs of the connector tests (virtual time, so the Retry-After waits cost nothing).
    from tests.engine.test_connector_campaign import HOSTILE, Rig
    from tests.engine.test_connector_d365 import make

    d365_names = [t.partition(".")[2] for t in PULLED if t.startswith("d365.")]
    campaign_names = [t.partition(".")[2] for t in PULLED if t.startswith("campaign.")]
    conn, d365_records = make(Emulator(contacts=1, faults="hostile"))
    rig = Rig(faults=HOSTILE)
    campaign = rig.connector()

    async def scenario() -> list[Any]:
        try:
            return [*await conn.fetch_schema(d365_names), *await campaign.fetch_schema(campaign_names)]
        finally:
            await conn.http.aclose()
            await campaign.http.aclose()
            await rig.ims.aclose()

    tables = asyncio.run(scenario())
    assert [t.dotted for t in tables] == [f"d365.{n}" for n in d365_names] + [f"campaign.{n}" for n in campaign_names]
    for table in tables:
        assert render_table(table) == shipped(table.dotted), table.dotted
    failed = [r for r in [*d365_records, *rig.records] if r.status is None or r.status >= 429]
    assert failed  # the faults did hit the metadata reads, and were retried
