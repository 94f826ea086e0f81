"""Every mode and clause the checker accepts does what docs/language.md says, against the emulators; the
combinations that cannot do what they say are refused by the checker instead.

mode (create, update, upsert, mirror) x direction (Dynamics 365 -> Campaign, Campaign -> Dynamics 365) x
`on delete` x `on filtered`, on one small emulator for the module (reset between cases).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.dsl.errors import CheckError
from mapsync.emulators.server import Emulator, Served, write_config
from mapsync.engine.runner import RunReport, load_job, run_job
from tests.e2e.conftest import counts, serving
from tests.paths import FIXTURE_MAPPINGS

MODES = ("create", "update", "upsert", "mirror")
POLICIES = ("ignore", "delete")

PEOPLE = """
flow people {{
  from d365.contact
  to   campaign.profile
  key  contactid -> externalId
  mode {mode}
  on delete: {on_delete}
  where statecode == 0 and emailaddress1 is not null
  on filtered: {on_filtered}
  map {{
    email    = lower(trim(emailaddress1))  required
    lastName = lastname
  }}
}}
"""

SENDS = """
flow sends {{
  from campaign.events.send
  to   d365.acs_emailsend
  key  id -> acs_eventid
  mode {mode}
  {on_delete}
  where profile.externalId is not null
  on filtered: {on_filtered}
  map {{
    subject           = "Sent"
    regardingobjectid = contact(profile.externalId)  required
  }}
}}
"""


@pytest.fixture(scope="module")
def emulator() -> Iterator[tuple[Emulator, Served]]:
    with serving(seed=11, contacts=12) as pair:
        yield pair


class Case:
    def __init__(self, emulator: tuple[Emulator, Served], folder: Path, mappings: dict[str, str]) -> None:
        self.emulator, self.served = emulator
        served = self.served
        self.emulator.reset()
        (folder / "mappings").mkdir()
        for name, text in mappings.items():
            (folder / "mappings" / name).write_text(text, encoding="utf-8")
        self.config = write_config(folder / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                                   state="sqlite:///.mapsync/matrix.sqlite", mappings="mappings")

    def run(self, **kwargs: Any) -> RunReport:
        report = asyncio.run(run_job(load_job(self.config, "emulator"), optouts=False, **kwargs))
        assert not report.errors and not report.outages, report.errors
        return report

    def control(self, method: str, path: str, body: object = None) -> None:
        context = ssl.create_default_context(cafile=str(self.served.ca_file))
        with httpx.Client(base_url=self.served.base_url, verify=context, timeout=30) as client:
            client.request(method, f"/_emulator/{path}", json=body).raise_for_status()

    @property
    def d365(self) -> Any:
        return self.emulator.dataverse.store

    def profiles(self) -> dict[str, dict[str, Any]]:
        """Campaign profiles by the contact id they carry."""
        return {p["externalId"]: p for _, p in self.emulator.adobe.store.rows_where("profile") if p.get("externalId")}


def _refused(config_text: dict[str, str], tmp_path: Path, emulator: tuple[Emulator, Served], words: str) -> None:
    case = Case(emulator, tmp_path, config_text)
    with pytest.raises(CheckError) as raised:
        load_job(case.config, "emulator")
    assert any(words in d.message for d in raised.value.diagnostics), raised.value.diagnostics


@pytest.mark.parametrize("on_filtered", POLICIES)
@pytest.mark.parametrize("on_delete", POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_dynamics_to_campaign(mode: str, on_delete: str, on_filtered: str, tmp_path: Path,
                              emulator: tuple[Emulator, Served]) -> None:
    text = {"people.map": PEOPLE.format(mode=mode, on_delete=on_delete, on_filtered=on_filtered)}
    if mode == "update" and "delete" in (on_delete, on_filtered):
        _refused(text, tmp_path, emulator, "with `mode update`: this flow creates nothing")
        return
    case = Case(emulator, tmp_path, text)
    matching = [c["contactid"] for c in case.d365.rows("contact") if c["statecode"] == 0 and c["emailaddress1"]]
    assert len(matching) >= 4
    changed, deactivated, deleted = matching[:3]
    if mode == "update":  # Campaign already holds a profile for one contact: the only one to update
        case.emulator.adobe.store.insert("profile", {"externalId": changed, "email": "old@example.com"})

    first = counts(case.run(), "people")
    if mode == "update":
        assert (first["created"], first["updated"], first["absent"]) == (0, 1, len(matching) - 1)
        assert set(case.profiles()) == {changed}
    else:
        assert first["created"] == len(matching) and set(case.profiles()) >= set(matching)

    case.d365.update("contact", changed, {"lastname": "Changed"})
    case.d365.update("contact", deactivated, {"statecode": 1, "statuscode": 2})
    case.d365.delete("contact", deleted)
    second = counts(case.run(), "people")
    profiles = case.profiles()

    assert (profiles[changed]["lastName"] == "Changed") == (mode != "create")  # create never updates
    assert second["created"] == 0 and second["failed"] == 0
    if mode == "update":
        assert set(profiles) == {changed}
        return
    assert (deactivated in profiles) == (on_filtered == "ignore")
    assert (deleted in profiles) == (on_delete == "ignore" and mode != "mirror")
    assert second["deleted"] == (on_filtered == "delete") + (on_delete == "delete" or mode == "mirror")


@pytest.mark.parametrize("on_filtered", POLICIES)
@pytest.mark.parametrize("on_delete", ("", "on delete: ignore", "on delete: delete"))
@pytest.mark.parametrize("mode", MODES)
def test_campaign_to_dynamics(mode: str, on_delete: str, on_filtered: str, tmp_path: Path,
                              emulator: tuple[Emulator, Served]) -> None:
    text = {"sends.map": SENDS.format(mode=mode, on_delete=on_delete, on_filtered=on_filtered),
            "contacts.map": (FIXTURE_MAPPINGS / "contacts.map").read_text(encoding="utf-8"),
            "replacements.map": (FIXTURE_MAPPINGS / "replacements.map").read_text(encoding="utf-8")}
    if on_delete:
        _refused(text, tmp_path, emulator, "an event feed never deletes an event")
        return
    if mode == "mirror":
        _refused(text, tmp_path, emulator, "there is nothing to mirror")
        return
    if mode == "update" and on_filtered == "delete":
        _refused(text, tmp_path, emulator, "with `mode update`: this flow creates nothing")
        return
    case = Case(emulator, tmp_path, text)
    case.run(only=["contacts"])  # profiles that carry their contact's id
    case.control("POST", "campaign/deliveries", {"label": "Matrix", "campaign": "Q2"})
    first = counts(case.run(only=["sends"]), "sends")
    assert first["failed"] == 0 and first["read"] > 0
    sends = list(case.d365.rows("acs_emailsend"))
    if mode == "update":  # no activity exists yet for any event: nothing to update, nothing created
        assert first["created"] == 0 and first["absent"] > 0 and sends == []
    else:
        assert first["created"] > 0 and len(sends) == first["created"]
        assert len({s["acs_eventid"] for s in sends}) == len(sends)  # one activity per event
    again = counts(case.run(only=["sends"], full=True), "sends")
    assert again["created"] == 0 and again["failed"] == 0  # a replayed journal makes no duplicate
    assert len(list(case.d365.rows("acs_emailsend"))) == len(sends)
