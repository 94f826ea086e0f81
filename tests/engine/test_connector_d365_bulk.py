"""Bulk messages through the Dataverse connector, against the emulator in-process: discovery, bisection of
whole-request failures, adoption of rows already written, the `$batch` fallback; and the invariants of the
bisection itself (hypothesis): every row is either written once or dead-lettered once."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.emulators.server import Emulator
from mapsync.engine.connectors.base import WriteOp, WriteOutcome
from mapsync.engine.connectors.d365_bulk import BulkRow, bisect_write
from mapsync.engine.errors import ConnectorError, TerminalError, TransientError
from mapsync.engine.http import AttemptRecord
from tests.engine.test_connector_d365 import make


def _creates(n: int, *, table: str = "acs_emailsend", prefix: str = "evt") -> list[WriteOp]:
    return [WriteOp("create", table, {"subject": f"Sent {i}"}, alternate_key=("acs_eventid", f"{prefix}-{i}"), ref=i)
            for i in range(n)]


def _paths(records: Sequence[AttemptRecord]) -> list[str]:
    """``METHOD path`` of each attempt, the path after the API root (the HTTP layer never logs queries)."""
    return [f"{r.method} {r.path.split('/api/data/v9.2/', 1)[-1]}" for r in records]


@pytest.mark.parametrize("bad", [[517], [3, 498, 999]])
def test_bisection_isolates_the_bad_rows_among_1000(bad: list[int]) -> None:
    emulator = Emulator(contacts=5, faults="none")
    conn, records = make(emulator)
    ops = _creates(1000)
    ops[bad[0]] = WriteOp("create", "acs_emailsend", {"subject": "x" * 201}, alternate_key=("acs_eventid", f"evt-{bad[0]}"),
                          ref=bad[0])  # too long: Dataverse refuses this row
    emulator.setup.update({"reject_rows": {"acs_emailsend": [f"evt-{i}" for i in bad[1:]]}})  # a plug-in refuses these

    async def scenario() -> list[WriteOutcome]:
        outcomes = await conn.write(ops)
        await conn.http.aclose()
        return outcomes

    outcomes = asyncio.run(scenario())
    failed = {o.ref: o for o in outcomes if not o.ok}
    assert sorted(failed) == bad
    assert failed[bad[0]].code == "0x80044331" and "'subject'" in (failed[bad[0]].message or "")
    assert all(failed[i].code == "0x80040265" and f"evt-{i}" in (failed[i].message or "") for i in bad[1:])
    assert not any(o.transient for o in failed.values())
    rows = {r["acs_eventid"]: r["activityid"] for r in emulator.dataverse.store.rows("acs_emailsend")}
    assert len(rows) == emulator.dataverse.store.count("acs_emailsend") == 1000 - len(bad)  # none twice
    assert all(rows[f"evt-{o.ref}"] == o.target_id for o in outcomes if o.ok)
    paths = _paths(records)
    assert not any("$batch" in p for p in paths)
    sent = sum(1 for p in paths if p.endswith("CreateMultiple"))
    assert sent <= 1 + 2 * len(bad) * 10  # each bad row costs at most two requests per halving (log2 1000 < 10)
    assert sum(1 for p in paths if p == "GET sdkmessagefilters") == 1


def test_rows_already_written_are_adopted_not_made_twice() -> None:
    """A resend of a request whose reply was lost, or of a page a killed run never recorded: the duplicate-key
    failure is answered by one lookup per 50 keys, not by splitting."""
    emulator = Emulator(contacts=5, faults="none")
    conn, records = make(emulator)

    async def scenario() -> tuple[list[WriteOutcome], list[WriteOutcome]]:
        first = await conn.write(_creates(600))
        records.clear()
        again = await conn.write(_creates(1000))  # the first 600 again, 400 new
        await conn.http.aclose()
        return first, again

    first, again = asyncio.run(scenario())
    assert all(o.ok for o in first + again)
    assert [o.target_id for o in again[:600]] == [o.target_id for o in first]
    rows = [r["acs_eventid"] for r in emulator.dataverse.store.rows("acs_emailsend")]
    assert len(rows) == len(set(rows)) == 1000
    paths = _paths(records)
    assert sum(1 for p in paths if p.endswith("CreateMultiple")) == 2  # the failed one, then the 400 new rows
    assert paths.count("GET acs_emailsends") == 1000 // 50  # which of the 1,000 exist: 50 keys per query


def test_without_the_message_writes_go_in_batch_as_before() -> None:
    emulator = Emulator(contacts=5, faults="none")
    emulator.setup.update({"messages": {"remove": ["acs_emailsend:CreateMultiple"]},
                           "reject_rows": {"acs_emailsend": ["evt-7"]}})
    conn, records = make(emulator)

    async def scenario() -> list[WriteOutcome]:
        outcomes = await conn.write(_creates(300))
        outcomes += await conn.write(_creates(300, prefix="more"))
        await conn.http.aclose()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [o.ref for o in outcomes if not o.ok] == [7]
    assert emulator.dataverse.store.count("acs_emailsend") == 599
    paths = _paths(records)
    assert not any(p.endswith("CreateMultiple") for p in paths) and paths.count("POST $batch") == 6
    assert sum(1 for p in paths if p == "GET sdkmessagefilters") == 1  # asked once for the connector's run


def test_few_writes_and_updates_stay_in_batch_and_upserts_go_through_upsert_multiple() -> None:
    emulator = Emulator(contacts=5, faults="none")
    conn, records = make(emulator)
    ids = [str(uuid.UUID(int=7 * 10**6 + i)) for i in range(200)]

    async def scenario() -> None:
        few = await conn.write(_creates(10))
        assert all(o.ok for o in few)
        upserts = [WriteOp("upsert", "contact", {"lastname": f"Up{i}"}, target_id=ids[i], ref=i) for i in range(200)]
        assert all(o.ok and o.target_id == ids[o.ref] for o in await conn.write(upserts))
        assert all(o.ok for o in await conn.write(upserts))  # upserting again changes, never duplicates
        await conn.http.aclose()

    asyncio.run(scenario())
    paths = _paths(records)
    assert paths.count("POST $batch") == 1 and sum(1 for p in paths if p.endswith("UpsertMultiple")) == 2
    contacts = [r["contactid"] for r in emulator.dataverse.store.rows("contact")]
    assert len(contacts) == len(set(contacts)) == 205 and set(ids) <= set(contacts)


def test_hostile_faults_lose_and_duplicate_no_bulk_row() -> None:
    emulator = Emulator(contacts=5, faults="hostile")
    conn, _ = make(emulator, concurrency=4)
    conn.bulk_size = 50  # enough requests for the faults to hit a good many

    async def scenario() -> list[WriteOutcome]:
        outcomes = await conn.write(_creates(3000))
        await conn.http.aclose()
        return outcomes

    outcomes = asyncio.run(scenario())
    rows = {r["acs_eventid"]: r["activityid"] for r in emulator.dataverse.store.rows("acs_emailsend")}
    assert len(rows) == emulator.dataverse.store.count("acs_emailsend")  # none twice
    for o in outcomes:  # a row is written exactly when its outcome says so (transient: left for the writer)
        assert (f"evt-{o.ref}" in rows) if o.ok else (o.transient or f"evt-{o.ref}" not in rows)
        if o.ok:
            assert rows[f"evt-{o.ref}"] == o.target_id
    assert sum(emulator.dataverse_faults.counts.values()) > 0


# -- the bisection's invariants, on a model of a standard table ---------------------------------------------


class ModelTable:
    """A table with a unique key, written by bulk requests that are one transaction each."""

    def __init__(self, bad: set[int], written: set[int], lost: list[bool]) -> None:
        self.bad = bad
        self.rows: dict[int, str] = {k: f"id-{k}" for k in written}
        self.commits: dict[int, int] = {}
        self.lost = lost  # per request: the reply is lost after the transaction committed

    async def send(self, rows: Sequence[BulkRow]) -> list[str | None] | ConnectorError:
        for r in rows:
            key = r.op.ref
            if key in self.bad:
                return TerminalError(f"row {key} refused", service="d365", status=400, code="0x80040265")
            if key in self.rows:
                return TerminalError("duplicate", service="d365", status=400, code="0x80060892")
        for r in rows:
            self.rows[r.op.ref] = f"id-{r.op.ref}"
            self.commits[r.op.ref] = self.commits.get(r.op.ref, 0) + 1
        if self.lost and self.lost.pop(0):
            return TransientError("reply lost", service="d365", status=None)
        return [self.rows[r.op.ref] for r in rows]

    async def adopt(self, rows: Sequence[BulkRow]) -> dict[int, str]:
        return {r.index: self.rows[r.op.ref] for r in rows if r.op.ref in self.rows}

    async def single(self, row: BulkRow, error: ConnectorError) -> WriteOutcome:
        if error.code == "0x80060892" and row.op.ref in self.rows:
            return WriteOutcome(row.op.ref, True, self.rows[row.op.ref])
        return WriteOutcome(row.op.ref, False, code=error.code, message=str(error))


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=300).flatmap(lambda n: st.tuples(
    st.just(n), st.sets(st.integers(0, n - 1), max_size=8), st.sets(st.integers(0, n - 1), max_size=20),
    st.lists(st.booleans(), max_size=12))))
def test_every_row_is_written_once_or_dead_lettered_once(case: tuple[int, set[int], set[int], list[bool]]) -> None:
    n, bad, written, lost = case
    written -= bad
    table = ModelTable(bad, written, lost)
    rows = [BulkRow(i, WriteOp("create", "t", {}, alternate_key=("k", str(i)), ref=i), {}) for i in range(n)]
    final: dict[int, WriteOutcome] = {}
    pending = rows
    for _round in itertools.count():
        assert _round <= len(lost) + 1  # every lost reply costs at most one more round
        outcomes = asyncio.run(bisect_write(pending, table.send, table.adopt, table.single))
        assert sorted(i for i, _ in outcomes) == sorted(r.index for r in pending)  # one outcome per row
        retry = {i for i, o in outcomes if o.transient}
        final.update((i, o) for i, o in outcomes if not o.transient)
        pending = [r for r in pending if r.index in retry]
        if not pending:
            break
    assert sorted(final) == list(range(n))
    assert {i for i, o in final.items() if not o.ok} == bad  # dead-lettered: exactly the bad rows, once each
    assert all(final[i].ok and final[i].target_id == table.rows[i] for i in range(n) if i not in bad)
    assert set(table.rows) == set(range(n)) - bad  # every good row written, no bad one
    assert all(count == 1 for count in table.commits.values())  # none written twice
    assert not set(table.commits) & written  # rows written before were adopted, not written again
