"""A consultant's change to ``mappings/`` and ``schemas/snapshots/`` keeps ``make test`` green as long as the
change validates and its cases pass: on a copy of the repository with a new flow (memberships), its
snapshots and its cases, the suite's checks of the shipped project still pass."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import ROOT, copy_repository

MEMBERSHIP = ROOT / "tests" / "fixtures" / "membership"


@pytest.mark.slow
def test_a_new_flow_and_its_snapshots_keep_the_suite_green(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test copies the repository through git: run it from a git checkout")
    copy = tmp_path / "repo"
    copy_repository(copy)
    shutil.copytree(MEMBERSHIP, copy, dirs_exist_ok=True)
    # A replacement too: the consultant's replacements.map grows a case.
    replacements = copy / "mappings" / "replacements.map"
    replacements.write_text(replacements.read_text(encoding="utf-8") +
                            "\nreplace tiers {\n  \"Gold\" => \"GOLD\"\n  else => \"STANDARD\"\n}\n", encoding="utf-8")
    env = {**os.environ, "NO_COLOR": "1"}
    run = [sys.executable, "-m", "mapsync"]
    for command in (["fmt", "mappings/"], ["validate", "mappings/"], ["test", "mappings/"]):
        done = subprocess.run([*run, *command], cwd=copy, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    own = subprocess.run([*run, "test", "mappings/memberships.test.yaml"], cwd=copy, env=env, capture_output=True,
                         text=True, timeout=120)
    assert "3 cases: 3 passed, 0 failed" in own.stdout, own.stdout + own.stderr
    # Every test that reads the repository's own mappings/ or snapshots carries the `shipped` mark.
    suite = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-m", "shipped", "-q", "-p", "no:cacheprovider",
                            "-x", "tests"], cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    assert re.search(r"\b[1-9][0-9]* passed", suite.stdout), suite.stdout[-2000:]
