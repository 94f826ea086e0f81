"""End to end over a real LSP session: `python -m mapsync.engine.cli lsp` in a subprocess, driven by pygls's client,
on the fixture project tests/fixtures/lsp/project (people.map imports shared.map; cars.map links to people)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException

from mapsync.dsl.formatter import format_text
from mapsync.dsl.schema import load_catalog
from tests.lsp.conftest import as_validate, comparable, validate_json
from tests.lsp.session import Session, changes

P, C, S = "project/people.map", "project/cars.map", "project/shared.map"
W102 = {
    "code": "W102", "severity": "warning",
    "message": "`methods` has no case for 3 (Phone), 4 (Fax), 5 (Mail) of `preferredcontactmethodcode`",
    "hint": "add the cases, or `else => ...` (without it those records are rejected)",
    "line": 14, "column": 20, "end_line": 14, "end_column": 55,
}


def by_name(session: Session, workspace: Path) -> dict[str, list[dict[str, object]]]:
    found = as_validate(session)
    return {name: found.get(session.uri(f"project/{name}"), []) for name in ("people.map", "cars.map", "shared.map")}


def labels(items: list[lsp.CompletionItem]) -> list[str]:
    return [i.label for i in sorted(items, key=lambda i: (i.sort_text or i.label))]


def text_of(session: Session, name: str, workspace: Path) -> str:
    return (workspace / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------- diagnostics


def test_open_publishes_what_validate_reports_for_every_file_of_the_project(fresh: Session, workspace: Path) -> None:
    fresh.open(P)
    assert by_name(fresh, workspace) == {"people.map": [W102], "cars.map": [], "shared.map": []}
    assert comparable(validate_json(workspace)) == as_validate(fresh)


def test_a_misspelt_field_as_typed_then_fixed_by_the_quick_fix(fresh: Session, workspace: Path) -> None:
    fresh.open(P)
    fresh.edit(P, 10, 30, 10, 43, "emailadress1")  # not saved: the buffer wins over the disk
    e103 = {"code": "E103", "severity": "error", "message": "unknown field `emailadress1` on d365.contact",
            "hint": "did you mean `emailaddress1`?", "line": 11, "column": 31, "end_line": 11, "end_column": 43}
    assert by_name(fresh, workspace)["people.map"] == [e103, W102]
    actions = fresh.code_actions(P, 10, 33, 10, 33)
    assert [a.title for a in actions] == ["Change to `emailaddress1`"]
    assert changes(actions[0].edit) == {
        fresh.uri(P): [lsp.TextEdit(range=lsp.Range(lsp.Position(10, 30), lsp.Position(10, 42)), new_text="emailaddress1")]}
    fresh.edit(P, 10, 30, 10, 42, "emailaddress1")
    assert by_name(fresh, workspace)["people.map"] == [W102]


def test_a_half_typed_line_gives_the_parser_diagnostic_and_still_completes(fresh: Session, workspace: Path) -> None:
    fresh.open(P)
    fresh.edit(P, 12, 0, 12, 0, "    phone = \n")
    found = by_name(fresh, workspace)["people.map"]
    assert [(d["code"], d["line"]) for d in found] == [("E001", 14)]
    (workspace / P).write_text(fresh.text(P), encoding="utf-8")
    assert comparable(validate_json(workspace, cli=True)) == as_validate(fresh)
    items = fresh.complete(P, 12, 12)
    assert labels(items)[:3] == ["accountrolecode", "address1_addresstypecode", "address1_city"]
    email = next(i for i in items if i.label == "emailaddress1")
    assert email.kind == lsp.CompletionItemKind.Field and email.detail == "string (text), max 100"
    lower = next(i for i in items if i.label == "lower")
    assert lower.detail == "lower(x: text) -> text" and lower.insert_text == "lower("
    assert {"genders", "methods", "and", "null"} <= {i.label for i in items}


def test_an_unclosed_block_is_reported_like_validate(fresh: Session, workspace: Path) -> None:
    fresh.open(C)
    fresh.edit(C, 8, 0, 9, 1, "")  # the map block's and the flow's closing braces
    found = by_name(fresh, workspace)["cars.map"]
    assert found and found[0]["code"] in ("E001", "E003")
    (workspace / C).write_text(fresh.text(C), encoding="utf-8")
    assert comparable(validate_json(workspace)) == as_validate(fresh)


def test_an_unsaved_change_to_an_imported_file_shows_in_the_importer_until_closed(fresh: Session, workspace: Path) -> None:
    fresh.open(P)
    fresh.open(S)
    fresh.edit(S, 8, 0, 11, 1, "")  # delete `replace methods { ... }` from the unsaved buffer
    e105 = {"code": "E105", "severity": "error", "message": "unknown function or replacement `methods`",
            "hint": None, "line": 14, "column": 20, "end_line": 14, "end_column": 27}
    assert by_name(fresh, workspace)["people.map"] == [e105]
    fresh.close_doc(S)  # never saved: the disk's version counts again
    assert by_name(fresh, workspace)["people.map"] == [W102]


def test_a_new_file_not_yet_saved_joins_its_project_and_leaves_it_when_closed(fresh: Session, workspace: Path) -> None:
    new = "project/extra.map"
    fresh.open(new, "flow people {\n}\n")  # a second `people`, and no clauses
    found = by_name(fresh, workspace) | {"extra.map": as_validate(fresh)[fresh.uri(new)]}
    assert [d["code"] for d in found["extra.map"]] == ["E109"]
    assert found["extra.map"][0]["message"] == "`people` is declared twice"
    fresh.close_doc(new)
    assert fresh.diagnostics[fresh.uri(new)] == []
    assert by_name(fresh, workspace) == {"people.map": [W102], "cars.map": [], "shared.map": []}


# ------------------------------------------------------------------------------------------- completion


def test_completion_of_tables_after_a_system(fresh: Session, workspace: Path) -> None:
    fresh.open(P)
    fresh.edit(P, 3, 0, 3, 19, "  from d365.")
    assert labels(fresh.complete(P, 3, 12)) == [
        "account", "acs_emailbounce", "acs_emailclick", "acs_emailopen", "acs_emailsend", "contact", "new_vehicle"]
    fresh.edit(P, 3, 0, 3, 12, "  from d365.contact")
    fresh.edit(P, 4, 0, 4, 22, "  to   campaign.")
    assert labels(fresh.complete(P, 4, 16)) == [
        "cusVehicle", "events.bounce", "events.click", "events.open", "events.send", "profile"]


def test_completion_of_target_fields_puts_unassigned_ones_first(fresh: Session) -> None:
    fresh.open(P)
    fresh.edit(P, 10, 0, 10, 0, "    \n")
    items = {i.label: i for i in fresh.complete(P, 10, 4)}
    assert items["email"].sort_text == "3email" and items["externalId"].sort_text == "3externalId"
    assert items["lastName"].sort_text == "1lastName" and items["lastName"].detail == "string (text), max 50"
    fresh.edit(P, 10, 0, 10, 4, "    location.")
    assert labels(fresh.complete(P, 10, 13)) == [
        "address1", "address2", "address3", "address4", "city", "countryCode", "stateCode", "zipCode"]


def test_completion_of_flow_names_in_link_and_via(fresh: Session) -> None:
    fresh.open(C)
    fresh.edit(C, 7, 37, 7, 43, "")
    items = fresh.complete(C, 7, 37)
    assert labels(items) == ["cars", "people"]
    assert next(i for i in items if i.label == "people").detail == "d365.contact -> campaign.profile"
    fresh.edit(C, 15, 12, 15, 18, "")
    assert labels(fresh.complete(C, 15, 12)) == ["cars", "people"]


def test_completion_of_option_values_in_a_replace_block(fresh: Session) -> None:
    fresh.open(S)
    fresh.edit(S, 11, 0, 11, 0, "  \n")
    items = fresh.complete(S, 11, 2)
    assert labels(items) == ["3", "4", "5", "1", "2", "else"]  # the ones without a case first
    assert next(i for i in items if i.label == "3").detail == "Phone (preferredcontactmethodcode)"


def test_completion_of_keywords_and_clause_values(fresh: Session) -> None:
    fresh.open(P)
    fresh.edit(P, 8, 0, 8, 0, "  ")
    assert labels(fresh.complete(P, 8, 2)) == [
        "batch", "from", "key", "map", "max deletes", "mode", "on delete:", "on filtered:", "to", "where"]
    fresh.edit(P, 6, 0, 6, 13, "  mode ")
    assert labels(fresh.complete(P, 6, 7)) == ["create", "mirror", "update", "upsert"]
    fresh.edit(P, 12, 0, 12, 0, "    phone = telephone1 \n")
    assert labels(fresh.complete(P, 12, 23)) == ["and", "in", "is", "keep", "not", "once", "or", "required"]
    fresh.edit(P, 12, 0, 13, 0, "")
    fresh.edit(P, 16, 0, 16, 0, "\n")
    assert labels(fresh.complete(P, 17, 0)) == ["flow", "import", "optout", "replace"]
    assert fresh.complete(P, 0, 12) == []  # inside the import's string


# ------------------------------------------------------------------------------------------- hover


def snapshot(workspace: Path, system: str, name: str) -> str | None:
    """The snapshot file as the server (running in ``workspace``) names it: the checker's own rule."""
    with contextlib.chdir(workspace):
        return load_catalog().snapshot_file(system, name)


