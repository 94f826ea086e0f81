"""Mappings are read only from inside the mapping root: symbolic links are followed, then held to it.

A link that leads out (a ``*.map`` in the folder, a file given on the command line, an import) is refused
with E011 and never read, so no diagnostic can quote the file it points at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync.dsl.project import load_project
from mapsync.engine.cli import main

# Text that would be quoted by a syntax error if the file were read.
OUTSIDE_TEXT = 'PRETTY_NAME="Planted Outside 12"\nroot:x:0:0:root:/root:/bin/bash\n'
VALID = 'replace genders {\n  1 => "male"\n  else => "unknown"\n}\n'


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/outside.txt (not a mapping) and tmp/mappings/ holding one valid file; cwd = tmp."""
    (tmp_path / "outside.txt").write_text(OUTSIDE_TEXT, encoding="utf-8")
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "base.map").write_text(VALID, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _validate(capsys: pytest.CaptureFixture[str], *paths: str) -> tuple[int, str]:
    code = main(["validate", *paths])
    out, err = capsys.readouterr()
    return code, out + err


def _assert_not_read(output: str) -> None:
    assert "PRETTY_NAME" not in output and "root:x:0:0" not in output and "Planted" not in output, output
    assert "Traceback" not in output and "internal error" not in output


def test_a_map_link_in_the_folder_leading_out_is_refused_unread(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "mappings" / "zz.map").symlink_to(tree / "outside.txt")
    code, output = _validate(capsys, "mappings")
    assert code == 1
    _assert_not_read(output)
    assert "error[E011]: `mappings/zz.map` is a link to a file outside the mapping folder" in output
    assert "1 file," in output  # base.map was checked; the link was not


def test_a_link_given_on_the_command_line_cannot_widen_the_root(tree: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "mappings" / "zz.map").symlink_to(tree / "outside.txt")
    code, output = _validate(capsys, "mappings/zz.map")
    assert code == 2
    _assert_not_read(output)
    assert "E011" in output


def test_an_import_through_a_link_leading_out_is_refused_unread(tree: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "mappings" / "passwd.map").symlink_to(tree / "outside.txt")
    (tree / "mappings" / "main.map").write_text('import "passwd.map"\n', encoding="utf-8")
    code, output = _validate(capsys, "mappings")
    assert code == 1
    _assert_not_read(output)
    assert "`passwd.map` leads outside the mapping folder" in output


def test_an_import_of_a_non_map_link_leading_out_is_refused_unread(tree: Path) -> None:
    (tree / "mappings" / "pw.txt").symlink_to(tree / "outside.txt")
    (tree / "mappings" / "main.map").write_text('import "pw.txt"\n', encoding="utf-8")
    project, diagnostics = load_project([tree / "mappings"])
    assert [d.code for d in diagnostics] == ["E011"]
    assert all("outside.txt" not in f for f in project.sources)


def test_a_link_inside_the_root_is_followed(tree: Path) -> None:
    (tree / "mappings" / "shared").mkdir()
    (tree / "mappings" / "shared" / "alias.map").symlink_to(tree / "mappings" / "base.map")
    (tree / "mappings" / "main.map").write_text('import "shared/alias.map"\n', encoding="utf-8")
    _, diagnostics = load_project([tree / "mappings"])
    assert diagnostics == []


def test_importing_a_folder_says_it_is_a_folder(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "mappings" / "shared").mkdir()
    (tree / "mappings" / "main.map").write_text('import "shared"\n', encoding="utf-8")
    code, output = _validate(capsys, "mappings")
    assert code == 1
    assert "error[E009]: `shared` is a folder, not a mapping file" in output
    assert "does not exist" not in output
