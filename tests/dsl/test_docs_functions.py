"""docs/functions.md is generated from dsl/functions.py; this fails when the two drift apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mapsync.dsl.functions import FUNCTIONS, render_markdown

REGENERATE = ".venv/bin/python -m mapsync.dsl.functions --markdown > docs/functions.md"


def test_committed_reference_matches_the_docstrings(project_root: Path) -> None:
    committed = (project_root / "docs" / "functions.md").read_text(encoding="utf-8")
    assert committed == render_markdown(), f"docs/functions.md is out of date; regenerate it with: {REGENERATE}"


def test_reference_documents_every_function() -> None:
    text = render_markdown()
    for name, spec in FUNCTIONS.items():
        assert f"\n## {name}\n" in text and f"`{spec.signature()}`" in text


def test_command_line_prints_the_reference(project_root: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mapsync.dsl.functions", "--markdown"], cwd=project_root,
                          capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout == render_markdown()
    usage = subprocess.run([sys.executable, "-m", "mapsync.dsl.functions"], cwd=project_root,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
