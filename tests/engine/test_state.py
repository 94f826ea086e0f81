"""The state store: one suite, run against SQLite and PostgreSQL (see the ``store_factory`` fixture)."""

from __future__ import annotations

import itertools
import socket
import sqlite3
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapsync.engine.config import Secret
from mapsync.engine.errors import ConfigError, LeaseHeld, StateError
from mapsync.engine.state import (
    LATEST_VERSION,
    BulkChunk,
    BulkLoad,
    DeadLetterStatus,
    KeyEntry,
    LeaseConflict,
    PendingWrite,
    StateStore,
    open_store,
)
from mapsync.engine.state.postgres import PostgresStore
from mapsync.engine.state.sqlite import SqliteStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def entry(key: str, target: str | None = None, **kw: object) -> KeyEntry:
    return KeyEntry(key, target if target is not None else f"t-{key}", **kw)  # type: ignore[arg-type]


# --- opening ----------------------------------------------------------------------------------------------


def test_a_new_store_is_migrated_to_the_latest_version(store: StateStore) -> None:
    assert store.schema_version == LATEST_VERSION
    assert "password" not in store.url and "pg-test-pw" not in store.url


def test_reopening_keeps_everything(store_factory) -> None:
    first = store_factory()
    first.set_cursor("contacts", "delta-1")
    first.put_keys("contacts", [entry("a")])
    first.close()
    again = store_factory()
    assert again.get_cursor("contacts").value == "delta-1"
    assert again.get_keys("contacts", ["a"])["a"].target_id == "t-a"


# --- cursors ----------------------------------------------------------------------------------------------


def test_cursor_round_trip(store_factory) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    assert store.get_cursor("contacts") is None
    store.set_cursor("contacts", "https://org/api/data/v9.2/contacts?$deltatoken=1")
    clock.advance(5)
    store.set_cursor("contacts", "https://org/api/data/v9.2/contacts?$deltatoken=2")
    cursor = store.get_cursor("contacts")
    assert cursor.value.endswith("deltatoken=2") and cursor.updated_at == T0 + timedelta(seconds=5)
    assert store.get_cursor("events") is None


# --- key map ----------------------------------------------------------------------------------------------


def test_key_map_put_get_replace_delete(store: StateStore) -> None:
    synced = T0 + timedelta(microseconds=7)
    store.put_keys("contacts", [entry("a", payload_hash="h1", created_by_mapsync=True, synced_at=synced), entry("b")])
    got = store.get_keys("contacts", ["a", "b", "missing", "a"])
    assert set(got) == {"a", "b"}
    assert got["a"] == KeyEntry("a", "t-a", "h1", True, synced, False)
    store.put_keys("contacts", [entry("a", "t-new", payload_hash="h2", deleted=True)])
    assert store.get_keys("contacts", ["a"])["a"] == KeyEntry("a", "t-new", "h2", False, None, True)
    assert store.delete_keys("contacts", ["a", "zzz"]) == 1
    assert store.get_keys("contacts", ["a", "b"]).keys() == {"b"}
    assert store.get_keys("contacts", []) == {} and store.delete_keys("contacts", []) == 0


def test_the_last_entry_for_a_key_wins_within_one_put(store: StateStore) -> None:
    assert store.put_keys("contacts", [entry("a", "t1"), entry("a", "t2")]) == 1
    assert store.get_keys("contacts", ["a"])["a"].target_id == "t2"


def test_flows_are_separate(store: StateStore) -> None:
    store.put_keys("contacts", [entry("k", "c")])
    store.put_keys("vehicles", [entry("k", "v")])
    assert store.get_keys("contacts", ["k"])["k"].target_id == "c"
    assert store.find_by_target("vehicles", "c") is None
    assert store.find_by_target("vehicles", "v").source_key == "k"
    assert store.count_keys("contacts") == 1


def test_iter_keys_reads_in_chunks_in_key_order(store: StateStore) -> None:
    keys = [f"k{i:03d}" for i in range(23)] + ["Zeta", "ä-umlaut", "émile", "日本"]
    store.put_keys("contacts", [entry(k) for k in reversed(keys)])
    assert [e.source_key for e in store.iter_keys("contacts", chunk=5)] == sorted(keys)  # code-point order
    assert store.count_keys("contacts") == len(keys)
    assert list(store.iter_keys("nothing")) == []


