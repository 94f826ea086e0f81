"""The compiler: golden output, and the language's runtime semantics through compiled flows.

Golden files: tests/fixtures/compile/<case>.map -> <case>.py.expected (every flow's generated module, in
name order). Rewrite them after an intended change with MAPSYNC_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl import runtime as rt
from mapsync.dsl.compiler import CompiledFlow, compile_flow, compile_project
from mapsync.dsl.errors import CompileError, DslError
from mapsync.dsl.functions import FUNCTIONS
from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog
from tests.paths import FIXTURE_MAPPINGS, FIXTURE_SNAPSHOTS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "compile"
CATALOG = load_catalog(FIXTURE_SNAPSHOTS)
CONTACT = CATALOG.table("d365", "contact")
PROFILE = CATALOG.table("campaign", "profile")
assert CONTACT is not None and PROFILE is not None
GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def compile_text(tmp_path: Path, text: str) -> dict[str, CompiledFlow]:
    path = tmp_path / "m.map"
    path.write_text(text, encoding="utf-8")
    project, diagnostics = load_project([path])
    assert not [d for d in diagnostics if d.is_error], diagnostics
    return compile_project(project, CATALOG)


def contacts_flow(tmp_path: Path, map_block: str, where: str = "", extra: str = "") -> CompiledFlow:
    text = (f"flow f {{\n  from d365.contact\n  to campaign.profile\n  key contactid -> externalId\n"
            f"  mode upsert\n{('  where ' + where + chr(10)) if where else ''}  map {{\n{map_block}\n  }}\n}}\n{extra}")
    return compile_text(tmp_path, text)["f"]


# ------------------------------------------------------------------------------------------------ golden


@pytest.mark.parametrize("case", sorted(p.stem for p in FIXTURES.glob("*.map")))
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # generated code names files relative to the working folder
    project, _ = load_project([Path("tests/fixtures/compile") / f"{case}.map"])
    flows = compile_project(project, CATALOG)
    got = "".join(f.python_source + f"# $filter: {f.pushdown}\n# residual: {f.residual_text}\n\n"
                  for _, f in sorted(flows.items()))
    expected_path = FIXTURES / f"{case}.py.expected"
    if os.environ.get("MAPSYNC_UPDATE_GOLDEN") == "1" or not expected_path.exists():
        expected_path.write_text(got, encoding="utf-8")
    assert got == expected_path.read_text(encoding="utf-8")


def test_output_is_deterministic(tmp_path: Path) -> None:
    text = (FIXTURES / "semantics.map").read_text(encoding="utf-8")
    a = compile_text(tmp_path, text)["semantics"].python_source
    b = compile_text(tmp_path, text + "\n# a comment changes the project hash\n")["semantics"].python_source
    assert a == b


def test_compile_project_is_cached_by_content_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.map"
    path.write_text((FIXTURES / "semantics.map").read_text(encoding="utf-8"), encoding="utf-8")
    first = compile_project(load_project([path])[0], CATALOG)
    again = compile_project(load_project([path])[0], CATALOG)
    assert first["semantics"] is again["semantics"]


# ------------------------------------------------------------------------------------------------ semantics


def test_null_propagation_concat_and_coalesce(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, """
    email       = lower(trim(emailaddress1))
    firstName   = truncate(trim(firstname), 30)
    mobilePhone = mobilephone ?? telephone1
    cusFullName = firstname & " " & lastname""")
    out = flow.transform({"contactid": GUID, "firstname": None, "lastname": "Lee", "telephone1": "+33 1"})
    assert isinstance(out, rt.Mapped)
    assert out.payload["email"] is None  # null in, null out
    assert out.payload["firstName"] is None
    assert out.payload["mobilePhone"] == "+33 1"
    assert out.payload["cusFullName"] == " Lee"  # & reads a null as ""
    assert out.key == GUID and out.payload["externalId"] == GUID


def test_required_rejects_with_field_and_line(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, "    email = lower(emailaddress1)  required")
    out = flow.transform({"contactid": GUID})
    assert isinstance(out, rt.Rejected)
    assert (out.field, out.line, out.flow, out.key) == ("email", 7, "f", GUID)
    assert out.file.endswith("m.map")
    assert "m.map:7" in str(out) and "email" in str(out) and GUID in str(out)


def test_keep_omits_a_null_and_once_is_reported(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, """
    cusJobTitle   = jobtitle  keep
    location.city = address1_city  keep
    cusSource     = "dynamics365"  once""")
    out = flow.transform({"contactid": GUID})
    assert isinstance(out, rt.Mapped)
    assert "cusJobTitle" not in out.payload and out.payload["location"] == {}
    assert out.keep == {"cusJobTitle", "location.city"} and out.once == {"cusSource"}
    out = flow.transform({"contactid": GUID, "jobtitle": "Buyer", "address1_city": "Paris"})
    assert out.payload["cusJobTitle"] == "Buyer" and out.payload["location"] == {"city": "Paris"}


def test_replacements_with_and_without_else(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, """
    gender       = g(gendercode)
    cusContactBy = m(preferredcontactmethodcode)""", extra="""
