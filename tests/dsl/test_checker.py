"""The checker against the shipped snapshots: structured assertions on code, line and column."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl.checker import analyze, check
from mapsync.dsl.diagnostics import Diagnostic
from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog

ROOT = Path(__file__).resolve().parent.parent.parent


def run(tmp_path: Path, files: dict[str, str]) -> list[Diagnostic]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    project, diags = load_project([tmp_path])
    return [*diags, *check(project, load_catalog())]


def contacts(*lines: str, clauses: str = "", extra: str = "", key: str = "contactid -> externalId") -> str:
    body = "".join(f"    {line}\n" for line in lines)
    # line 1: flow, 2: from, 3: to, 4: key, then the clauses, then `map {`, then the map lines
    return (f"flow contacts {{\n  from d365.contact\n  to   campaign.profile\n  key  {key}\n{clauses}"
            f"  map {{\n{body}  }}\n}}\n{extra}")


def found(diags: list[Diagnostic]) -> list[tuple[str, int]]:
    return sorted((d.code, d.span.line) for d in diags)


def first_map_line(clauses: str = "") -> int:
    return 6 + clauses.count("\n")


def test_shipped_mappings_have_no_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    project, diags = load_project([Path("mappings")])
    analysis = analyze(project, load_catalog())
    assert diags == []
    assert analysis.ok, [d.headline() for d in analysis.diagnostics]
    contacts_flow = analysis.flows["contacts"]
    assert contacts_flow.source is not None and contacts_flow.source.dotted == "d365.contact"
    assert contacts_flow.target is not None and contacts_flow.target.dotted == "campaign.profile"
    assert [f.name if f else None for f in contacts_flow.targets][:2] == ["email", "firstName"]
    assert contacts_flow.key_target is not None and contacts_flow.key_target.name == "externalId"
    assert analysis.flows["vehicles"].links == ("contacts",)
    assert analysis.optouts["email"].via == "contacts"


def test_clean_flow(tmp_path: Path) -> None:
    assert run(tmp_path, {"a.map": contacts("email = lower(trim(emailaddress1))")}) == []


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts(
        "email = lower(emailadress1)", "firstName = truncate(firstname)", "lastNam = lastname",
        "cusFullName = numberofchildren")})
    line = first_map_line()
    assert found(diags) == [("E103", line), ("E104", line + 2), ("E106", line + 1), ("E201", line + 3)]


def test_unknown_source_field_has_did_you_mean_and_span(tmp_path: Path) -> None:
    (d,) = run(tmp_path, {"a.map": contacts("email = lower(emailadress1)")})
    assert (d.code, d.span.line, d.span.col, d.span.end_col) == ("E103", 6, 19, 31)
    assert d.hint == "did you mean `emailaddress1`?"


def test_nested_paths(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("location.cty = address1_city", "location.city.x = address1_city",
                                             "email.x = emailaddress1")})
    assert [d.code for d in diags] == ["E104", "E104", "E104"]
    assert diags[0].hint == "did you mean `location.city`?"
    assert "no fields" in (diags[2].hint or "")


def test_event_source_nested_fields(tmp_path: Path) -> None:
    text = """flow sends {
  from campaign.events.send
  to   d365.acs_emailsend
  key  id -> acs_eventid
  map {
    subject = truncate(delivery.deliveryNam, 200)
    regardingobjectid = contact(profile.externalId)
  }
}
"""
    (d,) = run(tmp_path, {"a.map": text})
    assert (d.code, d.span.line) == ("E103", 6)
    assert d.hint == "did you mean `delivery.deliveryName`?"


def test_unknown_system_and_table(tmp_path: Path) -> None:
    text = contacts("email = emailaddress1").replace("d365.contact", "d365.contacts").replace(
        "campaign.profile", "campain.profile")
    diags = run(tmp_path, {"a.map": text})
    assert found(diags) == [("E101", 3), ("E102", 2)]
    assert next(d for d in diags if d.code == "E101").hint == "did you mean `campaign`?"


@pytest.mark.parametrize(("clauses", "code"), [
    ("  mode upsret\n", "E112"),
    ("  on delete: remove\n", "E112"),
    ("  on filtered: keep\n", "E112"),
    ("  batch 0\n", "E112"),
    ("  batch 1001\n", "E112"),
    ("  max deletes 5%\n", "E112"),
    ("  mode mirror\n  max deletes 150%\n", "E112"),
    ("  where firstname\n", "E201"),
    ('  where statecode == "0"\n', "E202"),
    ("  where statecode == 7\n", "W104"),
    ("  where firstname == 1 or true\n", "E202"),
    ("  where statecode in (0, 5)\n", "W104"),
    ("  where not firstname\n", "E203"),
    ("  where firstname and true\n", "E203"),
])
def test_clause_problems(tmp_path: Path, clauses: str, code: str) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", clauses=clauses)})
    assert [d.code for d in diags] == [code]
    assert diags[0].span.line == 5 + clauses.count("\n") - 1


@pytest.mark.parametrize("clauses", [
    "  mode mirror\n  max deletes 5%\n  batch 1000\n",
    "  on delete: set(blackList = true)\n",
    "  where statecode == 0 and (birthdate > @2000-01-01 or birthdate is null)\n",
    "  where createdon > now() - days(30)\n",
    '  where lower(firstname) in ("ann", "bob") and numberofchildren + 1 >= 2\n',
])
def test_valid_clauses(tmp_path: Path, clauses: str) -> None:
    assert run(tmp_path, {"a.map": contacts("email = emailaddress1", clauses=clauses)}) == []


@pytest.mark.parametrize(("line", "code"), [
    ("cusFullName = numberofchildren", "E201"),
    ("cusFullName = gendercode", "E201"),
    ("birthDate = createdon", "E201"),
    ("cusFullName = text(numberofchildren)", None),
    ("birthDate = date(createdon)", None),
    ('cusFullName = firstname & " " & numberofchildren', "E203"),
    ('cusFullName = firstname + "x"', "E203"),
    ("cusFullName = lastname ?? numberofchildren", "E203"),
    ("cusContactBy = label(preferredcontactmethodcode)", None),
    ("cusContactBy = label(firstname)", "E204"),
    ("cusContactBy = label(lower(firstname))", "E204"),
    ("PKey = contactid", "E113"),
    ("firstName = firstname", "W101"),
    ("firstName = truncate(firstname, 30)", None),
    ("firstName = truncate(firstname, 31)", "W101"),
    ("firstName = lower(trim(substring(firstname, 0, 30)))", None),
    ('firstName = "a very long literal that has more than thirty characters"', "W101"),
    ("cusFullName = firstname & lastname", None),
    ('cusFullName = firstname & " " & lastname & " " & middlename', "W101"),
    ("cusFullName = hash(firstname)", None),
    ('gender = "f"', "E206"),
    ('gender = if(donotemail, "male", "female")', None),
    ('gender = if(donotemail, "male", "x")', "E206"),
    ("cusFullName = lowr(firstname)", "E105"),
    ("cusFullName = lower(firstname, 2)", "E106"),
    ("cusFullName = truncate(firstname, \"2\")", "E201"),
    ("cusFullName = contact(firstname)", "E301"),
    ("cusFullName = link(parentcustomerid, nowhere)", "E107"),
])
def test_expressions(tmp_path: Path, line: str, code: str | None) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", line)})
    assert [d.code for d in diags] == ([code] if code else [])
    for d in diags:
        assert d.span.line == 7


def test_assigned_twice_and_key_target(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", "externalId = fullname",
                                             "location.city = address1_city", "location = null",
                                             "email = emailaddress2")})
    assert [(d.code, d.span.line) for d in diags if d.code == "E110"] == [("E110", 7), ("E110", 9), ("E110", 10)]


def test_key_fields(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", key="contactidd -> externalID")})
    assert found(diags) == [("E111", 4), ("E111", 4)]
    assert {d.hint for d in diags} == {"did you mean `contactid`?", "did you mean `externalId`?"}
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", key="numberofchildren -> externalId")})
    assert [d.code for d in diags] == ["E201"]


def test_missing_clauses(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": "flow empty {\n}\n"})
    assert [d.code for d in diags] == ["E008"] * 4
    assert {d.span.line for d in diags} == {1}


def test_flow_direction(tmp_path: Path) -> None:
    text = contacts("email = emailaddress1").replace("campaign.profile", "campaign.events.send")
    diags = run(tmp_path, {"a.map": text})
    assert "E301" in [d.code for d in diags]


REPLACE_NO_ELSE = 'replace methods {\n  1 => "any"\n  2 => "email"\n}\n'


def test_replacement_coverage_and_use(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", "cusContactBy = methods(preferredcontactmethodcode)",
                                             extra=REPLACE_NO_ELSE)})
    (d,) = diags
    assert (d.code, d.span.line) == ("W102", 7)
    assert "3 (Phone), 4 (Fax), 5 (Mail)" in d.message


def test_replacement_with_else_covers_everything(tmp_path: Path) -> None:
    rep = REPLACE_NO_ELSE.replace("}", 'else => "other"\n}')
    assert run(tmp_path, {"a.map": contacts("email = emailaddress1", "cusContactBy = methods(preferredcontactmethodcode)",
                                            extra=rep)}) == []


def test_replacement_cases_that_cannot_match(tmp_path: Path) -> None:
    rep = 'replace g {\n  1 => "male"\n  9 => "female"\n  1 => "again"\n  else => "unknown"\n}\n'
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", "gender = g(gendercode)", "cusSource = g(firstname)",
                                             extra=rep)})
    assert found(diags) == [("E206", 7), ("W104", 7), ("W104", 8), ("W104", 14)]


def test_mixed_replacement_and_unused(tmp_path: Path) -> None:
    rep = 'replace g {\n  1 => "male"\n  "2" => "female"\n}\n'
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", extra=rep)})
    assert found(diags) == [("E205", 11), ("W103", 9)]


def test_replacement_results_are_values(tmp_path: Path) -> None:
    rep = 'replace g {\n  1 => firstname\n}\n'
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", "cusSource = g(gendercode)", extra=rep)})
    assert ("E103", 11) in found(diags)


def test_replacement_not_imported(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", "gender = g(gendercode)"),
                           "b.map": 'replace g {\n  1 => "male"\n  else => "unknown"\n}\n'})
    (d,) = diags
    assert d.code == "E105"
    assert d.hint is not None and 'import "b.map"' in d.hint


def test_replacement_cannot_shadow_a_function(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = lower(emailaddress1)",
                                             extra='replace lower {\n  1 => "a"\n}\n')})
    assert "E109" in [d.code for d in diags]


VEHICLES = """flow vehicles {{
  from d365.new_vehicle
  to   campaign.cusVehicle
  key  new_vehicleid -> cusExternalId
  map {{
    cusVin = new_vin
    cusProfile = link(new_contactid, {flow})
  }}
}}
"""


def test_link_to_existing_flow(tmp_path: Path) -> None:
    assert run(tmp_path, {"a.map": contacts("email = emailaddress1"), "v.map": VEHICLES.format(flow="contacts")}) == []


def test_link_to_unknown_flow_and_wrong_table(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1"), "v.map": VEHICLES.format(flow="contact")})
    (d,) = diags
    assert (d.code, d.span.line, d.hint) == ("E107", 7, "did you mean `contacts`?")
    diags = run(tmp_path, {"v.map": VEHICLES.format(flow="vehicles")})
    assert sorted(d.code for d in diags) == ["E108", "E201"]


def test_link_cycle_between_two_flows(tmp_path: Path) -> None:
    a = contacts("email = emailaddress1", "cusAccount = link(parentcustomerid, accounts)")
    b = contacts("email = emailaddress1", "cusAccount = link(parentcustomerid, contacts)").replace(
        "flow contacts", "flow accounts")
    diags = run(tmp_path, {"a.map": a, "b.map": b})
    assert [d.code for d in diags] == ["E108"]
    assert "contacts -> accounts -> contacts" in diags[0].message


OPTOUT = """optout email {{
  {left} <-> {right}
  direction {direction}
  conflict  optout-wins
{via}}}
"""


@pytest.mark.parametrize(("left", "right", "direction", "via", "expected"), [
    ("d365.contact.donotbulkemail", "campaign.profile.blackListEmail", "both", "  via contacts\n", []),
    ("d365.contact.donotbulkemail", "campaign.profile.blackListEmail", "both", "", []),
    ("d365.contact.donotbulkemail", "campaign.profile.blackListEmail", "bothways", "", ["E112"]),
    ("d365.contact.firstname", "campaign.profile.blackListEmail", "both", "", ["E302"]),
    ("d365.contact.donotbulkmail", "campaign.profile.blackListEmail", "both", "", ["E103"]),
    ("campaign.profile.blackListEmail", "d365.contact.donotbulkemail", "both", "", ["E302", "E302"]),
    ("d365.account.donotbulkemail", "campaign.profile.blackListEmail", "both", "", ["E302"]),
    ("d365.contact.donotbulkemail", "campaign.profile.blackListEmail", "both", "  via nothing\n", ["E107"]),
])
def test_optout(tmp_path: Path, left: str, right: str, direction: str, via: str, expected: list[str]) -> None:
    text = OPTOUT.format(left=left, right=right, direction=direction, via=via)
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1"), "o.map": text})
    assert sorted(d.code for d in diags) == expected


def test_contact_only_in_flows_to_d365(tmp_path: Path) -> None:
    diags = run(tmp_path, {"a.map": contacts("email = emailaddress1", "cusSource = contact(firstname)")})
    assert [d.code for d in diags] == ["E301"]


@settings(max_examples=60)
@given(st.data())
def test_any_generated_module_is_checked_without_an_exception(data: st.DataObject) -> None:
    # Whatever the grammar can say (the formatter's generated trees), the checker answers with diagnostics.
    formatter = pytest.importorskip("mapsync.dsl.formatter")
    from tests.dsl.strategies import modules

    text = formatter.format_module(data.draw(modules()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.map"
        path.write_text(text, encoding="utf-8")
        project, diags = load_project([path])
        analysis = analyze(project, load_catalog())
    assert all(isinstance(d, Diagnostic) for d in (*diags, *analysis.diagnostics))
    assert set(analysis.flows) == set(project.flows)
