"""The repository's own ``mappings/`` and ``schemas/snapshots/`` are checked exactly as a consultant's are:
they validate, are in the canonical layout, and their test cases pass. Nothing else in the suite reads
them, so a new flow, replacement or snapshot keeps ``make test`` green as long as these three hold
(``tests/packaging/test_consultant_changes.py`` proves it on a copy of the repository)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.paths import ROOT

pytestmark = pytest.mark.shipped


@pytest.mark.parametrize("command", [
    ["validate", "mappings/"],
    ["fmt", "--check", "mappings/"],
    ["test", "mappings/"],
], ids=["validate", "fmt-check", "test"])
def test_the_shipped_mappings_pass_the_consultants_checks(command: list[str]) -> None:
    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "mapsync", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
