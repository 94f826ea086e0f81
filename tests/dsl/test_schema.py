"""Schema snapshots and their loader: the shipped files are valid, real, canonical; bad files fail clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl.errors import MapsyncError
from mapsync.dsl.schema import (
    DEFAULT_ROOT,
    SNAPSHOT_SCHEMA_PATH,
    Catalog,
    SchemaError,
    dump_table,
    load_catalog,
    load_table,
    parse_table,
    render_table,
    write_table,
)
from mapsync.dsl.types import ValueType

SNAPSHOT_FILES = sorted(DEFAULT_ROOT.glob("*/*.json"))
EXPECTED = {
    ("d365", "contact"), ("d365", "account"), ("d365", "new_vehicle"), ("d365", "acs_emailsend"),
    ("d365", "acs_emailopen"), ("d365", "acs_emailclick"), ("d365", "acs_emailbounce"),
    ("campaign", "profile"), ("campaign", "cusVehicle"), ("campaign", "events.send"),
    ("campaign", "events.open"), ("campaign", "events.click"), ("campaign", "events.bounce"),
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# ------------------------------------------------------------------------------------- the shipped files


@pytest.mark.parametrize("path", SNAPSHOT_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_snapshot_validates_against_the_json_schema(path: Path) -> None:
    schema = json.loads(SNAPSHOT_SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(path.read_text()), schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("path", SNAPSHOT_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_snapshot_files_are_canonical_so_schema_pull_reproduces_them(path: Path) -> None:
    assert render_table(load_table(path)) == path.read_text(encoding="utf-8")


def test_catalog_holds_every_expected_table(catalog: Catalog) -> None:
    assert set(catalog.by_key) == EXPECTED
    assert [t.name for t in catalog.tables("campaign")][:2] == ["cusVehicle", "events.bounce"]
    assert catalog.systems() == ("campaign", "d365")


def test_contact_uses_dataverse_names_types_lengths_and_options(catalog: Catalog) -> None:
    contact = catalog.table("d365", "contact")
    assert contact is not None
    assert len(contact.fields) >= 40
    assert (contact.entity_set, contact.primary_key, contact.primary_name) == ("contacts", "contactid", "fullname")
    assert contact.change_tracking
    lengths = {n: contact.fields[n].max_length for n in ("emailaddress1", "firstname", "lastname", "fullname",
                                                          "jobtitle", "telephone1", "mobilephone", "address1_city")}
    assert lengths == {"emailaddress1": 100, "firstname": 50, "lastname": 50, "fullname": 160, "jobtitle": 100,
                       "telephone1": 50, "mobilephone": 50, "address1_city": 80}
    gender = contact.fields["gendercode"]
    assert gender.value_type is ValueType.CHOICE
    assert gender.label_for(1) == "Male" and gender.label_for(2) == "Female" and gender.label_for(3) is None
    method = contact.fields["preferredcontactmethodcode"]
    assert method.options == ((1, "Any"), (2, "Email"), (3, "Phone"), (4, "Fax"), (5, "Mail"))
    assert contact.fields["statecode"].options == ((0, "Active"), (1, "Inactive"))
    assert contact.fields["statuscode"].options == ((1, "Active"), (2, "Inactive"))
    assert contact.fields["birthdate"].value_type is ValueType.DATE
    assert contact.fields["modifiedon"].value_type is ValueType.DATETIME and contact.fields["modifiedon"].read_only
    assert contact.fields["versionnumber"].type == "bigint" and contact.fields["versionnumber"].read_only
    assert contact.fields["parentcustomerid"].targets == ("account", "contact")
    for flag in ("donotbulkemail", "donotemail", "donotphone", "donotpostalmail", "donotfax"):
        assert contact.fields[flag].value_type is ValueType.BOOLEAN


def test_custom_and_activity_tables(catalog: Catalog) -> None:
    vehicle = catalog.table("d365", "new_vehicle")
    assert vehicle is not None and vehicle.entity_set == "new_vehicles" and vehicle.change_tracking
    assert vehicle.fields["new_vin"].max_length == 17
    assert vehicle.fields["new_contactid"].targets == ("contact",)
    for kind in ("send", "open", "click", "bounce"):
        table = catalog.table("d365", f"acs_email{kind}")
        assert table is not None and table.is_activity and table.entity_set == f"acs_email{kind}s"
        assert table.alternate_keys == {"acs_eventid_key": ("acs_eventid",)}
        assert table.fields["regardingobjectid"].targets == ("contact",)
    assert "acs_trackingurl" in catalog.table("d365", "acs_emailclick").fields  # type: ignore[union-attr]
    assert "acs_bouncereason" in catalog.table("d365", "acs_emailbounce").fields  # type: ignore[union-attr]


def test_campaign_profile_and_custom_resource(catalog: Catalog) -> None:
    profile = catalog.table("campaign", "profile")
    assert profile is not None
    assert (profile.path, profile.ext_path, profile.primary_key) == (
        "profileAndServices/profile", "profileAndServicesExt/profile", "PKey")
    assert profile.fields["email"].max_length == 128 and profile.fields["firstName"].max_length == 30
    assert profile.fields["gender"].values == ("male", "female", "unknown", "notApplicable")
    assert profile.filters["byEmail"] == ("email",)
    city = profile.resolve(("location", "city"))
    assert city is not None and city.value_type is ValueType.TEXT
    assert profile.resolve(("location", "nope")) is None and profile.resolve(("email", "x")) is None
    for name in ("cusFullName", "cusAccount", "cusSource", "cusContactBy", "cusJobTitle", "ccpaOptOut"):
        assert name in profile.fields
    vehicle = catalog.table("campaign", "cusVehicle")
    assert vehicle is not None and vehicle.fields["cusProfile"].value_type is ValueType.REFERENCE
    assert vehicle.fields["cusProfile"].targets == ("profile",)


def test_event_feeds_carry_the_assumed_payload(catalog: Catalog) -> None:
    click = catalog.table("campaign", "events.click")
    assert click is not None and click.feed == "click" and click.primary_key == "id"
    assert "assumed" in (click.display_name or "")
    assert click.resolve(("profile", "externalId")) is not None
    assert click.resolve(("delivery", "campaignName")) is not None
    assert click.fields["url"].value_type is ValueType.TEXT
    bounce = catalog.table("campaign", "events.bounce")
    assert bounce is not None
    assert bounce.resolve(("bounce", "type")).values == ("hard", "soft")  # type: ignore[union-attr]


def test_suggestions_for_misspelt_names(catalog: Catalog) -> None:
    contact = catalog.table("d365", "contact")
    assert contact is not None
    assert contact.suggest("emailadress1")[0] == "emailaddress1"
    assert catalog.suggest("d365", "contcat") == ["contact"]


# ------------------------------------------------------------------------------------- catalog behaviour


def test_load_catalog_is_cached_per_root(tmp_path: Path) -> None:
    assert load_catalog() is load_catalog(DEFAULT_ROOT)
    shutil.copytree(DEFAULT_ROOT, tmp_path / "snap")
    other = load_catalog(tmp_path / "snap")
    assert other is not load_catalog() and other.by_key == load_catalog().by_key


def test_from_tables_and_replace(catalog: Catalog) -> None:
    contact = catalog.table("d365", "contact")
    assert contact is not None
    fields = {"contactid": {"type": "guid"}, "fullname": {"type": "string"}}
    live = parse_table({**dump_table(contact), "fields": fields})
    only = Catalog.from_tables([live])
    assert len(only) == 1 and only.table("d365", "contact") == live
    merged = catalog.replace([live])
    assert merged.table("d365", "contact") == live and len(merged) == len(catalog)
    assert catalog.table("d365", "contact") == contact  # the original is untouched


def test_write_table_round_trips(tmp_path: Path, catalog: Catalog) -> None:
    for table in catalog.by_key.values():
        path = write_table(table, tmp_path)
        assert load_table(path) == table
    assert load_catalog(tmp_path).by_key == catalog.by_key


# ------------------------------------------------------------------------------------- invalid files


def _write(root: Path, system: str, name: str, content: str) -> Path:
    path = root / system / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def _doc(**overrides: object) -> dict[str, object]:
    doc: dict[str, object] = {"system": "d365", "name": "thing", "primary_key": "thingid",
                              "fields": {"thingid": {"type": "guid"}, "name": {"type": "string", "max_length": 10}}}
    doc.update(overrides)
    return doc


@pytest.mark.parametrize(
    ("doc", "json_path", "words"),
    [
        (_doc(fields={"thingid": {"type": "guid"}, "x": {"type": "strin"}}), "$.fields.x.type", "is not one of"),
        (_doc(fields={"thingid": {"type": "guid"}, "x": {"type": "choice"}}), "$.fields.x", "'options' is a required"),
        (_doc(fields={"thingid": {"type": "string", "max_length": 0}}), "$.fields.thingid.max_length", "minimum"),
        (_doc(primary_key="nope"), "$.primary_key", "not a field"),
        (_doc(alternate_keys={"k": ["missing"]}), "$.alternate_keys.k", "not a field"),
        (_doc(extra=1), "$", "Additional properties"),
        (_doc(fields={"thingid": {"type": "guid"}, "c": {"type": "choice", "options": [
            {"value": 1, "label": "A"}, {"value": 1, "label": "B"}]}}), "$.fields.c.options", "not unique"),
    ],
    ids=["bad-type", "choice-without-options", "zero-length", "unknown-pk", "unknown-alt-key", "extra-key", "dup-opt"],
)
def test_invalid_snapshot_names_file_and_json_path(tmp_path: Path, doc: dict, json_path: str, words: str) -> None:
    path = _write(tmp_path, "d365", "thing", json.dumps(doc))
    with pytest.raises(SchemaError) as info:
        load_catalog(tmp_path)
    err = info.value
    assert isinstance(err, MapsyncError)
    assert err.file == str(path) and err.json_path == json_path
    assert words in str(err) and str(path) in str(err)


def test_broken_json_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "d365", "thing", '{"system": "d365",\n  "name": }')
    with pytest.raises(SchemaError, match=r"not valid JSON.*line 2") as info:
        load_table(path)
    assert info.value.file == str(path)


def test_file_name_must_match_content(tmp_path: Path) -> None:
    path = _write(tmp_path, "campaign", "thing", json.dumps(_doc()))
    with pytest.raises(SchemaError, match=r"must be d365/thing\.json"):
        load_table(path)


def test_missing_folder_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="does not exist"):
        load_catalog(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------- property: round trip

_names = st.from_regex(r"[a-z][a-zA-Z0-9_]{0,12}", fullmatch=True)
_labels = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def _field(draw: st.DrawFn, depth: int = 0) -> dict:
    kinds = ["string", "memo", "integer", "money", "boolean", "datetime", "date", "guid", "choice", "enum", "lookup"]
    if depth == 0:
        kinds.append("object")
    kind = draw(st.sampled_from(kinds))
    out: dict = {"type": kind}
    if draw(st.booleans()):
        out["display_name"] = draw(_labels)
    if kind in ("string", "memo") and draw(st.booleans()):
        out["max_length"] = draw(st.integers(1, 4000))
    if draw(st.booleans()):
        out["read_only"] = True
    if kind == "money" and draw(st.booleans()):
        out["min"], out["max"], out["precision"] = 0, draw(st.integers(1, 10**12)), 2
    if kind == "choice":
        values = draw(st.lists(st.integers(-5, 10**9), min_size=1, max_size=4, unique=True))
        out["options"] = [{"value": v, "label": draw(_labels)} for v in values]
    if kind == "enum":
        out["values"] = draw(st.lists(_labels, min_size=1, max_size=3))
    if kind == "lookup":
        out["targets"] = draw(st.lists(_names, min_size=1, max_size=2))
    if kind == "object":
        out["fields"] = draw(st.dictionaries(_names, _field(depth + 1), min_size=1, max_size=3))
    return out


@st.composite
def _table(draw: st.DrawFn) -> dict:
    fields = draw(st.dictionaries(_names, _field(), min_size=1, max_size=6))
    doc: dict = {"system": draw(st.sampled_from(["d365", "campaign"])), "name": draw(_names),
                 "primary_key": next(iter(fields))}
    if draw(st.booleans()):
        doc["change_tracking"] = True
    if draw(st.booleans()):
        doc["filters"] = {"by" + draw(_names): [draw(_names)]}
    doc["fields"] = fields
    return doc


@settings(max_examples=150)
@given(_table())
def test_any_valid_document_round_trips_through_dump_and_render(doc: dict) -> None:
    table = parse_table(doc)
    assert dump_table(table) == doc
    assert json.loads(render_table(table)) == doc
    assert parse_table(json.loads(render_table(table))) == table


# ------------------------------------------------------------------------------------- logical value types


def test_every_snapshot_type_has_a_logical_type() -> None:
    from mapsync.dsl.types import SNAPSHOT_TYPES

    schema = json.loads(SNAPSHOT_SCHEMA_PATH.read_text())
    assert set(schema["$defs"]["field"]["properties"]["type"]["enum"]) == set(SNAPSHOT_TYPES)


def test_assignable_and_comparable() -> None:
    from mapsync.dsl.types import assignable, comparable

    v = ValueType
    assert assignable(v.GUID, v.TEXT) and not assignable(v.TEXT, v.GUID)
    assert assignable(v.CHOICE, v.NUMBER) and assignable(v.NUMBER, v.CHOICE)
    assert not assignable(v.NUMBER, v.TEXT) and not assignable(v.BOOLEAN, v.TEXT)
    assert assignable(v.DATE, v.DATETIME) and not assignable(v.DATETIME, v.DATE)
    assert assignable(v.NULL, v.RECORD) and assignable(v.ANY, v.DATE) and assignable(v.TEXT, v.ANY)
    assert assignable(v.REFERENCE, v.REFERENCE) and assignable(v.GUID, v.REFERENCE)
    assert not assignable(v.LIST, v.TEXT) and not assignable(v.DURATION, v.NUMBER)
    assert comparable(v.CHOICE, v.NUMBER) and comparable(v.GUID, v.TEXT) and comparable(v.DATE, v.DATETIME)
    assert comparable(v.NULL, v.BOOLEAN) and comparable(v.ANY, v.LIST)
    assert not comparable(v.NUMBER, v.TEXT) and not comparable(v.BOOLEAN, v.NUMBER)


def test_common_type_and_arithmetic() -> None:
    from mapsync.dsl.types import arithmetic, common_type

    v = ValueType
    assert common_type(v.NULL, v.TEXT) is v.TEXT and common_type(v.CHOICE, v.NUMBER) is v.NUMBER
    assert common_type(v.DATE, v.DATETIME) is v.DATETIME and common_type(v.TEXT, v.NUMBER) is v.ANY
    assert arithmetic("+", v.NUMBER, v.CHOICE) is v.NUMBER
    assert arithmetic("+", v.DATE, v.DURATION) is v.DATE and arithmetic("-", v.DATETIME, v.DATETIME) is v.DURATION
    assert arithmetic("+", v.TEXT, v.TEXT) is None and arithmetic("*", v.DATE, v.NUMBER) is None
    assert arithmetic("-", v.NULL, v.NUMBER) is v.ANY


def test_type_of_runtime_values() -> None:
    import datetime as dt
    from decimal import Decimal

    from mapsync.dsl.types import type_of

    cases = {None: ValueType.NULL, True: ValueType.BOOLEAN, 3: ValueType.NUMBER, Decimal("1.5"): ValueType.NUMBER,
             "x": ValueType.TEXT, dt.date(2024, 1, 1): ValueType.DATE,
             dt.datetime(2024, 1, 1): ValueType.DATETIME, dt.timedelta(1): ValueType.DURATION}
    for value, expected in cases.items():
        assert type_of(value) is expected
    assert type_of([1]) is ValueType.LIST and type_of({"a": 1}) is ValueType.RECORD and type_of(object()) is ValueType.ANY