def test_pages_of_many_keys_in_one_call(store: StateStore) -> None:
    keys = [f"contact-{i}" for i in range(40_000)]  # beyond SQLite's bound-variable limit
    store.put_keys("contacts", [entry(k) for k in keys])
    got = store.get_keys("contacts", [*keys, "absent"])
    assert len(got) == 40_000 and got["contact-39999"].target_id == "t-contact-39999"
    assert store.delete_keys("contacts", keys[:35_000]) == 35_000
    assert store.count_keys("contacts") == 5_000


def test_clear_flow_forgets_keys_cursor_and_pending_but_keeps_history(store: StateStore) -> None:
    store.put_keys("contacts", [entry("a")])
    store.put_keys("vehicles", [entry("v")])
    store.set_cursor("contacts", "c")
    store.add_pending("contacts", [PendingWrite("a", "create")])
    store.add_dead_letter("contacts", "x", {"id": "x"}, "bad email")
    run = store.start_run("contacts")
    store.clear_flow("contacts")
    assert store.count_keys("contacts") == 0 and store.get_cursor("contacts") is None
    assert store.pending_writes("contacts") == []
    assert store.count_keys("vehicles") == 1
    assert len(store.open_dead_letters("contacts")) == 1 and store.last_run("contacts").id == run.id


# --- transactions -----------------------------------------------------------------------------------------


def test_transaction_commits_keys_and_cursor_together(store: StateStore) -> None:
    with store.transaction():
        store.put_keys("contacts", [entry("a"), entry("b")])
        with store.transaction():  # nested: joins the outer one
            store.set_cursor("contacts", "page-2")
    assert store.count_keys("contacts") == 2 and store.get_cursor("contacts").value == "page-2"


def test_transaction_rolls_back_everything_on_error(store: StateStore) -> None:
    store.set_cursor("contacts", "page-1")
    with pytest.raises(RuntimeError), store.transaction():
        store.put_keys("contacts", [entry("a")])
        store.set_cursor("contacts", "page-2")
        with store.transaction():
            store.set_meta("k", "v")
        raise RuntimeError("crash before commit")
    assert store.count_keys("contacts") == 0
    assert store.get_cursor("contacts").value == "page-1" and store.get_meta("k") is None
    store.put_keys("contacts", [entry("a")])  # the store is still usable
    assert store.count_keys("contacts") == 1


def test_a_reader_sees_only_committed_state_and_is_not_blocked(store_factory) -> None:
    writer, reader = store_factory(), store_factory(busy_timeout=0.5)
    writer.put_keys("contacts", [entry("old")])
    with writer.transaction():
        writer.put_keys("contacts", [entry("new")])
        # A blocked reader would wait out its busy timeout and raise "locked": reading at all is the check.
        assert set(reader.get_keys("contacts", ["old", "new"])) == {"old"}
        assert reader.count_keys("contacts") == 1
    assert set(reader.get_keys("contacts", ["old", "new"])) == {"old", "new"}


# --- dead letters -----------------------------------------------------------------------------------------


def test_dead_letters_upsert_by_flow_and_key(store_factory) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    first = store.add_dead_letter(
        "contacts", "c1", {"emailaddress1": "not-an-email", "n": 1}, "invalid email", field="email",
        mapping_file="mappings/contacts.map", mapping_line=12, mapping_version="abc123",
    )  # fmt: skip
    assert first.attempts == 1 and first.status is DeadLetterStatus.OPEN and first.first_seen == T0
    store.set_dead_letter_status(first.id, "retried")
    clock.advance(60)
    again = store.add_dead_letter("contacts", "c1", {"n": 2}, "still invalid", mapping_line=13)
    assert again.id == first.id and again.attempts == 2 and again.status is DeadLetterStatus.OPEN
    assert again.first_seen == T0 and again.last_seen == T0 + timedelta(seconds=60)
    assert again.record == {"n": 2} and again.reason == "still invalid" and again.mapping_line == 13
    assert store.get_dead_letter(first.id) == again and store.get_dead_letter(999_999) is None


