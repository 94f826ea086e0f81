"""Seeded data: deterministic by seed, row i independent of the others, and as messy as a real CRM."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.emulators.seed import SeedData, account_id, contact_id

SNAPSHOTS = Path(__file__).resolve().parents[2] / "schemas" / "snapshots" / "d365"


@settings(max_examples=150)
@given(seed=st.integers(0, 2**31), i=st.integers(0, 999))
def test_row_i_depends_only_on_seed_and_i(seed: int, i: int) -> None:
    small, big = SeedData(seed, 1000), SeedData(seed, 1000)
    assert small.contact(i) == big.contact(i)
    assert small.contact(i)["contactid"] == contact_id(seed, i)
    assert SeedData(seed + 1, 1000).contact(i)["contactid"] != contact_id(seed, i)


def test_whole_data_set_is_deterministic() -> None:
    a, b = SeedData(9, 300), SeedData(9, 300)
    assert list(a.iter_contacts()) == list(b.iter_contacts())
    assert list(a.iter_accounts()) == list(b.iter_accounts())
    assert list(a.iter_vehicles()) == list(b.iter_vehicles())
    assert list(a.iter_profiles()) == list(b.iter_profiles())
    assert list(SeedData(10, 300).iter_contacts()) != list(a.iter_contacts())


def test_contacts_have_the_mess_real_crms_have() -> None:
    data = SeedData(1, 2000)
    contacts = list(data.iter_contacts())
    firsts = [c["firstname"] for c in contacts]
    emails = [c["emailaddress1"] for c in contacts]
    text = json.dumps(contacts, ensure_ascii=False)
    for script in ("é", "ü", "ñ", "И", "Γ", "山", "م"):  # accents, Cyrillic, Greek, CJK, Arabic
        assert script in text, script
    assert None in firsts and "" in firsts
    assert any(f and len(f) > 30 for f in firsts)
    assert None in emails and "" in emails
    real = [e.lower() for e in emails if e and "@" in e]
    assert len(real) != len(set(real))  # duplicates, sometimes in other case
    assert any(e and e != e.lower() for e in emails)
    assert any(e and (e.count("@") != 1 or " " in e or e.endswith("@")) for e in emails)
    assert {c["statecode"] for c in contacts} == {0, 1} and {c["statuscode"] for c in contacts} == {1, 2}
    accounts = {account_id(1, j) for j in range(data.accounts)}
    parents = [c["parentcustomerid"] for c in contacts]
    assert None in parents and all(p in accounts for p in parents if p)


def test_every_option_set_value_of_the_snapshot_appears() -> None:
    data = SeedData(2, 2000)
    for table, rows in (("contact", list(data.iter_contacts())), ("account", list(data.iter_accounts())),
                        ("new_vehicle", list(data.iter_vehicles()))):
        snapshot = json.loads((SNAPSHOTS / f"{table}.json").read_text())
        for name, spec in snapshot["fields"].items():
            if spec["type"] == "choice":
                wanted = {o["value"] for o in spec["options"]}
                assert wanted <= {r.get(name) for r in rows}, (table, name)


def test_vehicles_point_at_contacts_and_profiles_share_some_emails() -> None:
    data = SeedData(4, 1000)
    contact_ids = {contact_id(4, i) for i in range(data.contacts)}
    owners = [v["new_contactid"] for v in data.iter_vehicles()]
    assert None in owners and all(o in contact_ids for o in owners if o)
    contact_emails = {(c["emailaddress1"] or "").lower() for c in data.iter_contacts()}
    profiles = list(data.iter_profiles())
    assert all("externalId" not in p for p in profiles)
    shared = [p for p in profiles if p["email"] and p["email"].lower() in contact_emails]
    assert 0 < len(shared) < len(profiles)
    assert all(len(p["firstName"]) <= 30 for p in profiles)