def test_hover_on_a_source_field_shows_the_snapshot(fresh: Session, workspace: Path) -> None:
    fresh.open(P)
    hover = fresh.hover(P, 13, 30)
    assert hover is not None and hover.contents.value == (  # type: ignore[union-attr]
        "**d365.contact.preferredcontactmethodcode** — Preferred Method of Contact\n\n"
        "`choice` (choice), optional\n\n"
        "| value | label |\n| --- | --- |\n| 1 | Any |\n| 2 | Email |\n| 3 | Phone |\n| 4 | Fax |\n| 5 | Mail |\n\n"
        f"from the snapshot `{snapshot(workspace, 'd365', 'contact')}`")
    assert hover.range == lsp.Range(lsp.Position(13, 27), lsp.Position(13, 53))


def test_hover_on_a_target_field_and_a_function(fresh: Session, workspace: Path, project_root: Path) -> None:
    fresh.open(P)
    email = fresh.hover(P, 10, 5)
    assert email is not None and email.contents.value == (  # type: ignore[union-attr]
        "**campaign.profile.email** — Email\n\n`string` (text), max length 128, optional\n\n"
        f"from the snapshot `{snapshot(workspace, 'campaign', 'profile')}`")
    trunc = fresh.hover(P, 11, 22)
    docs = (project_root / "docs" / "functions.md").read_text(encoding="utf-8")
    section = docs.split("## truncate\n\n", 1)[1].split("\n\n## ", 1)[0]
    assert trunc is not None and trunc.contents.value == "**truncate**\n\n" + section  # type: ignore[union-attr]