def test_dead_letter_lists_and_resolution(store_factory) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    ids = []
    for key in ("a", "b", "c"):
        clock.advance(1)
        ids.append(store.add_dead_letter("contacts", key, {"k": key}, "bad").id)
    store.add_dead_letter("vehicles", "a", {}, "bad")
    assert [d.source_key for d in store.list_dead_letters(flow="contacts")] == ["c", "b", "a"]  # newest first
    assert len(store.list_dead_letters()) == 4 and len(store.list_dead_letters(limit=2)) == 2
    assert store.resolve_dead_letter(ids[0]).status is DeadLetterStatus.RESOLVED
    store.set_dead_letter_status(ids[1], DeadLetterStatus.RETRIED)
    assert [d.source_key for d in store.open_dead_letters("contacts")] == ["b", "c"]
    assert [d.source_key for d in store.list_dead_letters(flow="contacts", status="resolved")] == ["a"]
    assert store.resolve_dead_letters("contacts", ["b", "c", "a", "nope"]) == 2
    assert store.open_dead_letters("contacts") == [] and len(store.open_dead_letters("vehicles")) == 1
    with pytest.raises(StateError, match="no dead letter with id 424242"):
        store.resolve_dead_letter(424242)
    with pytest.raises(StateError, match="unknown dead-letter status 'done'"):
        store.list_dead_letters(status="done")


# --- runs -------------------------------------------------------------------------------------------------


def test_runs_start_finish_and_history(store_factory) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    assert store.last_run("contacts") is None
    first = store.start_run("contacts")
    assert first.outcome == "running" and first.finished_at is None and first.counts == {}
    clock.advance(90.5)
    counts = {"read": 10, "filtered": 1, "created": 5, "updated": 2, "unchanged": 1, "deleted": 0, "rejected": 1}
    done = store.finish_run(first.id, "ok", counts)
    assert done.counts == counts and done.duration_seconds == pytest.approx(90.5)
    assert done.finished_at == T0 + timedelta(seconds=90.5)
    second = store.start_run("contacts")
    store.start_run("vehicles")
    assert store.last_run("contacts").id == second.id
    assert [r.id for r in store.list_runs(flow="contacts")] == [second.id, first.id]
    assert len(store.list_runs()) == 3 and len(store.list_runs(limit=1)) == 1
    with pytest.raises(StateError, match="no run with id 31337"):
        store.finish_run(31337, "ok", {})


# --- pending writes ---------------------------------------------------------------------------------------


def test_pending_writes(store_factory) -> None:
    store = store_factory(clock=Clock())
    store.add_pending("contacts", [PendingWrite("b", "update", "h"), PendingWrite("a", "create")])
    store.add_pending("contacts", [PendingWrite("a", "delete")])
    assert store.pending_writes("contacts") == [PendingWrite("a", "delete", None, T0), PendingWrite("b", "update", "h", T0)]
    assert store.clear_pending("contacts", ["a", "x"]) == 1
    assert [p.source_key for p in store.pending_writes("contacts")] == ["b"]
    with pytest.raises(StateError, match="pending write operation"):
        store.add_pending("contacts", [PendingWrite("c", "upsert")])


# --- leases -----------------------------------------------------------------------------------------------


def test_lease_is_exclusive_until_it_expires(store_factory) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    lease = store.acquire_lease("contacts", "stage", "runner-1", 30)
    assert lease.holder == "runner-1" and lease.expires_at == T0 + timedelta(seconds=30)
    clock.advance(10)
    with pytest.raises(LeaseHeld) as info:
        store.acquire_lease("contacts", "stage", "runner-2", 30)
    assert isinstance(info.value, LeaseConflict) and info.value.holder == "runner-1"
    assert info.value.expires_at == T0 + timedelta(seconds=30)
    assert "'runner-1'" in str(info.value) and "in 20 s" in str(info.value)
    assert store.acquire_lease("contacts", "prod", "runner-2", 30).holder == "runner-2"  # other environment
    again = store.acquire_lease("contacts", "stage", "runner-1", 30)  # the holder may extend it
    assert again.acquired_at == T0 and again.expires_at == T0 + timedelta(seconds=40)
    clock.advance(40)  # expired: another runner takes over
    taken = store.acquire_lease("contacts", "stage", "runner-2", 30)
    assert taken.holder == "runner-2" and taken.acquired_at == clock.now
    with pytest.raises(LeaseHeld, match="runner-2"):
        store.renew_lease("contacts", "stage", "runner-1", 30)
    assert store.renew_lease("contacts", "stage", "runner-2", 60).expires_at == clock.now + timedelta(seconds=60)
    assert store.release_lease("contacts", "stage", "runner-1") is False
    assert store.release_lease("contacts", "stage", "runner-2") is True
    assert store.get_lease("contacts", "stage") is None
    with pytest.raises(StateError, match="no longer holds the lease"):
        store.renew_lease("contacts", "stage", "runner-2", 30)
    assert store.acquire_lease("contacts", "stage", "runner-3", 30).holder == "runner-3"


