"""The bulk load's staging file: a batch of rows is stored whole or not at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mapsync.engine.bulk.staging import Staging


def test_a_batch_that_fails_part_way_stores_none_of_its_rows(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "rows.sqlite")
    staging.add("a", "h1", True, True, 1)
    staging.flush()
    staging.add("b", "h2", True, True, 1)
    staging.add("c", "h3", True, True, 1)
    staging._pending.append(("d", "h4", None, 1, 1, 0))  # type: ignore[arg-type]  # violates NOT NULL (ours)
    with pytest.raises(sqlite3.IntegrityError):
        staging.flush()
    staging._pending.clear()
    assert set(staging.lookup(["a", "b", "c", "d"])) == {"a"}
    assert staging.count() == (1, 0)
    staging.close()


def test_rows_flushed_in_one_batch_survive_a_reopen(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "rows.sqlite")
    for n in range(12_000):  # more than one automatic flush
        staging.add(f"k{n}", f"h{n}", n % 2 == 0, n % 3 == 0, n // 5000 + 1)
    staging.close()
    again = Staging(tmp_path / "rows.sqlite")
    assert again.count() == (4000, 8000)
    found = again.lookup(["k0", "k11999"])
    assert found["k0"].hash == "h0" and found["k0"].ours and found["k0"].creates and found["k0"].chunk == 1
    assert found["k11999"].hash == "h11999" and not found["k11999"].ours and found["k11999"].chunk == 3
    again.close()