def test_hover_on_a_replacement_and_a_flow(fresh: Session) -> None:
    fresh.open(P)
    fresh.open(C)
    rep = fresh.hover(P, 12, 22)
    assert rep is not None and rep.contents.value == (  # type: ignore[union-attr]
        "replacement declared in `project/shared.map` line 3\n\n```mapsync\nreplace genders {\n"
        '  1    => "male"\n  2    => "female"\n  else => "unknown"\n}\n```')
    flow = fresh.hover(C, 7, 40)
    assert flow is not None and flow.contents.value == (  # type: ignore[union-attr]
        "flow declared in `project/people.map` line 3, 4 assignments\n\n```mapsync\nflow people\n"
        "  from d365.contact\n  to   campaign.profile\n  key  contactid -> externalId\n```")


# ------------------------------------------------------------------------------------------- navigation


def loc(session: Session, name: str, line: int, col: int, end_line: int, end_col: int) -> lsp.Location:
    return lsp.Location(uri=session.uri(name), range=lsp.Range(lsp.Position(line, col), lsp.Position(end_line, end_col)))


def test_definition_of_flows_replacements_and_imports(fresh: Session) -> None:
    fresh.open(P)
    fresh.open(C)
    people = loc(fresh, P, 2, 5, 2, 11)
    assert fresh.definition(C, 7, 40) == people  # link(new_contactid, people)
    assert fresh.definition(C, 15, 14) == people  # via people
    assert fresh.definition(P, 12, 22) == loc(fresh, S, 2, 8, 2, 15)  # genders(...)
    assert fresh.definition(P, 0, 9) == loc(fresh, S, 0, 0, 0, 0)  # import "shared.map"
    assert fresh.definition(P, 6, 4) is None  # `mode` is no name


def test_references_of_a_flow_and_a_replacement(fresh: Session) -> None:
    fresh.open(P)
    assert fresh.references(P, 2, 7) == [loc(fresh, C, 7, 37, 7, 43), loc(fresh, C, 15, 12, 15, 18),
                                         loc(fresh, P, 2, 5, 2, 11)]
    assert fresh.references(P, 2, 7, declaration=False) == [loc(fresh, C, 7, 37, 7, 43), loc(fresh, C, 15, 12, 15, 18)]
    assert fresh.references(P, 12, 22) == [loc(fresh, P, 12, 19, 12, 26), loc(fresh, S, 2, 8, 2, 15)]
    assert fresh.references(P, 0, 3) == [loc(fresh, P, 0, 0, 0, 19)]


