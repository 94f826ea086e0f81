"""Loading a project: files and folders, imports (missing, circular, outside the root), names, version."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync.dsl.project import ProjectPathError, load_project

ROOT = Path(__file__).resolve().parent.parent.parent
FLOW = """flow {name} {{
  from d365.contact
  to   campaign.profile
  key  contactid -> externalId
  map {{
    email = emailaddress1
  }}
}}
"""
REPLACE = 'replace {name} {{\n  1 => "male"\n  else => "unknown"\n}}\n'


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def codes(diags: list) -> list[tuple[str, str, int]]:
    return sorted((d.code, Path(d.span.file).name, d.span.line) for d in diags)


def test_shipped_mappings_load_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    project, diags = load_project([Path("mappings")])
    assert diags == []
    assert "mappings/contacts.map" in project.sources
    assert project.flow_file("vehicles") == "mappings/vehicles.map"
    assert set(project.replaces_for("mappings/contacts.map")) == {"genders", "contact_methods"}
    assert project.replaces_for("mappings/vehicles.map") == {}
    assert set(project.optouts) == {"email"}
    assert len(project.version) == 64


def test_a_single_file_pulls_in_its_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    project, diags = load_project([Path("mappings/contacts.map")])
    assert diags == []
    assert project.files == ("mappings/contacts.map", "mappings/replacements.map")


def test_folder_order_is_sorted_and_files_are_not_loaded_twice(tmp_path: Path) -> None:
    write(tmp_path, {"b.map": FLOW.format(name="b"), "a.map": FLOW.format(name="a"), "sub/c.map": FLOW.format(name="c")})
    project, diags = load_project([tmp_path, tmp_path / "a.map"])
    assert diags == []
    assert [Path(f).name for f in project.files] == ["a.map", "b.map", "c.map"]


def test_missing_import_points_at_the_import(tmp_path: Path) -> None:
    write(tmp_path, {"a.map": '# header\nimport "nope.map"\n' + FLOW.format(name="a")})
    _, diags = load_project([tmp_path])
    assert codes(diags) == [("E009", "a.map", 2)]
    assert diags[0].span.col == 1


def test_self_import_and_cycle(tmp_path: Path) -> None:
    write(tmp_path, {
        "self.map": 'import "self.map"\n',
        "a.map": 'import "b.map"\n',
        "b.map": '\nimport "a.map"\n',
    })
    _, diags = load_project([tmp_path])
    assert codes(diags) == [("E010", "b.map", 2), ("E010", "self.map", 1)]
    cycle = next(d for d in diags if "cycle" in d.message)
    assert "a.map -> " in cycle.message


def test_import_outside_the_root(tmp_path: Path) -> None:
    write(tmp_path, {"common.map": REPLACE.format(name="g"), "proj/a.map": 'import "../common.map"\n'})
    _, diags = load_project([tmp_path / "proj"])
    assert codes(diags) == [("E011", "a.map", 1)]
    # the same import is fine when the root is widened
    project, diags = load_project([tmp_path / "proj"], root=tmp_path)
    assert diags == []
    assert "g" in project.replaces_for(next(f for f in project.files if f.endswith("a.map")))


def test_imports_are_transitive(tmp_path: Path) -> None:
    write(tmp_path, {"base.map": REPLACE.format(name="g"), "mid.map": 'import "base.map"\n',
                     "top.map": 'import "mid.map"\n'})
    project, _ = load_project([tmp_path / "top.map"])
    top = next(f for f in project.files if f.endswith("top.map"))
    assert set(project.replaces_for(top)) == {"g"}


def test_names_are_unique_across_files(tmp_path: Path) -> None:
    write(tmp_path, {"a.map": FLOW.format(name="x") + REPLACE.format(name="r"),
                     "b.map": "\n" + FLOW.format(name="x") + REPLACE.format(name="r")})
    project, diags = load_project([tmp_path])
    assert codes(diags) == [("E109", "b.map", 2), ("E109", "b.map", 10)]
    assert Path(project.flow_file("x")).name == "a.map"


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectPathError):
        load_project([tmp_path / "missing"])


def test_version_changes_with_content_only(tmp_path: Path) -> None:
    write(tmp_path, {"a.map": FLOW.format(name="a")})
    first, _ = load_project([tmp_path])
    again, _ = load_project([tmp_path])
    assert first.version == again.version
    (tmp_path / "a.map").write_text(FLOW.format(name="b"), encoding="utf-8")
    changed, _ = load_project([tmp_path])
    assert changed.version != first.version


def test_syntax_errors_and_binary_files_become_diagnostics(tmp_path: Path) -> None:
    (tmp_path / "bin.map").write_bytes(b"\x00\xff\xfe garbage")
    write(tmp_path, {"bad.map": "flow {"})
    project, diags = load_project([tmp_path])
    assert sorted(d.code for d in diags) == ["E001", "E004"]
    assert len(project.modules) == 2