def test_two_runners_racing_for_a_lease_never_both_win(store_factory) -> None:
    runners = 4
    stores = [store_factory(busy_timeout=10) for _ in range(runners)]
    for round_ in range(8):
        flow = f"flow-{round_}"
        barrier = threading.Barrier(runners)
        winners: list[str] = []
        refused: list[str] = []

        def race(
            index: int,
            flow: str = flow,
            barrier: threading.Barrier = barrier,
            winners: list[str] = winners,
            refused: list[str] = refused,
        ) -> None:
            barrier.wait()
            try:
                winners.append(stores[index].acquire_lease(flow, "stage", f"runner-{index}", 30).holder)
            except LeaseHeld as exc:
                refused.append(exc.holder)  # type: ignore[attr-defined]

        threads = [threading.Thread(target=race, args=(i,)) for i in range(runners)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(winners) == 1, (winners, refused)
        assert refused == [winners[0]] * (runners - 1)
        assert stores[0].get_lease(flow, "stage").holder == winners[0]


# --- meta -------------------------------------------------------------------------------------------------


def test_meta(store: StateStore) -> None:
    assert store.get_meta("optout.cursor") is None
    store.set_meta("optout.cursor", "1")
    store.set_meta("optout.cursor", "2")
    store.set_meta("deferred.link.1", "x")
    store.set_meta("optout%_", "literal")
    assert store.get_meta("optout.cursor") == "2"
    assert store.list_meta("optout.") == {"optout.cursor": "2"}
    assert store.list_meta("optout%") == {"optout%_": "literal"}
    assert len(store.list_meta()) == 3
    assert store.delete_meta("optout.cursor") is True and store.delete_meta("optout.cursor") is False


# --- migrations -------------------------------------------------------------------------------------------


def _open_at(store_factory, version: int) -> StateStore:
    url = store_factory.url
    if store_factory.kind == "sqlite":
        return SqliteStore(url[len("sqlite:///") :], schema_version=version)
    return PostgresStore(url, password=store_factory.password, schema_version=version)


def test_an_old_store_is_migrated_on_open_and_keeps_its_data(store_factory) -> None:
    old = _open_at(store_factory, 1)
    assert old.schema_version == 1
    old.put_keys("contacts", [entry("a", payload_hash="h")])
    old.set_cursor("contacts", "cursor-v1")
    old.close()
    new = store_factory()
    assert new.schema_version == LATEST_VERSION
    assert new.get_keys("contacts", ["a"])["a"].payload_hash == "h"
    assert new.get_cursor("contacts").value == "cursor-v1"
    assert new.find_by_target("contacts", "t-a").source_key == "a"
    new.add_pending("contacts", [PendingWrite("b", "create")])  # a table version 2 added
    assert len(new.pending_writes("contacts")) == 1


def test_a_store_from_a_newer_mapsync_is_refused(store_factory) -> None:
    store = store_factory()
    with store.transaction():
        store._execute(  # written as a future mapsync would: there is no public way to do this
            "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
            (LATEST_VERSION + 1, "from the future", store._ts_in(T0)),
        )
    store.close()
    with pytest.raises(StateError, match=rf"newer mapsync \(schema version {LATEST_VERSION + 1}.*upgrade mapsync"):
        store_factory()


# --- key map model (hypothesis) ---------------------------------------------------------------------------

KEYS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=4)
ENTRIES = st.builds(
    KeyEntry,
    source_key=KEYS,
    target_id=st.none() | st.text(max_size=8).filter(lambda s: "\x00" not in s),
    payload_hash=st.none() | st.text("0123456789abcdef", min_size=1, max_size=16),
    created_by_mapsync=st.booleans(),
    synced_at=st.none() | st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    deleted=st.booleans(),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(ENTRIES, max_size=8)),
        st.tuples(st.just("get"), st.lists(KEYS, max_size=8)),
        st.tuples(st.just("delete"), st.lists(KEYS, max_size=5)),
        st.tuples(st.just("clear"), st.just([])),
    ),
    max_size=12,
)
_flows = itertools.count()


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS)
def test_key_map_behaves_like_a_dict(store: StateStore, ops: list[tuple[str, list]]) -> None:
    flow = f"prop-{next(_flows)}"  # one store serves every example: each gets its own flow
    model: dict[str, KeyEntry] = {}
    for op, arg in ops:
        if op == "put":
            store.put_keys(flow, arg)
            model.update({e.source_key: e for e in arg})
        elif op == "get":
            assert store.get_keys(flow, arg) == {k: model[k] for k in arg if k in model}
        elif op == "delete":
            assert store.delete_keys(flow, arg) == len({k for k in arg if k in model})
            for key in arg:
                model.pop(key, None)
        else:
            store.clear_flow(flow)
            model.clear()
    assert list(store.iter_keys(flow, chunk=3)) == [model[k] for k in sorted(model)]
    assert store.count_keys(flow) == len(model)


