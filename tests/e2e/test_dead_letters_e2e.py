"""Dead letters against the emulators: retried once per run, as the source has the record now, and closed when
the record no longer needs a write (filtered, deleted, already in the target)."""

from __future__ import annotations

import yaml

from mapsync.emulators.faults import FaultProfile
from mapsync.engine.executor import DEFERRED_PREFIX, TRANSIENT_PREFIX
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live, counts


def open_letters(live: Live, flow: str) -> dict[str, object]:
    job = live.job()
    store = open_store(job.env.state_url, password=job.env.state_password)
    try:
        return {d.source_key: d for d in store.open_dead_letters(flow)}
    finally:
        store.close()


def deferred_vehicles(live: Live) -> dict[str, object]:
    return {k: d for k, d in open_letters(live, "vehicles").items() if d.reason.startswith(DEFERRED_PREFIX)}


def test_a_deferred_record_is_tried_once_per_run_even_when_the_flow_reads_everything(live: Live) -> None:
    live.run()
    waiting = deferred_vehicles(live)
    assert waiting, "the seeded data has vehicles whose owner has no profile"
    report = live.run(full=True)  # the read brings every vehicle: the waiting ones must not go round twice
    assert counts(report, "vehicles")["deferred"] == len(waiting)
    assert {k: d.attempts for k, d in deferred_vehicles(live).items()} == {k: 2 for k in waiting}


def test_a_waiting_record_that_stops_needing_a_write_leaves_the_dead_letters(live: Live) -> None:
    live.run()
    waiting = sorted(deferred_vehicles(live))
    assert len(waiting) >= 2
    cleared, deleted = waiting[0], waiting[1]
    owner = live.emulator.dataverse.store.get("new_vehicle", cleared)["_new_contactid_value"]
    # Deleting the owner clears the vehicle's lookup (Remove Link): the vehicle is filtered out now.
    live.control("DELETE", f"d365/contact/{owner}")
    live.control("DELETE", f"d365/new_vehicle/{deleted}")
    live.run()
    letters = open_letters(live, "vehicles")
    assert cleared not in letters and deleted not in letters  # closed, not deferred again nor given up on
    vehicles = live.emulator.dataverse.store
    still_owned = {k for k in waiting if (vehicles.get("new_vehicle", k) or {}).get("_new_contactid_value")}
    assert set(deferred_vehicles(live)) == still_owned  # other vehicles of the deleted owner went too


def test_a_full_read_closes_the_dead_letter_of_a_record_deleted_meanwhile(live: Live) -> None:
    live.run()
    key = sorted(deferred_vehicles(live))[0]
    live.control("DELETE", f"d365/new_vehicle/{key}")
    live.run(full=True)  # the full read does not see it; asking Dataverse for it finds it gone
    assert key not in open_letters(live, "vehicles")
    assert not any(v.get("cusExternalId") == key for _, v in live.emulator.adobe.store.rows_where("cusVehicle"))


def test_a_delete_that_failed_is_retried_by_the_next_run(live: Live) -> None:
    live.run()
    store = live.emulator.dataverse.store
    flow = live.job().flows["contacts"]
    contact = next(r for r in store.rows("contact") if r.get("emailaddress1") and r.get("statecode") == 0
                   and flow.evaluate(r).__class__.__name__ == "Mapped")
    key = contact["contactid"]
    live.control("DELETE", f"d365/contact/{key}")
    config = yaml.safe_load(live.config.read_text())
    config["environments"]["emulator"]["campaign"].setdefault("limits", {})["max_retries"] = 1  # fail fast
    live.config.write_text(yaml.safe_dump(config))
    live.emulator.adobe_faults.set_profile(FaultProfile(p_503=1.0))  # Campaign answers nothing but 503
    live.run(only=["contacts"], optouts=False)
    letter = open_letters(live, "contacts").get(key)
    assert letter is not None and letter.reason.startswith(TRANSIENT_PREFIX)
    assert any(p.get("externalId") == key for _, p in live.emulator.adobe.store.rows_where("profile"))

    live.emulator.adobe_faults.set_profile("none")
    report = live.run(only=["contacts"], optouts=False)
    assert counts(report, "contacts")["deleted"] == 1
    assert key not in open_letters(live, "contacts")
    assert not any(p.get("externalId") == key for _, p in live.emulator.adobe.store.rows_where("profile"))
