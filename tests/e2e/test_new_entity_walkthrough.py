"""docs/extending.md as a consultant follows it: a new Dynamics 365 custom table (new_membership: a tier option
set, a start date, a lookup to contact) becomes a Campaign custom resource (cusMembership) linked to the
profile — snapshots by hand, the mapping, its tests, rows generated in the running emulator (which picks the
new snapshots up without a restart), a run, and every record checked in Campaign."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mapsync.emulators.server import Emulator, start_in_thread, write_config
from tests.paths import ROOT

MEMBERSHIP = ROOT / "tests" / "fixtures" / "membership"
TIERS = {100000000: "Bronze", 100000001: "Silver", 100000002: "Gold"}


def mapsync(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mapsync", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}, timeout=300)


def control(base_url: str, ca_file: Path, method: str, path: str, body: Any = None) -> Any:
    with httpx.Client(base_url=base_url, verify=ssl.create_default_context(cafile=str(ca_file)), timeout=60) as c:
        resp = c.request(method, f"/_emulator/{path}", json=body)
        assert resp.status_code < 300, resp.text
        return resp.json() if resp.content else None


def rows(base_url: str, ca_file: Path, kind: str, name: str) -> list[dict[str, Any]]:
    out, offset = [], 0
    while True:
        page = control(base_url, ca_file, "GET", f"state/{kind}/{name}?offset={offset}&limit=1000")
        items = page["rows"] if isinstance(page, dict) else page
        out += items
        if len(items) < 1000:
            return out
        offset += 1000


@pytest.mark.slow
def test_a_new_custom_table_to_a_custom_resource_from_the_docs_alone(tmp_path: Path) -> None:
    project = tmp_path / "contoso"
    assert mapsync(tmp_path, "init", "contoso").returncode == 0
    snapshots = project / "schemas" / "snapshots"

    # The emulator serves the project's snapshots and is already running when the consultant adds new ones.
    emulator = Emulator(seed=11, contacts=60, snapshots=snapshots)
    served = start_in_thread(emulator)
    try:
        write_config(project / "emulator.yaml", base_url=served.base_url, ca_file=served.ca_file,
                     state="sqlite:///.mapsync/emulator.sqlite", mappings="mappings")
        before = control(served.base_url, served.ca_file, "GET", "state")
        assert "new_membership" not in before["d365"] and "cusMembership" not in before["campaign"]

        # 1. The snapshots, written by hand in the documented format; 2. the mapping and its cases.
        shutil.copytree(MEMBERSHIP / "schemas", project / "schemas", dirs_exist_ok=True)
        shutil.copytree(MEMBERSHIP / "mappings", project / "mappings", dirs_exist_ok=True)
        validated = mapsync(project, "validate")
        assert validated.returncode == 0 and "0 errors" in validated.stdout, validated.stdout + validated.stderr
        tested = mapsync(project, "test", "mappings/memberships.test.yaml")
        assert tested.returncode == 0 and "3 passed, 0 failed" in tested.stdout, tested.stdout + tested.stderr

        # 3. Rows in the running emulator: it notices the new snapshot files by itself (no restart).
        time.sleep(1.1)  # the emulator looks at the snapshot files at most once a second
        made = control(served.base_url, served.ca_file, "POST", "generate", {"table": "new_membership", "rows": 40})
        assert made == {"table": "new_membership", "created": 40}
        state = control(served.base_url, served.ca_file, "GET", "state")
        assert state["d365"]["new_membership"] == 40 and state["campaign"]["cusMembership"] == 0

        # 4. A run against the emulator.
        run = mapsync(project, "--config", "emulator.yaml", "run", "--env", "emulator")
        assert "Traceback" not in run.stderr, run.stderr
        memberships = rows(served.base_url, served.ca_file, "d365", "new_membership")
        contacts = {c["contactid"]: c for c in rows(served.base_url, served.ca_file, "d365", "contact")}
        profiles = {p["externalId"]: p for p in rows(served.base_url, served.ca_file, "campaign", "profile")
                    if p.get("externalId")}
        in_campaign = {r["cusExternalId"]: r for r in rows(served.base_url, served.ca_file, "campaign", "cusMembership")}

        # 5. Record by record: every membership whose member became a profile is in Campaign, linked to that
        # profile, with the tier's label and the start date; no other record is there.
        expected = {m["new_membershipid"]: m for m in memberships
                    if m.get("_new_contactid_value") in profiles and m.get("new_tier") is not None}
        assert expected, "the generated memberships should point at synced contacts"
        assert set(in_campaign) == set(expected)
        for key, membership in expected.items():
            record = in_campaign[key]
            assert record["cusTier"] == TIERS[membership["new_tier"]]
            assert record.get("cusStartDate") == membership.get("new_startdate")
            owner = profiles[membership["_new_contactid_value"]]
            assert record["cusProfile"]["PKey"] == owner["PKey"], (record, owner)
            assert contacts[membership["_new_contactid_value"]]["statecode"] == 0
    finally:
        served.stop()
