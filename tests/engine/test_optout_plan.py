"""Planning an opt-out run's pairs (``plan_pairs``) with plain data: every decision to write becomes one
planner ``Write`` (an update of the one field, on the other side), a write that fails stays due, and one that
went through is not planned again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl.plan import ConflictRule, Direction, OptOutRule
from mapsync.engine.optout import OptOutResult, PairPlan, PairState, Reading, plan_pairs
from mapsync.engine.planner import Op

T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z"


def rule(direction: Direction = Direction.BOTH, conflict: ConflictRule = ConflictRule.OPTOUT_WINS) -> OptOutRule:
    return OptOutRule("email", "contact", "donotbulkemail", "profile", "blackListEmail", "contacts",
                      direction=direction, conflict=conflict, file="optout.map", line=4)


def plan(r: OptOutRule, key_map: dict[str, str], states: dict[str, PairState], reading: Reading) -> PairPlan:
    return plan_pairs(r, "contactid", key_map, states, reading, result=OptOutResult("email"), now=T2)


def test_a_campaign_opt_out_is_one_update_of_the_d365_field() -> None:
    reading = Reading({"c1": (False, T1)}, frozenset(), {"p1": (True, T2)}, full_read=False, cursor="delta")
    old = {"c1": PairState(False, False, False, T1, None, "p1")}
    got = plan(rule(), {"c1": "p1"}, old, reading)
    [write] = got.writes
    assert (write.op, write.key, dict(write.payload), write.target_id, write.field) == (
        Op.UPDATE, "c1", {"donotbulkemail": True}, "c1", "donotbulkemail")
    assert write.record is not None and write.record["PKey"] == "p1" and write.record["write_to"] == "d365"
    assert got.changes["c1"].system == "d365" and got.changes["c1"].after is True
    assert got.states["c1"].d365_synced is False  # until the write goes through
    assert (got.written["c1"].d365_synced, got.written["c1"].campaign_synced) == (True, True)


def test_a_deleted_contact_ends_its_pair_and_an_unreadable_one_is_unpaired() -> None:
    reading = Reading({}, frozenset({"c1"}), {"p1": (True, T1), "p2": (True, T1)}, full_read=False, cursor=None)
    result = OptOutResult("email")
    got = plan_pairs(rule(), "contactid", {"c1": "p1", "c2": "p2"}, {"c1": PairState(True, True, True)}, reading,
                     result=result, now=T2)
    assert got.states == {} and got.writes == [] and result.unpaired == 1


maybe = st.none() | st.booleans()
pairs = st.lists(st.fixed_dictionaries({
    "synced": st.tuples(maybe, maybe), "seen": maybe, "old_pkey": st.sampled_from([None, "same", "older"]),
    "d365": st.none() | st.booleans(), "deleted": st.booleans(), "campaign": st.none() | st.booleans(),
}), min_size=1, max_size=6)


def inputs(drawn: list[dict[str, object]], full_read: bool
           ) -> tuple[dict[str, str], dict[str, PairState], Reading]:
    key_map, states, d365, campaign, deleted = {}, {}, {}, {}, set()
    for i, p in enumerate(drawn):
        key, pkey = f"c{i}", f"p{i}"
        key_map[key] = pkey
        synced = p["synced"]
        old_pkey = {"same": pkey, "older": f"old-{pkey}", None: None}[p["old_pkey"]]  # type: ignore[index]
        states[key] = PairState(synced[0], synced[1], p["seen"], T1, None, old_pkey)  # type: ignore[arg-type,index]
        if p["deleted"]:
            deleted.add(key)
        elif p["d365"] is not None:
            d365[key] = (bool(p["d365"]), T1)
        if p["campaign"] is not None:
            campaign[pkey] = (bool(p["campaign"]), T1)
    return key_map, states, Reading(d365, frozenset(deleted), campaign, full_read, "delta")


@settings(max_examples=300)
@given(drawn=pairs, full_read=st.booleans(), direction=st.sampled_from(tuple(Direction)),
       conflict=st.sampled_from(tuple(ConflictRule)))
def test_writes_are_one_field_per_pair_failed_ones_stay_due_and_done_ones_are_not_planned_again(
        drawn: list[dict[str, object]], full_read: bool, direction: Direction, conflict: ConflictRule) -> None:
    r = rule(direction, conflict)
    key_map, states, reading = inputs(drawn, full_read)
    first = plan(r, key_map, states, reading)
    assert len({w.key for w in first.writes}) == len(first.writes) == len(first.changes)
    for w in first.writes:
        side = first.changes[w.key].system
        field = "donotbulkemail" if side == "d365" else "blackListEmail"
        assert w.op is Op.UPDATE and list(w.payload) == [field] and w.field == field
        assert w.target_id == (w.key if side == "d365" else key_map[w.key])
        assert side != ("d365" if direction == Direction.D365_TO_CAMPAIGN else "campaign" if
                        direction == Direction.CAMPAIGN_TO_D365 else "neither")
    for key in reading.deleted:
        assert key not in first.states and key not in first.changes  # its pair ends

    # Every write failed: the next run, reading the same values, plans the same writes again.
    again = plan(r, key_map, first.states, reading)
    assert [(w.key, dict(w.payload)) for w in again.writes] == [(w.key, dict(w.payload)) for w in first.writes]

    # Every write went through: the systems hold the written values and the next run plans nothing.
    d365, campaign = dict(reading.d365), dict(reading.campaign)
    for w in first.writes:
        c = first.changes[w.key]
        if c.system == "d365":
            d365[w.key] = (c.after, T2)
        else:
            campaign[c.target_id] = (c.after, T2)
    after = Reading(d365, reading.deleted, campaign, full_read=False, cursor="delta")
    done = plan(r, key_map, {**first.states, **first.written}, after)
    assert done.writes == []
