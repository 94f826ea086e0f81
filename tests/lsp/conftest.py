"""One language server per test module, on a copy of the fixture project (tests/fixtures/lsp/project)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapsync.engine.commands.validate import validate
from tests.lsp.session import Session

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "lsp" / "project"
FILES = ("people.map", "cars.map", "shared.map")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lsp")
    shutil.copytree(FIXTURE, root / "project")
    return root


@pytest.fixture(scope="module")
def session(workspace: Path) -> Iterator[Session]:
    s = Session(workspace)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh(session: Session, workspace: Path) -> Iterator[Session]:
    """The session with no document open and the fixture files as shipped, before and after the test."""
    for name in FILES:
        shutil.copy(FIXTURE / name, workspace / "project" / name)
    yield session
    for uri in list(session.versions):
        session.close_doc("project/" + uri.rsplit("/project/", 1)[1])
    for name in FILES:
        shutil.copy(FIXTURE / name, workspace / "project" / name)


def validate_json(root: Path, folder: str = "project", *, cli: bool = False) -> dict[str, list[dict[str, object]]]:
    """`mapsync validate FOLDER --format json` run in ``root`` (as the server is), grouped by file URI.

    In process by default (the function the command runs); ``cli=True`` runs the command itself.
    """
    if cli:
        done = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "validate", folder, "--format", "json"],
                              cwd=root, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 1), done.stderr
        out = io.StringIO(done.stdout)
    else:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.chdir(root):
            validate([Path(folder)], fmt="json", out=out, err=err)
    grouped: dict[str, list[dict[str, object]]] = {(root / folder / n).resolve().as_uri(): []
                                                   for n in FILES}
    for d in json.loads(out.getvalue()):
        grouped.setdefault((root / str(d["file"])).resolve().as_uri(), []).append(d)
    return grouped


def as_validate(session: Session) -> dict[str, list[dict[str, object]]]:
    """The session's diagnostics in `validate --format json`'s shape (ASCII fixtures: columns are characters)."""
    out: dict[str, list[dict[str, object]]] = {}
    for uri, found in session.diagnostics.items():
        rows = []
        for d in found:
            message, _, hint = d.message.partition("\nhint: ")
            assert (d.data or {}).get("hint") == (hint or None)
            rows.append({"code": d.code, "severity": "error" if d.severity == 1 else "warning", "message": message,
                         "hint": hint or None, "line": d.range.start.line + 1, "column": d.range.start.character + 1,
                         "end_line": d.range.end.line + 1, "end_column": d.range.end.character + 1})
        out[uri] = sorted(rows, key=lambda r: (r["line"], r["column"], r["code"]))
    return out


def comparable(grouped: dict[str, list[dict[str, object]]]) -> dict[str, list[dict[str, object]]]:
    return {uri: sorted(({k: v for k, v in d.items() if k != "file"} for d in rows),
                        key=lambda r: (r["line"], r["column"], r["code"]))
            for uri, rows in grouped.items()}
