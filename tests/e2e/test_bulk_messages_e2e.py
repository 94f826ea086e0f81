"""Email events onto the Dynamics 365 timeline through the bulk messages, end to end: `mapsync run` against the
emulators served over TLS. A run killed after the bulk write landed but before the state store recorded it
leaves no duplicate; rows the service refuses are dead letters with its reason while the rest is written; a
table without the message is written through `$batch` as before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from mapsync.emulators.dataverse.app import DataverseApi
from mapsync.engine.demo import verify
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live, counts

DELIVERIES = 3  # about 300 sends to the fixture's contacts: enough for a bulk request


@pytest.fixture
def bulk_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Bulk requests the emulator served, by message (it runs in this process; `mapsync run` in another)."""
    calls: Counter[str] = Counter()
    served = DataverseApi._bulk

    def counting(self: DataverseApi, table: Any, message: str, body: bytes, api: str) -> Any:
        calls[message] += 1
        return served(self, table, message, body, api)

    monkeypatch.setattr(DataverseApi, "_bulk", counting)
    return calls


def _events(live: Live) -> None:
    live.run(only=["contacts"])  # profiles carry the contacts' ids, so their events have a contact
    for n in range(DELIVERIES):
        live.control("POST", "campaign/deliveries", {"label": f"Bulk {n}", "campaign": "Bulk"})


def _mapsync_run(live: Live, *flow: str, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"MAPSYNC_FAILPOINT": failpoint} if failpoint else {})}
    return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                           "emulator", *flow], cwd=live.config.parent, env=env, capture_output=True, text=True,
                          timeout=300)


def _sends(live: Live) -> list[str]:
    return [r["acs_eventid"] for r in live.emulator.dataverse.store.rows("acs_emailsend")]


def test_a_run_killed_between_bulk_write_and_acknowledge_duplicates_nothing(live: Live, bulk_calls: Counter[str]) -> None:
    _events(live)
    killed = _mapsync_run(live, "--flow", "email_sends", failpoint="after-write:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    landed = len(_sends(live))
    assert bulk_calls["CreateMultiple"] >= 1 and landed >= 100  # the bulk write landed, unrecorded
    final = _mapsync_run(live)
    assert final.returncode in (0, 1), final.stderr  # 1: dead letters of records the seed makes invalid
    sends = _sends(live)
    assert len(sends) == len(set(sends)) >= landed  # the rows of the killed run adopted, none made again
    assert verify(live.job(), live.emulator) == []


def test_rows_the_service_refuses_are_dead_letters_and_the_rest_is_written(live: Live, bulk_calls: Counter[str]) -> None:
    _events(live)
    journal = live.emulator.adobe.journal
    events = [e.get("event", e) for e in journal.events(offset=0, limit=len(journal) + 1)]
    sends = [e["id"] for e in events if e["type"] == "send" and (e.get("profile") or {}).get("externalId")]
    refused = [sends[5], sends[77], sends[150]]
    live.control("PUT", "setup", {"reject_rows": {"acs_emailsend": refused}})
    report = live.run()
    c = counts(report, "email_sends")
    assert c["failed"] == 3 and c["created"] == len(sends) - 3
    assert sorted(_sends(live)) == sorted(set(sends) - set(refused))
    assert bulk_calls["CreateMultiple"] > 1  # the request with the refused rows was split
    job = live.job()
    with open_store(job.env.state_url, password=job.env.state_password) as store:
        dead = {d.source_key: d.reason for d in store.open_dead_letters("email_sends")}
    assert sorted(dead) == sorted(refused)
    assert all("0x80040265" in reason and "refused" in reason for reason in dead.values())


def test_without_the_bulk_message_events_go_through_batch(live: Live, bulk_calls: Counter[str]) -> None:
    live.control("PUT", "setup", {"messages": {"remove": [f"{t}:CreateMultiple" for t in
                                                          ("acs_emailsend", "acs_emailopen", "acs_emailclick",
                                                           "acs_emailbounce")]}})
    _events(live)
    report = live.run()
    assert counts(report, "email_sends")["created"] >= 100
    assert bulk_calls["CreateMultiple"] == 0
    assert verify(live.job(), live.emulator) == []


def _plan_path(live: Live) -> str:
    done = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "plan", "--env",
                           "emulator", "--flow", "email_sends"], cwd=live.config.parent, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})  # one line a finding
    assert done.returncode == 0, done.stderr
    [line] = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith("path:")]
    return line


def test_plan_names_the_write_path_of_an_event_flow_and_both_costs(live: Live, bulk_calls: Counter[str]) -> None:
    _events(live)
    line = _plan_path(live)
    assert line.startswith("path: bulk messages (CreateMultiple: acs_emailsend lists it in sdkmessagefilters")
    assert "request(s), against" in line and "through $batch" in line
    assert sum(bulk_calls.values()) == 0  # plan writes nothing
    live.control("PUT", "setup", {"messages": {"remove": ["acs_emailsend:CreateMultiple"]}})
    assert _plan_path(live).startswith("path: $batch (acs_emailsend does not list CreateMultiple in sdkmessagefilters)")