replace g {
  1 => "male"
  else => "unknown"
}
replace m {
  1 => "any"
  2 => "email"
  3 => "phone"
  4 => "fax"
  5 => "mail"
}
""")
    out = flow.transform({"contactid": GUID, "gendercode": 7, "preferredcontactmethodcode": 2})
    assert out.payload["gender"] == "unknown" and out.payload["cusContactBy"] == "email"
    out = flow.transform({"contactid": GUID, "gendercode": None, "preferredcontactmethodcode": None})
    assert out.payload["gender"] is None and out.payload["cusContactBy"] is None  # null is not "unmapped"
    out = flow.transform({"contactid": GUID, "preferredcontactmethodcode": 9})
    assert isinstance(out, rt.Rejected) and out.field == "cusContactBy" and "replace m" in out.reason


def test_length_over_target_rejects_and_enum_values_are_checked(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, """
    email  = emailaddress1
    gender = lower(lastname)""")
    out = flow.transform({"contactid": GUID, "emailaddress1": "a" * 129})
    assert isinstance(out, rt.Rejected) and out.field == "email" and "128" in out.reason
    out = flow.transform({"contactid": GUID, "lastname": "Robot"})
    assert isinstance(out, rt.Rejected) and out.field == "gender" and "female" in out.reason
    assert isinstance(flow.transform({"contactid": GUID, "lastname": "FEMALE"}), rt.Mapped)


def test_function_errors_and_wrong_types_are_rejections(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, """
    cusFullName = text(number(firstname))
    lastName    = trim(lastname)""")
    out = flow.transform({"contactid": GUID, "firstname": "abc"})
    assert isinstance(out, rt.Rejected) and out.field == "cusFullName" and "number()" in out.reason
    out = flow.transform({"contactid": GUID, "lastname": 42})
    assert isinstance(out, rt.Rejected) and out.field == "lastName" and out.line == 9


def test_comparisons_with_null(tmp_path: Path) -> None:
    wheres = ('firstname != "a"', "firstname == null", "numberofchildren < 5", "not (numberofchildren < 5)",
              "donotemail", "not donotemail", "gendercode in (1, null)")
    flows = {}
    for i, w in enumerate(wheres):
        (tmp_path / str(i)).mkdir()
        flows[w] = contacts_flow(tmp_path / str(i), "    email = emailaddress1", where=w)
    row = {"contactid": GUID}
    got = {w: f.matches(row) for w, f in flows.items()}
    assert got == {'firstname != "a"': True, "firstname == null": True, "numberofchildren < 5": False,
                   "not (numberofchildren < 5)": True, "donotemail": False, "not donotemail": True,
                   "gendercode in (1, null)": True}


def test_boolean_operators_give_booleans_in_values(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, "    blackListEmail = donotbulkemail or donotemail")
    assert flow.transform({"contactid": GUID})[2]["blackListEmail"] is False
    assert flow.transform({"contactid": GUID, "donotemail": True})[2]["blackListEmail"] is True


def test_dates_are_read_from_and_written_to_each_wire_format(tmp_path: Path) -> None:
    flows = compile_text(tmp_path, """