# --- volume (its speed is measured by `python -m bench.state`, not asserted here) ---------------------------


def test_put_and_get_of_100k_keys_in_pages(store: StateStore) -> None:
    n, page = 100_000, 2_000
    entries = [KeyEntry(f"contact-{i:07d}", f"profile-{i}", f"{i:016x}", True, T0) for i in range(n)]
    for start in range(0, n, page):
        store.put_keys("contacts", entries[start : start + page])
    found = 0
    for start in range(0, n, page):
        found += len(store.get_keys("contacts", [e.source_key for e in entries[start : start + page]]))
    assert found == n


# --- SQLite only: files that are not what they should be ---------------------------------------------------


def test_sqlite_creates_parent_folders_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "stage.sqlite"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_file_that_is_not_a_database_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "stage.sqlite"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StateError) as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value) and "not a readable mapsync state database" in str(info.value)
    assert f"mv {path} {path}.broken" in str(info.value)
    assert path.read_bytes() == before


def test_sqlite_database_of_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StateError, match="not a mapsync state store"):
        open_store(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["invoices"]


def test_sqlite_locked_by_another_writer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stage.sqlite'}"
    holder, waiter = open_store(url), open_store(url, busy_timeout=0.2)
    try:
        with holder.transaction():
            holder.put_keys("contacts", [entry("a")])
            started = time.monotonic()
            with pytest.raises(StateError) as info:
                waiter.put_keys("contacts", [entry("b")])
            assert time.monotonic() - started < 3
        assert "is locked by another process" in str(info.value) and str(tmp_path) in str(info.value)
        waiter.put_keys("contacts", [entry("b")])  # once the other writer is done, it goes through
        assert waiter.count_keys("contacts") == 2
    finally:
        holder.close()
        waiter.close()


def test_open_store_refuses_unknown_urls() -> None:
    with pytest.raises(ConfigError, match=r"unsupported state store URL 'mysql://u:\*\*\*@h/db'"):
        open_store("mysql://u:hunter2@h/db")
    with pytest.raises(ConfigError, match="has no file"):
        open_store("sqlite:///")


def test_store_opened_from_a_loaded_config(tmp_path: Path) -> None:
    from mapsync.engine.config import load_config

    (tmp_path / "mapsync.yaml").write_text("version: 1\nenvironments: {stage: {}}\n")
    env = load_config(tmp_path / "mapsync.yaml", environ={}).environment("stage")
    with open_store(env.state_url, password=env.state_password) as store:
        store.set_cursor("contacts", "c")
    assert (tmp_path / ".mapsync" / "stage.sqlite").is_file()


def test_memory_store_for_quick_tries() -> None:
    store = open_store("sqlite:///:memory:")
    store.put_keys("f", [entry("a")])
    assert store.count_keys("f") == 1


# --- PostgreSQL only --------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_wrong_password_is_a_state_error_without_the_password(postgres_server) -> None:
    with pytest.raises(StateError) as info:
        open_store(postgres_server.url(), password=Secret("wrong-pw-Zq7"))
    assert "cannot connect to the state store" in str(info.value) and "wrong-pw-Zq7" not in str(info.value)
    assert "password authentication failed" in str(info.value)


@pytest.mark.postgres
def test_postgres_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StateError, match=r"cannot connect to the state store postgresql://u:\*\*\*@127.0.0.1"):
        open_store(f"postgresql://u:secret-Zq7@127.0.0.1:{port}/db")


