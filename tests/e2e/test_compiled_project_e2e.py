"""The compiled project is the contract between `validate` and `run`: what one accepts, the other runs.

Two defects this pins: an `optout` without `via` validated clean but stopped the run, and `mode update` into
Dynamics 365 wrote nothing (every record counted "filtered"), although the checker accepts both.
"""

from __future__ import annotations

import uuid

from mapsync.dsl.plan import ConflictRule, Direction
from tests.e2e.conftest import Live, counts

UPDATE_FLOW = """
flow profile_titles {
  from campaign.profile
  to   d365.contact
  key  email -> emailaddress1
  mode update
  where externalId is not null and email != ""
  map {
    jobtitle = "Title " & lastName
  }
}
"""


def test_an_optout_without_via_runs_paired_through_the_only_flow_between_its_tables(live: Live) -> None:
    mapping = live.config.parent / "mappings" / "optout.map"
    text = mapping.read_text()
    mapping.write_text("\n".join(line for line in text.splitlines() if not line.strip().startswith("via")) + "\n")
    job = live.job()
    [rule] = job.flows.optouts.values()
    assert (rule.via, rule.direction, rule.conflict) == ("contacts", Direction.BOTH, ConflictRule.OPTOUT_WINS)
    report = live.run()
    assert not [e for e in report.errors if "optout" in e], report.errors
    [result] = report.optouts
    assert result.pairs > 0  # paired through the contacts flow's key map


def test_mode_update_into_dynamics_updates_the_rows_that_exist_and_counts_the_others_absent(live: Live) -> None:
    live.run(only=["contacts"], optouts=False)  # profiles that carry their contact's id
    store = live.emulator.dataverse.store
    profiles = [p for _, p in live.emulator.adobe.store.rows_where("profile") if p.get("externalId") and p["email"]]
    gone = profiles[0]["externalId"]
    live.control("DELETE", f"d365/contact/{gone}")  # its profile stays: the contacts flow does not run again
    (live.config.parent / "mappings" / "profile_titles.map").write_text(UPDATE_FLOW)

    report = live.run(only=["profile_titles"], optouts=False)

    seen = counts(report, "profile_titles")
    assert seen["failed"] == 0 and seen["created"] == 0 and seen["rejected"] == 0
    assert seen["absent"] >= 1  # the deleted contact's profile (and profiles of another system's contacts)
    assert 0 < seen["updated"] + seen["absent"] <= seen["read"] - seen["filtered"]  # a key twice: its last row
    assert seen["updated"] > seen["absent"]
    titled = {p["email"].casefold(): f"Title {p['lastName']}" for p in profiles}
    updated = [c for c in store.rows("contact") if (c.get("emailaddress1") or "").casefold() in titled]
    found = {c["emailaddress1"].casefold() for c in updated}
    # A key names one row: where contacts share an email, one of them is the one found and updated.
    assert found and all(any(c["jobtitle"] == titled[e] for c in updated if c["emailaddress1"].casefold() == e)
                         for e in found)
    assert store.get("contact", gone) is None  # update mode never creates
    again = counts(live.run(only=["profile_titles"], optouts=False), "profile_titles")
    assert again["updated"] == 0 and again["created"] == 0  # unchanged payloads are not written again


def test_mode_update_never_creates_a_row_for_a_key_it_cannot_find(live: Live) -> None:
    live.run(only=["contacts"], optouts=False)
    [(pkey, profile)] = [(k, p) for k, p in live.emulator.adobe.store.rows_where("profile")
                         if p.get("externalId") and p["email"]][:1]
    before = live.emulator.dataverse.store.count("contact")
    live.emulator.adobe.store.update("profile", pkey, {"email": f"{uuid.uuid4()}@example.com"})
    (live.config.parent / "mappings" / "profile_titles.map").write_text(UPDATE_FLOW)
    seen = counts(live.run(only=["profile_titles"], optouts=False), "profile_titles")
    assert seen["absent"] >= 1 and seen["created"] == 0
    assert live.emulator.dataverse.store.count("contact") == before
    assert profile  # the profile was one mapsync made
