"""One golden file per diagnostic code: tests/fixtures/errors/<CODE>_<slug>.map and its rendered .err.

Each fixture must produce its own code, and the whole rendering (headline, source line, caret, hint)
must equal the .err file byte for byte. `pytest --update-golden` rewrites the .err files; review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mapsync.dsl.checker import check
from mapsync.dsl.diagnostics import CODES, render_text
from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "errors"
CASES = sorted(FIXTURES.glob("*.map"))


def render(case: Path) -> tuple[str, set[str]]:
    project, diagnostics = load_project([Path(case.name)], root=Path("."))
    diagnostics = [*diagnostics, *check(project, load_catalog())]
    return render_text(diagnostics, project.sources), {d.code for d in diagnostics}


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)  # file names in the rendering are relative to the current folder
    text, codes = render(case)
    code = case.stem.split("_", 1)[0]
    assert code in codes, f"{case.name} should produce {code}, got {sorted(codes)}"
    golden = case.with_suffix(".err")
    if request.config.getoption("--update-golden"):
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run pytest --update-golden"
    assert text == golden.read_text(encoding="utf-8")


def test_every_code_has_a_golden_file() -> None:
    covered = {c.stem.split("_", 1)[0] for c in CASES}
    assert set(CODES) <= covered, f"codes without a golden file: {sorted(set(CODES) - covered)}"
    assert covered <= set(CODES), f"golden files for unknown codes: {sorted(covered - set(CODES))}"


def test_the_language_reference_lists_every_code() -> None:
    text = (FIXTURES.parent.parent.parent / "docs" / "language.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in text.splitlines() if line.startswith("| E") or line.startswith("| W")}
    assert rows == CODES
