"""The emulator serves a project's own snapshots, picks up new and changed ones without a restart, and fills
any Dataverse table with rows that respect its snapshot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl.schema import DEFAULT_ROOT
from mapsync.emulators.generate import generate_rows
from mapsync.emulators.server import Emulator
from tests.paths import ROOT

MEMBERSHIP = ROOT / "tests" / "fixtures" / "membership" / "schemas" / "snapshots"


@pytest.fixture
def snapshots(tmp_path: Path) -> Path:
    root = tmp_path / "snapshots"
    shutil.copytree(DEFAULT_ROOT, root)
    return root


def test_new_snapshots_are_served_after_a_reload_and_existing_rows_stay(snapshots: Path) -> None:
    emulator = Emulator(seed=1, contacts=20, snapshots=snapshots)
    contacts = emulator.dataverse.store.count("contact")
    shutil.copytree(MEMBERSHIP, snapshots, dirs_exist_ok=True)
    assert emulator.reload() == {"d365": {"added": ["new_membership"], "changed": []},
                                 "campaign": {"added": ["cusMembership"], "changed": []}}
    assert emulator.dataverse.store.count("new_membership") == 0
    assert emulator.adobe.store.count("cusMembership") == 0
    assert emulator.dataverse.store.count("contact") == contacts


def test_a_changed_table_keeps_its_rows_and_gains_the_new_column(snapshots: Path) -> None:
    emulator = Emulator(seed=1, contacts=20, snapshots=snapshots)
    store = emulator.dataverse.store
    before = {r["contactid"]: r for r in store.rows_page("contact", 0, 100)}
    path = snapshots / "d365" / "contact.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["fields"]["new_loyaltytier"] = {"type": "string", "display_name": "Loyalty tier", "max_length": 20}
    path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    assert emulator.reload()["d365"] == {"added": [], "changed": ["contact"]}
    after = {r["contactid"]: r for r in store.rows_page("contact", 0, 100)}
    assert set(after) == set(before)
    for key, row in after.items():
        assert row.pop("new_loyaltytier") is None
        assert row == before[key]
    changed = store.modify("contact", next(iter(after)), {"new_loyaltytier": "gold"})
    assert "gold" in changed


def test_a_snapshot_saved_half_edited_keeps_the_old_definitions(snapshots: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    emulator = Emulator(seed=1, contacts=5, snapshots=snapshots)
    emulator._watch.interval = 0
    (snapshots / "d365" / "new_membership.json").write_text("{ not json", encoding="utf-8")
    assert emulator.reload_if_changed() is False
    assert "snapshots not reloaded" in caplog.text and "new_membership.json" in caplog.text
    assert "new_membership" not in emulator.dataverse.store.tables
    shutil.copy(MEMBERSHIP / "d365" / "new_membership.json", snapshots / "d365" / "new_membership.json")
    assert emulator.reload_if_changed() is True
    assert "new_membership" in emulator.dataverse.store.tables


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32), count=st.integers(0, 60))
def test_generated_rows_respect_the_snapshot(seed: int, count: int) -> None:
    emulator = _vehicles_emulator()
    table = emulator.dataverse.store.tables["new_vehicle"]
    contacts = emulator.dataverse.store.ids("contact", limit=50)
    for row in generate_rows(table, count, seed=seed, lookup_ids={"contact": contacts}):
        for col in table.columns:
            value = row.get(col.wire_name)
            if value is None:
                assert not col.required or col.name == table.primary_key, col.name
                continue
            if col.type in ("string", "memo") and col.max_length:
                assert len(value) <= col.max_length, (col.name, value)
            if col.type == "choice":
                assert value in {v for v, _ in col.options}, (col.name, value)
            if col.type == "integer":
                assert (col.minimum or -2**31) <= value <= (col.maximum or 2**31), (col.name, value)
            if col.type == "lookup":
                assert value in contacts
        assert row["statecode"] == 0 and row["statuscode"] == 1


_CACHED: list[Emulator] = []


def _vehicles_emulator() -> Emulator:
    if not _CACHED:
        _CACHED.append(Emulator(seed=2, contacts=30))
    return _CACHED[0]


def test_generated_rows_are_stored_and_their_lookups_resolve() -> None:
    emulator = Emulator(seed=3, contacts=30)
    store = emulator.dataverse.store
    vehicles = store.count("new_vehicle")
    assert emulator.dataverse.generate("new_vehicle", 25, seed=9) == 25
    assert store.count("new_vehicle") == vehicles + 25
    contacts = set(store.ids("contact", limit=1000))
    made = store.rows_page("new_vehicle", vehicles, 25)
    assert all(r["_new_contactid_value"] in contacts for r in made if r["_new_contactid_value"] is not None)
    again = Emulator(seed=3, contacts=30)
    again.dataverse.generate("new_vehicle", 25, seed=9)
    # The same seed, the same rows; createdon/modifiedon are the clock's, and a busy machine may cross a second.
    assert _unstamped(again.dataverse.store.rows_page("new_vehicle", vehicles, 25)) == _unstamped(made)


def _unstamped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("createdon", "modifiedon")} for r in rows]


@pytest.mark.parametrize(("rows", "message"), [
    ("new_nothing=5", "--rows new_nothing=5: no such Dataverse table"),
    ("new_vehicle", "--rows new_vehicle: expected TABLE=N"),
    ("new_vehicle=-1", "expected TABLE=N"),
])
def test_emulate_rows_refuses_what_it_cannot_make(tmp_path: Path, rows: str, message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "mapsync", "emulate", "--contacts", "1", "--port", "1",
                           "--rows", rows], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