flow f {
  from campaign.events.click
  to   d365.acs_emailclick
  key  id -> acs_eventid
  mode create
  map {
    actualend         = timestamp
    regardingobjectid = contact(profile.externalId)  required
    subject           = "Clicked: " & delivery.deliveryName
  }
}""")
    flow = flows["f"]
    out = flow.transform({"id": "e1", "timestamp": "2019-09-25 23:20:35.120Z",
                          "profile": {"externalId": GUID}, "delivery": {"deliveryName": "N"}})
    assert isinstance(out, rt.Mapped)
    assert out.payload == {"acs_eventid": "e1", "actualend": "2019-09-25T23:20:35Z", "subject": "Clicked: N"}
    assert out.refs == (rt.ContactRef("regardingobjectid", GUID, 9),)
    out = flow.transform({"id": "e2", "profile": {}})
    assert isinstance(out, rt.Rejected) and out.field == "regardingobjectid"
    assert flow.pushdown is None and flow.select[0] == "id"


def test_links_become_references_not_payload(tmp_path: Path) -> None:
    flows = compile_text(tmp_path, """
flow vehicles {
  from d365.new_vehicle
  to   campaign.cusVehicle
  key  new_vehicleid -> cusExternalId
  mode upsert
  map {
    cusProfile = link(new_contactid, owners)
  }
}
flow owners {
  from d365.contact
  to   campaign.profile
  key  contactid -> externalId
  mode upsert
  map {
    email = emailaddress1
  }
}""")
    flow = flows["vehicles"]
    out = flow.transform({"new_vehicleid": "v1", "_new_contactid_value": GUID})
    assert out.refs == (rt.LinkRef("cusProfile", "owners", GUID, 8),) and "cusProfile" not in out.payload
    out = flow.transform({"new_vehicleid": "v1"})
    assert out.refs == () and out.payload["cusProfile"] is None  # a null link clears the field
    assert "_new_contactid_value" in flow.select


def test_on_delete_set_and_flow_settings(tmp_path: Path) -> None:
    flow = compile_text(tmp_path, (FIXTURES / "semantics.map").read_text(encoding="utf-8"))["semantics"]
    assert flow.on_delete.action == "set" and flow.on_delete.values == {"blackList": True}
    assert (flow.mode, flow.on_filtered, flow.batch) == ("upsert", "delete", 200)
    assert flow.line_of("email") == 13 and flow.line_of("location.city") == 19
    assert flow.pushdown == "statecode eq 0 and (gendercode eq 1 or gendercode eq 2 or gendercode eq null)"


def test_evaluate_filters_then_maps(tmp_path: Path) -> None:
    flow = contacts_flow(tmp_path, "    email = emailaddress1", where="statecode == 0")
    assert isinstance(flow.evaluate({"contactid": GUID, "statecode": 1}), rt.Filtered)
    assert isinstance(flow.evaluate({"contactid": GUID, "statecode": 0}), rt.Mapped)
    # pushed=True: the server applied statecode eq 0; nothing is left to check locally
    assert isinstance(flow.evaluate({"contactid": GUID, "statecode": 1}, pushed=True), rt.Mapped)


# ------------------------------------------------------------------------------------------------ properties

S = ast.Span.unknown("p.map")


def _ast_flow(assignments: tuple[ast.Assignment, ...], where: ast.Expr | None = None) -> ast.Flow:
    key = ast.KeyClause(span=S, source=ast.Path(span=S, parts=("contactid",)), target=ast.Path(span=S, parts=("externalId",)))
    return ast.Flow(span=S, name="p", source=ast.TableRef(span=S, system="d365", name="contact"),
                    target=ast.TableRef(span=S, system="campaign", name="profile"), key=key, where=where,
                    assignments=assignments, name_span=S)


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=40) | st.sampled_from(["'''", '"""', "\n# x", "'); import os; ('", "\\", "\x00"]))
def test_no_literal_can_change_the_generated_code(value: str) -> None:
    lit = ast.Literal(span=S, kind="text", value=value)
    where = ast.Binary(span=S, op="==", left=ast.Path(span=S, parts=("firstname",)), right=lit)
    a = ast.Assignment(span=S, target=ast.Path(span=S, parts=("cusSource",)), expr=lit)
    flow = compile_flow(_ast_flow((a,), where), replaces={}, source=CONTACT, target=PROFILE, file="p.map")
    out = flow.transform({"contactid": GUID})
    if len(value) <= 50:
        assert out.payload["cusSource"] == value
    assert flow.matches({"contactid": GUID, "firstname": value}) is True
    assert flow.matches({"contactid": GUID, "firstname": value + "x"}) is False


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30), n=st.integers(0, 40))
def test_inlined_functions_agree_with_the_library(text: str, n: int) -> None:
    def call(name: str, *args: ast.Expr) -> ast.Call:
        return ast.Call(span=S, name_span=S, name=name, args=args)

    x = ast.Path(span=S, parts=("firstname",))
    exprs = {"lower": call("lower", x), "upper": call("upper", x), "trim": call("trim", x),
             "truncate": call("truncate", x, ast.Literal(span=S, kind="int", value=n))}
    assignments = tuple(ast.Assignment(span=S, target=ast.Path(span=S, parts=("cusFullName",)), expr=e)
                        for e in exprs.values())
    for (name, expr), a in zip(exprs.items(), assignments, strict=True):
        flow = compile_flow(_ast_flow((a,)), replaces={}, source=CONTACT, target=PROFILE, file="p.map")
        impl = FUNCTIONS[name].impl
        assert impl is not None
        expected = impl(text, n) if name == "truncate" else impl(text)
        out = flow.transform({"contactid": GUID, "firstname": text})
        if isinstance(out, rt.Rejected):
            assert len(expected) > 100  # only the target's length may refuse it
        else:
            assert out.payload["cusFullName"] == expected, (name, expr)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                     max_leaves=5)


