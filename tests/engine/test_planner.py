"""The record planner on plain records: no HTTP, no state store, no compiled mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl.runtime import Filtered, LinkRef, Mapped, Outcome, Rejected
from mapsync.engine.planner import (
    DEFERRAL_LIMIT,
    FlowRules,
    Op,
    evaluate_page,
    payload_hash,
    plan_gone,
    plan_page,
    wanted_links,
)
from mapsync.engine.state.base import KeyEntry

KEY = "id"


def transform(row: Mapping[str, Any]) -> Outcome:
    """A flow in miniature: `where active`, `name = name`, `owner = link(owner, owners)` when the row has one."""
    key = str(row[KEY])
    if not row.get("active", True):
        return Filtered("people", key)
    if row.get("name") == "bad":
        return Rejected("people", key, "name is bad", "name", "people.map", 7)
    refs = (LinkRef("owner", "owners", str(row["owner"]), 9),) if row.get("owner") is not None else ()
    return Mapped("people", key, {"name": row.get("name")}, refs)


def reference(payload: dict[str, Any], path: str, table: str, target_id: str) -> None:
    payload[path] = {"table": table, "id": target_id}


def plan(rows: list[dict[str, Any]], *, rules: FlowRules | None = None, known: Mapping[str, KeyEntry] | None = None,
         owners: Mapping[str, KeyEntry] | None = None, deleted: tuple[str, ...] = (),
         attempts: Mapping[str, int] | None = None) -> Any:
    page = evaluate_page(rows, KEY, transform)
    return plan_page(rules or FlowRules("people"), page, deleted, known=known or {}, linked={"owners": owners or {}},
                     reference=reference, link_tables={"owners": "owner"}, attempts=attempts)


def written(rows: list[dict[str, Any]]) -> dict[str, KeyEntry]:
    """The key map after every row of ``rows`` was written once."""
    page = evaluate_page(rows, KEY, transform)
    return {k: KeyEntry(k, f"t-{k}", payload_hash(o.payload), True) for k, _, o in page.records
            if isinstance(o, Mapped) and not o.refs}


# ------------------------------------------------------------------------------------------- examples


def test_a_new_record_is_created_and_a_known_changed_one_updated() -> None:
    known = {"2": KeyEntry("2", "t-2", payload_hash({"name": "old"}), True)}
    result = plan([{KEY: 1, "name": "a"}, {KEY: 2, "name": "b"}], known=known)
    assert [(w.op, w.key, w.target_id) for w in result.writes] == [(Op.CREATE, "1", None), (Op.UPDATE, "2", "t-2")]
    assert result.writes[0].hash == payload_hash({"name": "a"})


def test_update_mode_finds_records_it_does_not_know_instead_of_creating_them() -> None:
    result = plan([{KEY: 1, "name": "a"}], rules=FlowRules("people", mode="update"))
    assert [w.op for w in result.writes] == [Op.FIND_UPDATE]


def test_create_mode_never_touches_what_it_wrote() -> None:
    known = {"1": KeyEntry("1", "t-1", payload_hash({"name": "old"}), True)}
    result = plan([{KEY: 1, "name": "new"}], rules=FlowRules("people", mode="create"), known=known)
    assert result.writes == () and result.unchanged == 1


def test_a_rejected_record_is_a_dead_letter_pointing_at_its_mapping_line() -> None:
    result = plan([{KEY: 1, "name": "bad"}])
    [dead] = result.dead
    assert (dead.key, dead.reason, dead.field, dead.file, dead.line) == ("1", "name is bad", "name", "people.map", 7)
    assert result.rejected == 1 and result.writes == ()


def test_a_filtered_record_is_removed_only_under_on_filtered_delete() -> None:
    known = {"1": KeyEntry("1", "t-1", "h", True)}
    kept = plan([{KEY: 1, "active": False}], known=known)
    assert kept.writes == () and kept.filtered == 1 and kept.settled == ("1",)
    removed = plan([{KEY: 1, "active": False}], known=known, rules=FlowRules("people", on_filtered="delete"))
    assert [(w.op, w.target_id, w.relinks) for w in removed.writes] == [(Op.DELETE, "t-1", True)]


def test_a_link_is_written_in_the_targets_form() -> None:
    owners = {"o1": KeyEntry("o1", "owner-guid", "h", True)}
    [write] = plan([{KEY: 1, "name": "a", "owner": "o1"}], owners=owners).writes
    assert write.payload == {"name": "a", "owner": {"table": "owner", "id": "owner-guid"}}


def test_a_link_that_never_resolves_becomes_a_dead_letter_for_good() -> None:
    result = plan([{KEY: 1, "name": "a", "owner": "o1"}], attempts={"1": DEFERRAL_LIMIT - 1})
    [deferral] = result.deferred
    assert deferral.final and deferral.link.flow == "owners" and result.writes == ()


def test_on_delete_set_updates_and_marks_the_entry_deleted() -> None:
    known = {"1": KeyEntry("1", "t-1", "h", False)}
    rules = FlowRules("people", on_delete="set", on_delete_values={"state": "gone"})
    [write] = plan([], rules=rules, known=known, deleted=("1",)).writes
    assert (write.op, write.payload, write.target_id, write.tombstone) == (Op.UPDATE, {"state": "gone"}, "t-1", True)


def test_a_record_mapsync_did_not_create_is_only_forgotten() -> None:
    known = {"1": KeyEntry("1", "t-1", "h", False)}
    [write] = plan([], rules=FlowRules("people", on_delete="delete"), known=known, deleted=("1",)).writes
    assert write.op is Op.FORGET


def test_a_mirror_refuses_to_delete_more_than_max_deletes() -> None:
    class Limit:
        value, percent = 1.0, False

    gone = [KeyEntry(k, f"t-{k}", "h", True) for k in ("1", "2")]
    rules = FlowRules("people", mode="mirror")
    try:
        plan_gone(rules, gone, total=10, max_deletes=Limit())
    except Exception as exc:
        assert "would delete 2 of 10 records" in str(exc)
    else:
        raise AssertionError("a mirror deleted more than max deletes allows")
    assert [w.op for w in plan_gone(rules, gone[:1], total=10, max_deletes=Limit())] == [Op.DELETE]


def test_wanted_links_names_the_linked_keys_of_the_page() -> None:
    page = evaluate_page([{KEY: 1, "owner": "a"}, {KEY: 2, "owner": "b"}, {KEY: 3}], KEY, transform)
    assert wanted_links(page) == {"owners": {"a", "b"}}


# ------------------------------------------------------------------------------------------- properties

rows_strategy = st.lists(st.fixed_dictionaries({
    KEY: st.integers(0, 12),
    "name": st.sampled_from(["a", "b", "c", "bad"]),
    "active": st.booleans(),
    "owner": st.none() | st.sampled_from(["o1", "o2"]),
}), max_size=30)
rules_strategy = st.builds(FlowRules, st.just("people"), st.sampled_from(["upsert", "create", "update", "mirror"]),
                           st.sampled_from(["ignore", "delete"]), st.sampled_from(["ignore", "delete", "set"]),
                           st.just({"state": "gone"}))
entry_parts = st.tuples(st.sampled_from(["t-x", "t-y", None]), st.sampled_from([None, "h"]), st.booleans(),
                        st.booleans())
entries = st.dictionaries(st.integers(0, 12).map(str), entry_parts, max_size=12).map(
    lambda d: {k: KeyEntry(k, target, digest, ours, None, gone) for k, (target, digest, ours, gone) in d.items()})


@settings(max_examples=200, deadline=None)
@given(rows_strategy, rules_strategy, entries, st.lists(st.integers(0, 12).map(str), max_size=5, unique=True),
       st.dictionaries(st.sampled_from(["o1", "o2"]), st.just(KeyEntry("o", "owner-guid", "h", True))))
def test_a_records_write_is_planned_at_most_once_per_page(rows: list[dict[str, Any]], rules: FlowRules,
                                                          known: dict[str, KeyEntry], deleted: list[str],
                                                          owners: dict[str, KeyEntry]) -> None:
    deleted = [k for k in deleted if k not in {str(r[KEY]) for r in rows}]  # a deletion is not also a row
    result = plan(rows, rules=rules, known=known, owners=owners, deleted=tuple(deleted))
    keys = [w.key for w in result.writes]
    assert len(keys) == len(set(keys))
    touched = keys + [d.key for d in result.dead] + [d.key for d in result.deferred]
    assert len(touched) == len(set(touched))  # written, dead-lettered or deferred: one of them, once


@settings(max_examples=200, deadline=None)
@given(rows_strategy, rules_strategy)
def test_an_unchanged_payload_plans_no_write(rows: list[dict[str, Any]], rules: FlowRules) -> None:
    result = plan(rows, rules=rules, known=written(rows))
    assert not [w for w in result.writes if w.op in (Op.CREATE, Op.UPDATE, Op.FIND_UPDATE)
                and w.key in written(rows)]


@settings(max_examples=200, deadline=None)
@given(rules_strategy, entries, st.lists(st.integers(0, 12).map(str), max_size=8, unique=True))
def test_a_deleted_record_plans_a_delete_only_under_on_delete_delete_or_a_mirror(rules: FlowRules, known: dict[str, KeyEntry],
                                                                     deleted: list[str]) -> None:
    result = plan([], rules=rules, known=known, deleted=tuple(deleted))
    for write in result.writes:
        assert write.key in deleted
        if write.op is Op.DELETE:
            entry = known[write.key]
            assert rules.on_delete == "delete" or rules.mode == "mirror"
            assert entry.created_by_mapsync and entry.target_id == write.target_id
    assert {w.key for w in result.writes} | set(result.settled) == set(deleted)


@settings(max_examples=200, deadline=None)
@given(rows_strategy, rules_strategy, st.dictionaries(st.sampled_from(["o1", "o2"]), st.builds(
    KeyEntry, st.sampled_from(["o1", "o2"]), st.sampled_from(["owner-guid", None]), st.just("h"), st.just(True),
    st.none(), st.booleans())))
def test_a_record_whose_link_target_is_unknown_is_deferred_never_written_half_linked(
        rows: list[dict[str, Any]], rules: FlowRules, owners: dict[str, KeyEntry]) -> None:
    result = plan(rows, rules=rules, owners=owners)
    resolvable = {k for k, e in owners.items() if e.target_id and not e.deleted}
    last = {str(r[KEY]): r for r in rows}
    for write in result.writes:
        owner = last[write.key].get("owner")
        if owner is not None and write.op is not Op.DELETE:
            assert owner in resolvable and write.payload["owner"] == {"table": "owner", "id": "owner-guid"}
    for deferral in result.deferred:
        assert deferral.link.source_value not in resolvable


def test_a_record_update_mode_found_is_never_counted_as_made_by_mapsync() -> None:
    [found] = plan([{KEY: 1, "name": "a"}], rules=FlowRules("people", mode="update")).writes
    assert not found.ours
    known = {"1": KeyEntry("1", "t-1", "old", False)}
    [update] = plan([{KEY: 1, "name": "a"}], rules=FlowRules("people", mode="update"), known=known).writes
    assert update.op is Op.UPDATE and not update.ours
