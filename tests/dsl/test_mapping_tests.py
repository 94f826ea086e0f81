"""`mapsync test`: the shipped mapping tests pass with full coverage; failures point at the case."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mapsync.dsl.testing import render, run_tests
from mapsync.engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"


def test_shipped_mappings_pass_and_cover_every_line() -> None:
    report = run_tests([MAPPINGS])
    assert report.ok, render(report)
    assert report.results and not report.uncovered, render(report)
    tested = {r.flow for r in report.results}
    assert {"contacts", "vehicles", "email_sends", "email_opens", "email_clicks", "email_bounces"} <= tested


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("contacts.map", "replacements.map"):
        shutil.copy(MAPPINGS / name, tmp_path / name)
    return tmp_path


def test_a_failing_case_shows_file_line_name_and_field_diff(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "contacts.test.yaml").write_text("""flow: contacts
cases:
  - name: fine
    input: {contactid: a, emailaddress1: A@B.FR, statecode: 0, gendercode: 1}
    expect: {email: a@b.fr, gender: male}
  - name: wrong gender
    input: {contactid: b, emailaddress1: A@B.FR, statecode: 0, gendercode: 2}
    expect: {email: a@b.fr, gender: male, location: {city: Paris}}
  - name: not filtered
    input: {contactid: c, emailaddress1: A@B.FR, statecode: 0}
    expect: filtered
""", encoding="utf-8")
    code = main(["test", str(project)])
    out = capsys.readouterr().out
    assert code == 1
    assert "contacts.test.yaml:6: FAIL wrong gender (flow contacts)" in out
    assert '    gender: expected "male"; got "female"' in out
    assert '    location.city: expected "Paris"; got null' in out
    assert "contacts.test.yaml:9: FAIL not filtered" in out and "expected: filtered; got: mapped" in out
    assert "3 cases: 1 passed, 2 failed" in out
    assert "not exercised" in out  # most lines of contacts.map have no case here


def test_an_invalid_test_file_is_reported_with_its_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "bad.test.yaml").write_text("flow: contacts\ncases:\n  - name: x\n    input: {}\n    expect: maybe\n",
                                           encoding="utf-8")
    assert main(["test", str(project)]) == 1
    out = capsys.readouterr().out
    assert "bad.test.yaml:5: cases.0.expect" in out


def test_unknown_flow_and_missing_path(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "x.test.yaml").write_text("flow: nope\ncases:\n  - {name: x, input: {}, expect: filtered}\n",
                                         encoding="utf-8")
    assert main(["test", str(project)]) == 1
    assert "no flow `nope`" in capsys.readouterr().out
    assert main(["test", str(project / "missing")]) == 2


def test_compile_command_shows_code_and_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "contacts", "--mappings", str(MAPPINGS)]) == 0
    out = capsys.readouterr().out
    assert "def transform(r):" in out and "def filter_residual(r):" in out
    assert "$filter:  statecode eq 0 and emailaddress1 ne null" in out
    assert main(["compile", "contact", "--mappings", str(MAPPINGS)]) == 2
    assert "did you mean `contacts`" in capsys.readouterr().err
