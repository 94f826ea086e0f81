"""A lookup that fails is not "not found": a create whose outcome a crash left unknown stays pending, and the
record is not created again, until a lookup of its key answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mapsync.engine.demo import verify
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live, counts
from tests.e2e.gateway import Gateway, is_lookup
from tests.e2e.holdings import duplicates


def pending(live: Live) -> list[str]:
    with open_store(live.job().env.state_url) as store:
        return sorted(p.source_key for p in store.pending_writes("contacts"))


def test_failed_lookups_after_a_crash_keep_the_creates_pending_and_make_no_duplicate(live: Live) -> None:
    live.run()
    new = []
    for n in range(3):
        row = live.control("POST", "d365/contact", {"firstname": "New", "lastname": f"Contact{n}",
                                                     "emailaddress1": f"lookup{n}@example.com",
                                                     "statecode": 0, "statuscode": 1})
        new.append(row["contactid"])  # type: ignore[index]
    # Killed after Campaign acknowledged the three creates, before the state store recorded them.
    crashed = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                              "emulator"], cwd=live.config.parent, capture_output=True, timeout=300,
                             env={**os.environ, "MAPSYNC_FAILPOINT": "after-write:1"})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert pending(live) == sorted(new)
    assert duplicates(live.emulator) == {}

    # Campaign answers everything but lookups by key: nothing may be created while none answers.
    gateway = Gateway(live.emulator.app)
    gateway.fail = is_lookup
    report = live.run(transport=gateway.transport())
    assert gateway.failed > 0
    assert duplicates(live.emulator) == {}
    c = counts(report, "contacts")
    assert (c["created"], c["failed"]) == (0, 3)
    assert pending(live) == sorted(new)
    with open_store(live.job().env.state_url) as store:
        letters = store.open_dead_letters("contacts")
    assert sorted(d.source_key for d in letters) == sorted(new)
    assert all(d.reason.startswith("transient: not created: the lookup of externalId") for d in letters)

    # Lookups answer again: the three are adopted, the dead letters close, nothing is left pending.
    gateway.fail = None
    healed = live.run(transport=gateway.transport())
    assert counts(healed, "contacts")["created"] == 0
    assert pending(live) == [] and duplicates(live.emulator) == {}
    with open_store(live.job().env.state_url) as store:
        assert store.open_dead_letters("contacts") == []
    assert verify(live.job(), live.emulator) == []


def test_a_create_that_failed_transiently_stays_pending_for_the_next_run(live: Live) -> None:
    """The service failed the create and the lookup after it: the create may have happened (its reply may be what
    was lost), so the next run looks it up before anything else."""
    live.run()
    row = live.control("POST", "d365/contact", {"firstname": "Flaky", "lastname": "Create",
                                                 "emailaddress1": "flaky@example.com", "statecode": 0, "statuscode": 1})
    key = row["contactid"]  # type: ignore[index]
    gateway = Gateway(live.emulator.app)
    gateway.fail = lambda method, path, query: is_lookup(method, path, query) or (
        method == "POST" and path.endswith("/profileAndServicesExt/profile"))
    report = live.run(transport=gateway.transport())
    assert counts(report, "contacts")["failed"] == 1
    assert pending(live) == [key]
    gateway.fail = None
    healed = live.run(transport=gateway.transport())
    assert counts(healed, "contacts")["created"] == 1  # looked up (not there), then created once
    assert pending(live) == [] and duplicates(live.emulator) == {}
    assert verify(live.job(), live.emulator) == []