def test_rename_a_flow_across_files(fresh: Session) -> None:
    fresh.open(C)
    assert fresh.prepare_rename(C, 7, 40) == lsp.Range(lsp.Position(7, 37), lsp.Position(7, 43))
    edit = fresh.rename(C, 7, 40, "persons")
    assert changes(edit) == {
        fresh.uri(C): [lsp.TextEdit(range=lsp.Range(lsp.Position(7, 37), lsp.Position(7, 43)), new_text="persons"),
                       lsp.TextEdit(range=lsp.Range(lsp.Position(15, 12), lsp.Position(15, 18)), new_text="persons")],
        fresh.uri(P): [lsp.TextEdit(range=lsp.Range(lsp.Position(2, 5), lsp.Position(2, 11)), new_text="persons")],
    }


def test_rename_a_replacement_and_refuse_a_taken_name(fresh: Session) -> None:
    fresh.open(S)
    edit = fresh.rename(S, 2, 10, "sexes")
    assert changes(edit) == {
        fresh.uri(P): [lsp.TextEdit(range=lsp.Range(lsp.Position(12, 19), lsp.Position(12, 26)), new_text="sexes")],
        fresh.uri(S): [lsp.TextEdit(range=lsp.Range(lsp.Position(2, 8), lsp.Position(2, 15)), new_text="sexes")],
    }
    with pytest.raises(JsonRpcException, match="`people` is already declared"):
        fresh.rename(S, 2, 10, "people")
    with pytest.raises(JsonRpcException, match="built-in function"):
        fresh.rename(S, 2, 10, "lower")
    assert fresh.prepare_rename(S, 3, 2) is None


# ------------------------------------------------------------------------------------------- edits


def test_formatting_is_mapsync_fmt(fresh: Session) -> None:
    messy = 'import "shared.map"\nflow people {\nfrom d365.contact\n to campaign.profile\nkey contactid->externalId\n' \
            "map {\nemail=lower(emailaddress1) # kept\n}\n}\n"
    fresh.open(P, messy)
    edits = fresh.format(P)
    assert edits == [lsp.TextEdit(range=lsp.Range(lsp.Position(0, 0), lsp.Position(9, 0)),
                                  new_text=format_text(messy))]
    fresh.replace_all(P, messy.replace("map {", "map"))
    assert fresh.format(P) is None  # does not parse: nothing to format


def test_quick_fixes_for_a_missing_conversion_and_missing_cases(fresh: Session) -> None:
    fresh.open(P)
    fresh.edit(P, 11, 19, 11, 42, "birthdate")  # firstName = birthdate: a date into text
    actions = fresh.code_actions(P, 11, 20, 11, 20)
    assert [a.title for a in actions] == ["Convert with text(…)"]
    assert changes(actions[0].edit) == {
        fresh.uri(P): [lsp.TextEdit(range=lsp.Range(lsp.Position(11, 19), lsp.Position(11, 28)), new_text="text(birthdate)")]}
    cases = fresh.code_actions(P, 13, 25, 13, 25)
    assert [a.title for a in cases] == ["Add the missing cases of `methods` (3, 4, 5)", "Add `else => null` to `methods`"]
    assert changes(cases[0].edit) == {fresh.uri(S): [lsp.TextEdit(
        range=lsp.Range(lsp.Position(11, 0), lsp.Position(11, 0)),
        new_text="  3 => null  # Phone: TODO\n  4 => null  # Fax: TODO\n  5 => null  # Mail: TODO\n")]}
    assert changes(cases[1].edit) == {fresh.uri(S): [lsp.TextEdit(
        range=lsp.Range(lsp.Position(11, 0), lsp.Position(11, 0)), new_text="  else => null  # TODO\n")]}


def test_without_pygls_the_command_says_what_to_install() -> None:
    code = ("import sys; sys.modules['pygls'] = None; sys.modules['lsprotocol'] = None\n"
            "from mapsync.engine.cli import main; raise SystemExit(main(['lsp']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("mapsync lsp: the language server needs pygls; install it with: "
                           "pip install 'mapsync[lsp]'\n")


def test_positions_are_utf16_code_units(fresh: Session) -> None:
    fresh.open(P)
    fresh.edit(P, 11, 0, 11, 42, '    cusFullName  = "\U0001f697" & firstnme')  # the car is 1 character, 2 UTF-16 units
    (e103,) = [d for d in fresh.diagnostics[fresh.uri(P)] if d.code == "E103"]
    assert e103.range == lsp.Range(lsp.Position(11, 26), lsp.Position(11, 34))
    fresh.edit(P, 11, 26, 11, 34, "firstname")
    hover = fresh.hover(P, 11, 27)
    assert hover is not None and hover.range == lsp.Range(lsp.Position(11, 26), lsp.Position(11, 35))
    assert hover.contents.value.startswith("**d365.contact.firstname**")  # type: ignore[union-attr]
