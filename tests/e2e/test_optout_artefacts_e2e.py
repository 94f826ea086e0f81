"""Opt-outs are never cancelled by a sync artefact, end to end through `run`: the contacts flow makes profiles
(not opted out: Campaign's default), then the opt-out rule runs on them in the same run.

The reproduction: 5 new contacts created opted out, and 5 opted-out contacts deactivated (their profiles
removed) then reactivated (new profiles made). Under every rule, the default one included, all 10 stay opted
out in both systems: the newer profile's default is not a change anybody made.
"""

from __future__ import annotations

from typing import Any

import pytest

from mapsync.dsl.runtime import Mapped
from mapsync.engine.demo import verify
from tests.e2e.conftest import Live
from tests.e2e.holdings import held


def profile_values(live: Live) -> dict[str, bool]:
    """externalId -> blackListEmail of the profiles the contacts flow made."""
    store = live.emulator.adobe.store
    return {f["externalId"]: bool(f.get("blackListEmail")) for _, f in store.rows_where("profile")
            if f.get("externalId")}


def contact_values(live: Live) -> dict[str, bool]:
    return {r["contactid"]: bool(r.get("donotbulkemail")) for r in live.emulator.dataverse.store.rows("contact")}


def patch(live: Live, contact: str, values: dict[str, Any]) -> None:
    live.control("PATCH", f"d365/contact/{contact}", values)


@pytest.mark.parametrize("conflict", ["", "  conflict  latest-wins\n", "  conflict  optout-wins\n"],
                         ids=["conflict omitted", "latest-wins", "optout-wins"])
def test_new_and_reactivated_contacts_stay_opted_out(live: Live, conflict: str) -> None:
    mapping = live.config.parent / "mappings" / "optout.map"
    text = mapping.read_text()
    mapping.write_text(text.replace("  conflict  optout-wins\n", conflict))
    assert ("conflict" in mapping.read_text()) == bool(conflict)
    live.run()
    flow = live.job().flows["contacts"]
    synced = [r["contactid"] for r in live.emulator.dataverse.store.rows("contact")
              if isinstance(flow.evaluate(r), Mapped) and not r.get("donotbulkemail")][:5]
    for key in synced:
        patch(live, key, {"donotbulkemail": True})
    opted = live.run()
    assert opted.optouts[0].written_to_campaign == 5
    assert all(profile_values(live)[k] for k in synced)

    # Three are deactivated and the opt-out rule sees their pairs end; two are deactivated while only the
    # contacts flow runs, so the opt-out rule next sees their contacts with new profiles.
    for key in synced[:3]:
        patch(live, key, {"statecode": 1, "statuscode": 2})
    live.run()
    for key in synced[3:]:
        patch(live, key, {"statecode": 1, "statuscode": 2})
    live.run(only=["contacts"])
    assert not set(synced) & set(held(live.emulator, "profile"))  # every one of their profiles is gone

    new = []
    for n in range(5):
        row = live.control("POST", "d365/contact", {"firstname": "Opted", "lastname": f"Out{n}",
                                                     "emailaddress1": f"opted.out{n}@example.com",
                                                     "donotbulkemail": True, "statecode": 0, "statuscode": 1})
        new.append(row["contactid"])  # type: ignore[index]
    for key in synced:
        patch(live, key, {"statecode": 0, "statuscode": 1})
    report = live.run()
    optout = report.optouts[0]
    assert (optout.written_to_d365, optout.written_to_campaign) == (0, 10)

    ten = [*new, *synced]
    assert {k: contact_values(live)[k] for k in ten} == dict.fromkeys(ten, True)
    assert {k: profile_values(live)[k] for k in ten} == dict.fromkeys(ten, True)
    again = live.run()
    assert again.optouts[0].written_to_d365 == again.optouts[0].written_to_campaign == 0
    assert {k: contact_values(live)[k] for k in ten} == dict.fromkeys(ten, True)
    assert verify(live.job(), live.emulator) == []
