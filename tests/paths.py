"""Where the tests find their inputs.

The product's tests run on a fixture project of their own (``tests/fixtures/project``: the four use cases
and the snapshots they were written against), never on the repository's ``mappings/`` — those are the
consultant's, checked only the way a consultant's are (``tests/test_shipped.py``), so adding a flow or a
snapshot there cannot turn the product's tests red.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PROJECT = ROOT / "tests" / "fixtures" / "project"
FIXTURE_MAPPINGS = FIXTURE_PROJECT / "mappings"
FIXTURE_SNAPSHOTS = FIXTURE_PROJECT / "snapshots"


def copy_repository(to: Path) -> None:
    """The repository's files as git sees them (tracked and new, not ignored), symlinks kept as links."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in git
        target = to / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
