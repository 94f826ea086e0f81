"""The files of a bulk load: the rows the REST path would send, in the CSV form the import workflow reads."""

from __future__ import annotations

import csv
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.engine.bulk.files import ChunkFile, ChunkWriter, cell, file_mask, file_name, flatten, read_rows
from mapsync.engine.bulk.imports import parse_done, parse_rejects, rejected_field
from mapsync.engine.bulk.staging import Staging


def read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_names_carry_the_flow_the_run_and_the_chunk_and_the_mask_matches_only_them() -> None:
    import fnmatch

    name = file_name("contacts", "20261129T0612Z-3fa9", 7)
    assert name == "mapsync_contacts_20261129T0612Z-3fa9_00007.csv"
    assert fnmatch.fnmatch(name, file_mask("contacts", "20261129T0612Z-3fa9"))
    assert not fnmatch.fnmatch(file_name("contacts", "20261129T0612Z-0000", 7), file_mask("contacts", "20261129T0612Z-3fa9"))


def test_cells_are_plain_text_the_import_reads() -> None:
    assert [cell(v) for v in (None, True, False, 12, 0.1, 1e-7, 2.0, "a,b")] == [
        "", "true", "false", "12", "0.1", "0.0000001", "2", "a,b"]


def test_nested_fields_are_dotted_columns_in_payload_order() -> None:
    assert list(flatten({"email": "a@x", "location": {"city": "Paris", "zip": None}, "x": {}})) == [
        ("email", "a@x"), ("location.city", "Paris"), ("location.zip", None), ("x", {})]


def test_rows_go_in_chunks_of_the_configured_size_key_column_first(tmp_path: Path) -> None:
    closed: list[ChunkFile] = []
    writer = ChunkWriter(tmp_path, "contacts", "r1", "externalId", 2, closed.append)
    for n in range(5):
        writer.add(f"k{n}", {"email": f"{n}@x", "location": {"city": "Lyon, FR"}})
    writer.close()
    assert [(c.chunk, c.rows) for c in closed] == [(1, 2), (2, 2), (3, 1)]
    assert read(closed[0].path) == [["externalId", "email", "location.city"], ["k0", "0@x", "Lyon, FR"],
                                    ["k1", "1@x", "Lyon, FR"]]
    assert read_rows(closed[1].path, {2}) == {2: {"externalId": "k3", "email": "3@x", "location.city": "Lyon, FR"}}


def test_a_row_without_a_field_never_shares_a_file_that_would_empty_it(tmp_path: Path) -> None:
    closed: list[ChunkFile] = []
    writer = ChunkWriter(tmp_path, "contacts", "r1", "externalId", 100, closed.append)
    writer.add("new", {"email": "a@x", "cusSource": "dynamics365"})  # a create carries its `once` field
    writer.add("old", {"email": "b@x"})  # an update leaves it out: its file has no such column
    writer.close()
    by_chunk = {c.chunk: read(c.path) for c in closed}
    assert by_chunk == {1: [["externalId", "email", "cusSource"], ["new", "a@x", "dynamics365"]],
                        2: [["externalId", "email"], ["old", "b@x"]]}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.one_of(st.none(), st.text(max_size=20),
                                                                     st.integers(), st.booleans())),
                min_size=1, max_size=40, unique_by=lambda t: t[0]))
def test_every_value_reads_back_as_written(rows: list[tuple[str, object]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        closed: list[ChunkFile] = []
        writer = ChunkWriter(Path(folder), "f", "r", "k", 7, closed.append)
        for key, value in rows:
            writer.add(key, {"v": value})
        writer.close()
        back = [row for c in sorted(closed, key=lambda c: c.chunk) for row in read(c.path)[1:]]
        assert back == [[key, cell(value)] for key, value in rows]


def test_done_and_rejects_are_read_as_the_workflow_writes_them() -> None:
    done = parse_done(b'{"file": "f.csv", "imported": 9, "rejected": 1, "created": 8, "updated": 1}')
    assert (done.imported, done.rejected, done.created, done.updated) == (9, 1, 8, 1)
    rejects = parse_rejects(b"line,key,reason\n3,k3,\"field 'email' is too long (max 64)\"\n5,,missing key\n")
    assert [(r.line, r.key, r.reason) for r in rejects] == [(3, "k3", "field 'email' is too long (max 64)"),
                                                            (5, "", "missing key")]
    assert rejected_field(rejects[0].reason) == "email" and rejected_field("missing key") is None


def test_staging_finds_imported_rows_and_leaves_out_rejected_ones(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "rows.sqlite")
    for n in range(3):
        staging.add(f"k{n}", f"h{n}", True, n != 2, 1)
    staging.reject(["k1"])
    found = staging.lookup(["k0", "k1", "other"])
    assert set(found) == {"k0"} and found["k0"].hash == "h0"
    assert [r.key for r in staging.unseen()] == ["k2"]
    assert staging.count() == (1, 1)
    staging.close()
    again = Staging(tmp_path / "rows.sqlite")  # it outlives the process that wrote it
    assert set(again.lookup(["k0", "k2"])) == {"k0", "k2"}
    again.close()