def test_opt_out_pairs_kept_as_json_buckets_in_meta_move_into_their_table_without_loss(store_factory) -> None:
    """A store written by schema version 3 kept each rule's pairs as JSON buckets in `meta`; migration 4 moves
    every readable pair into `optout_pairs` and leaves the rest of `meta` alone."""
    import json
    import zlib

    from mapsync.engine.optout import PairState, _PairStore

    email = {f"{i:08d}-0000-0000-0000-000000000000": PairState(
        i % 2 == 0, i % 3 == 0, None if i % 7 == 0 else i % 5 == 0, f"2024-05-01T10:{i % 60:02d}:00Z",
        None if i % 4 else "2024-05-02T00:00:00Z", None if i % 3 else f"@pkey{i}") for i in range(300)}
    sms = {"c-1": PairState(True, True, True, None, None, None)}
    old = _open_at(store_factory, 3)
    with old.transaction():
        for rule, states in (("email", email), ("sms", sms)):
            buckets: dict[str, dict[str, list[object]]] = {}
            for key, state in states.items():  # exactly what the bucket store wrote (v1, 0/1 booleans)
                buckets.setdefault(f"{zlib.crc32(key.encode()) % 4096:03x}", {})[key] = state.encode()
            for bucket, pairs in buckets.items():
                old.set_meta(f"optout:{rule}:pairs:{bucket}", json.dumps({"v": 1, "p": pairs}, separators=(",", ":")))
        old.set_meta("optout:email:pairs:fff", "not json")  # unreadable then, kept as it was
        old.set_meta("optout:legacy:pairs:001", json.dumps({"v": 1, "p": {"short": [1]}}))  # an older, shorter row
        old.set_meta("links:contacts:generation", "4")
    old.close()

    new = store_factory()
    assert new.schema_version == LATEST_VERSION
    assert _PairStore(new, "email").load() == email
    assert _PairStore(new, "sms").load() == sms
    assert _PairStore(new, "legacy").load() == {"short": PairState(True)}
    assert new.list_meta("optout:") == {"optout:email:pairs:fff": "not json"}
    assert new.get_meta("links:contacts:generation") == "4"


def test_a_bulk_load_and_its_files_keep_their_stages(store_factory) -> None:
    clock = Clock()
    store = store_factory(clock=clock)
    assert store.bulk_load("contacts") is None
    load = store.put_bulk_load(BulkLoad("contacts", "run1", "writing"))
    store.put_bulk_chunks([BulkChunk("contacts", "run1", n, f"f{n}.csv", "written", 10) for n in (2, 1)])
    clock.advance(5)
    store.put_bulk_load(replace(load, stage="signalled", cursor="delta-1", rows=20, signalled_at=clock.now))
    store.put_bulk_chunks([BulkChunk("contacts", "run1", 1, "f1.csv", "imported", 10, 9, 1)])
    got = store.bulk_load("contacts")
    assert got is not None and (got.stage, got.cursor, got.rows, got.signalled_at) == ("signalled", "delta-1", 20,
                                                                                      clock.now)
    assert got.started_at == T0  # the same load: it keeps its start
    chunks = store.bulk_chunks("contacts", "run1")
    assert [(c.chunk, c.stage, c.imported, c.rejected) for c in chunks] == [(1, "imported", 9, 1),
                                                                           (2, "written", None, None)]
    # A new run id replaces the load and its files.
    store.put_bulk_load(BulkLoad("contacts", "run2", "writing"))
    assert store.bulk_chunks("contacts", "run1") == [] and store.bulk_load("contacts").started_at == clock.now
    store.clear_flow("contacts")  # a replay forgets the load too
    assert store.bulk_load("contacts") is None
