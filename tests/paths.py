"""Where the tests find their inputs.

The product's tests run on a fixture project of their own (``tests/fixtures/project``: the four use cases
and the snapshots they were written against), never on the repository's ``mappings/`` — those are the
consultant's, checked only the way a consultant's are (``tests/test_shipped.py``), so adding a flow or a
snapshot there cannot turn the product's tests red.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PROJECT = ROOT / "tests" / "fixtures" / "project"
FIXTURE_MAPPINGS = FIXTURE_PROJECT / "mappings"
FIXTURE_SNAPSHOTS = FIXTURE_PROJECT / "snapshots"