@settings(max_examples=200, deadline=None)
@given(record=st.dictionaries(st.sampled_from(["contactid", "statecode", "emailaddress1", "firstname", "lastname",
                                               "birthdate", "gendercode", "preferredcontactmethodcode", "jobtitle",
                                               "telephone1", "mobilephone", "address1_city", "middlename",
                                               "address1_stateorprovince", *string.ascii_lowercase[:3]]),
                              _JSON, max_size=10))
def test_no_record_makes_a_shipped_flow_raise(record: dict[str, Any]) -> None:
    flows = compile_project(load_project([FIXTURE_MAPPINGS])[0], CATALOG)
    for name in ("contacts", "vehicles", "email_clicks"):
        out = flows[name].evaluate(record)
        assert isinstance(out, rt.Mapped | rt.Filtered | rt.Rejected)


def test_the_same_mappings_in_two_places_compile_to_flows_naming_their_own_files(tmp_path: Path) -> None:
    # The compile cache is keyed by content: a copy elsewhere must not get flows that name the first files.
    first, second = tmp_path / "a" / "mappings", tmp_path / "b" / "mappings"
    for folder in (first, second):
        shutil.copytree(FIXTURE_MAPPINGS, folder)
    one = compile_project(load_project([first])[0], CATALOG)
    two = compile_project(load_project([second])[0], CATALOG)
    assert Path(one["contacts"].file).resolve() == (first / "contacts.map").resolve()
    assert Path(two["contacts"].file).resolve() == (second / "contacts.map").resolve()


def test_a_tree_the_compiler_cannot_compile_is_a_compile_error_not_an_assert() -> None:
    # Under `python -O` an assert vanishes; these cases are reachable through compile_flow's API.
    stranger = ast.Comment(span=S, text="# not an expression")
    a = ast.Assignment(span=S, target=ast.Path(span=S, parts=("cusSource",)), expr=stranger)  # type: ignore[arg-type]
    with pytest.raises(DslError, match="an expression of type Comment"):
        compile_flow(_ast_flow((a,)), replaces={}, source=CONTACT, target=PROFILE, file="p.map")
    plain = ast.Assignment(span=S, target=ast.Path(span=S, parts=("cusSource",)), expr=ast.Path(span=S, parts=("firstname",)))
    with pytest.raises(CompileError, match="has no key"):
        compile_flow(dataclasses.replace(_ast_flow((plain,)), key=None), replaces={}, source=CONTACT, target=PROFILE,
                     file="p.map")
