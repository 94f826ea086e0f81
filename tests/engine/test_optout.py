"""The opt-out decision table (a pure function), its no-ping-pong properties, and the per-pair state storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.dsl import ast
from mapsync.dsl.parser import parse, parse_file
from mapsync.dsl.schema import load_catalog
from mapsync.engine.config import CampaignSettings, D365Settings, Secret, ServiceLimits
from mapsync.engine.connectors import Connectors
from mapsync.engine.connectors.campaign import CampaignConnector
from mapsync.engine.connectors.d365 import D365Connector
from mapsync.engine.errors import ConfigError
from mapsync.engine.http import HttpClient
from mapsync.engine.optout import (
    CONFLICT_RULES,
    DIRECTIONS,
    Decision,
    OptOutRuleError,
    PairState,
    _PairStore,
    build_optout_syncs,
    decide,
    parse_time,
)
from mapsync.engine.state import KeyEntry, open_store
from tests.paths import FIXTURE_MAPPINGS

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
ROOT = Path(__file__).resolve().parents[2]


def d(**kw: object) -> Decision:
    base: dict[str, object] = {"d365_time": T0, "campaign_time": T0, "direction": "both", "conflict": "optout-wins"}
    base.update(kw)
    return decide(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- decision table


def test_in_step_pairs_write_nothing() -> None:
    for v in (False, True):
        got = d(d365_synced=v, d365_now=v, campaign_synced=v, campaign_now=v)
        assert (got.write_d365, got.write_campaign, got.conflict) == (None, None, False)
        assert (got.d365_synced, got.campaign_synced) == (v, v)


def test_campaign_opt_out_goes_to_d365() -> None:
    got = d(d365_synced=False, d365_now=False, campaign_synced=False, campaign_now=True)
    assert got.write_d365 is True and got.write_campaign is None
    assert (got.d365_synced, got.campaign_synced, got.winner, got.conflict) == (True, True, "campaign", False)
    assert got.campaign_changed and not got.d365_changed


def test_d365_opt_out_goes_to_campaign_and_opt_in_too() -> None:
    got = d(d365_synced=False, d365_now=True, campaign_synced=False, campaign_now=False)
    assert got.write_campaign is True and got.write_d365 is None
    back = d(d365_synced=True, d365_now=False, campaign_synced=True, campaign_now=True)
    assert back.write_campaign is False  # opting back in is a change like any other


@pytest.mark.parametrize(("direction", "d365_now", "campaign_now", "write_d365", "write_campaign"), [
    ("d365-to-campaign", True, False, None, True),
    ("d365-to-campaign", False, True, None, None),  # Campaign's change is left alone
    ("campaign-to-d365", True, False, None, None),  # D365's change is left alone
    ("campaign-to-d365", False, True, True, None),
    ("both", True, False, None, True),
    ("both", False, True, True, None),
])
def test_direction_decides_which_side_may_be_written(direction: str, d365_now: bool, campaign_now: bool,
                                                     write_d365: bool | None, write_campaign: bool | None) -> None:
    got = d(d365_synced=False, d365_now=d365_now, campaign_synced=False, campaign_now=campaign_now,
            direction=direction)
    assert (got.write_d365, got.write_campaign) == (write_d365, write_campaign)
    if write_d365 is None and write_campaign is None:
        # Nothing written: what each side holds now is what is recorded, so it is not seen again.
        assert (got.d365_synced, got.campaign_synced) == (d365_now, campaign_now)


@pytest.mark.parametrize(("conflict", "d365_now", "d365_time", "campaign_time", "winner"), [
    ("optout-wins", True, T0, LATER, "d365"),
    ("optout-wins", False, LATER, T0, "campaign"),
    ("d365-wins", False, T0, LATER, "d365"),
    ("d365-wins", True, T0, LATER, "d365"),
    ("campaign-wins", True, LATER, T0, "campaign"),
    ("latest-wins", False, LATER, T0, "d365"),
    ("latest-wins", False, T0, LATER, "campaign"),
    ("latest-wins", True, T0, LATER, "campaign"),
    ("latest-wins", True, T0, T0, "d365"),  # equal times: opted out wins (Adobe's documented rule)
    ("latest-wins", False, T0, T0, "campaign"),
    ("latest-wins", False, None, T0, "campaign"),  # a time unknown: opted out wins as well
])
def test_conflict_rules_when_both_sides_changed(conflict: str, d365_now: bool, d365_time: datetime | None,
                                                campaign_time: datetime | None, winner: str) -> None:
    # Both sides moved away from what was synced (the synced values differ: a one-way rule left them so).
    got = decide(d365_synced=not d365_now, d365_now=d365_now, campaign_synced=d365_now, campaign_now=not d365_now,
                 d365_time=d365_time, campaign_time=campaign_time, direction="both", conflict=conflict)  # type: ignore[arg-type]
    assert got.d365_changed and got.campaign_changed
    assert got.conflict and got.winner == winner
    value = d365_now if winner == "d365" else not d365_now
    assert (got.d365_synced, got.campaign_synced) == (value, value)
    assert got.write_campaign == (value if winner == "d365" else None)
    assert got.write_d365 == (value if winner == "campaign" else None)


def test_both_changed_after_a_one_way_difference_is_a_conflict() -> None:
    # d365-to-campaign left Campaign at True while D365 stayed False; then both flip.
    got = d(d365_synced=False, d365_now=True, campaign_synced=True, campaign_now=False, conflict="campaign-wins",
            direction="both")
    assert got.conflict and got.winner == "campaign" and got.write_d365 is False


def test_first_run_agreeing_pairs_are_not_changes() -> None:
    got = d(d365_synced=None, d365_now=True, campaign_synced=None, campaign_now=True)
    assert not got.d365_changed and not got.campaign_changed and got.write_d365 is None and got.write_campaign is None


def test_difference_nobody_changed_is_left_one_way_and_settled_both_ways() -> None:
    for direction in ("d365-to-campaign", "campaign-to-d365"):
        got = d(d365_synced=False, d365_now=False, campaign_synced=True, campaign_now=True, direction=direction)
        assert (got.write_d365, got.write_campaign, got.reason) == (None, None, "left as is")
    got = d(d365_synced=False, d365_now=False, campaign_synced=True, campaign_now=True, direction="both")
    assert got.conflict and got.write_d365 is True  # optout-wins: Campaign's opt-out stands


def test_times_of_both_wire_formats_compare() -> None:
    assert parse_time("2024-05-01T10:00:00Z") == T0
    assert parse_time("2024-05-01 10:00:00.000Z") == T0
    assert parse_time("2024-05-01 10:00:00.001Z") > T0  # type: ignore[operator]
    assert parse_time(None) is None and parse_time("not a time") is None


# ------------------------------------------------------------------------------------------- properties

bools = st.booleans()
maybe_bools = st.none() | st.booleans()
times = st.none() | st.sampled_from([T0, LATER, T0 - timedelta(days=1)])


@settings(max_examples=300)
@given(ds=maybe_bools, dn=bools, cs=maybe_bools, cn=bools, dt=times, ct=times,
       direction=st.sampled_from(DIRECTIONS), conflict=st.sampled_from(CONFLICT_RULES))
def test_applying_a_decision_then_rerunning_writes_nothing(ds: bool | None, dn: bool, cs: bool | None, cn: bool,
                                                           dt: datetime | None, ct: datetime | None,
                                                           direction: str, conflict: str) -> None:
    first = decide(d365_synced=ds, d365_now=dn, campaign_synced=cs, campaign_now=cn, d365_time=dt,
                   campaign_time=ct, direction=direction, conflict=conflict)  # type: ignore[arg-type]
    # At most one side is written, and only in an allowed direction.
    assert first.write_d365 is None or first.write_campaign is None
    if first.write_d365 is not None:
        assert direction != "d365-to-campaign"
    if first.write_campaign is not None:
        assert direction != "campaign-to-d365"
    # The systems after the writes; the writes bump their side's modification time.
    d_after = dn if first.write_d365 is None else first.write_d365
    c_after = cn if first.write_campaign is None else first.write_campaign
    assert (first.d365_synced, first.campaign_synced) == (d_after, c_after)
    if direction == "both":
        assert d_after == c_after  # both ways: every pair ends in step
    again = decide(d365_synced=first.d365_synced, d365_now=d_after, campaign_synced=first.campaign_synced,
                   campaign_now=c_after, d365_time=LATER if first.write_d365 is not None else dt,
                   campaign_time=LATER if first.write_campaign is not None else ct,
                   direction=direction, conflict=conflict)  # type: ignore[arg-type]
    assert (again.write_d365, again.write_campaign) == (None, None)
    assert not again.d365_changed and not again.campaign_changed and not again.conflict


edits = st.lists(st.tuples(st.sampled_from(["d365", "campaign", "run"]), bools), min_size=1, max_size=12)


@settings(max_examples=200)
@given(start=st.tuples(bools, bools), steps=edits, direction=st.sampled_from(DIRECTIONS),
       conflict=st.sampled_from(CONFLICT_RULES))
def test_users_editing_between_runs_never_cause_ping_pong(start: tuple[bool, bool], steps: list[tuple[str, bool]],
                                                          direction: str, conflict: str) -> None:
    """A model of both systems: users edit either side, runs apply decisions; a run right after a run writes
    nothing, a one-sided edit propagates when the direction allows it, and `both` always ends in step."""
    d_val, c_val = start
    state: tuple[bool | None, bool | None] = (None, None)
    clock = T0
    d_time = c_time = T0

    def run() -> Decision:
        nonlocal d_val, c_val, state, d_time, c_time, clock
        got = decide(d365_synced=state[0], d365_now=d_val, campaign_synced=state[1], campaign_now=c_val,
                     d365_time=d_time, campaign_time=c_time, direction=direction, conflict=conflict)  # type: ignore[arg-type]
        clock += timedelta(seconds=1)
        if got.write_d365 is not None:
            d_val, d_time = got.write_d365, clock
        if got.write_campaign is not None:
            c_val, c_time = got.write_campaign, clock
        state = (got.d365_synced, got.campaign_synced)
        return got

    edited: set[str] = set()
    for what, value in [*steps, ("run", False)]:
        clock += timedelta(seconds=1)
        if what == "d365":
            d_val, d_time = value, clock
            edited.add("d365")
            continue
        if what == "campaign":
            c_val, c_time = value, clock
            edited.add("campaign")
            continue
        synced, before = state, (d_val, c_val)
        got = run()
        if synced != (None, None) and before[0] != before[1]:
            # Only one side was edited since the last run, and it really changed: it propagates if allowed.
            if edited == {"d365"} and before[0] != synced[0] and direction != "campaign-to-d365":
                assert got.write_campaign == before[0]
            if edited == {"campaign"} and before[1] != synced[1] and direction != "d365-to-campaign":
                assert got.write_d365 == before[1]
        edited.clear()
        echo = run()
        assert (echo.write_d365, echo.write_campaign) == (None, None)  # the run's own writes do not come back
        if direction == "both":
            assert d_val == c_val


# ------------------------------------------------------------------------------------------- pair storage


def test_pair_state_round_trips_through_the_store_and_only_changed_pairs_are_written(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.sqlite'}")
    try:
        pairs = _PairStore(store, "email")
        states = {f"{i:08d}-0000-0000-0000-000000000000": PairState(i % 2 == 0, i % 3 == 0, i % 5 == 0,
                                                                    "2024-05-01T10:00:00Z", None)
                  for i in range(2000)}
        with store.transaction():
            pairs.save({}, states)
        assert pairs.load() == states
        assert _PairStore(store, "other").load() == {}  # rules keep their own pairs
        # One pair changes: one row is written.
        key = next(iter(states))
        changed = {**states, key: PairState(True, True, True, None, "2024-05-02T00:00:00Z", "@p")}
        written: list[dict[str, object]] = []
        put = store.put_optout_pairs
        store.put_optout_pairs = lambda rule, rows: (written.append(dict(rows)), put(rule, rows))  # type: ignore[method-assign]
        with store.transaction():
            pairs.save(states, changed)
        assert [list(w) for w in written] == [[key]]
        assert pairs.load() == changed
        # A pair that ends (gone from the key map): its row goes away.
        gone = next(k for k in changed if k != key)
        rest = {k: v for k, v in changed.items() if k != gone}
        with store.transaction():
            pairs.save(changed, rest)
        assert gone not in store.optout_pairs("email") and pairs.load() == rest
        assert pairs.forget() == len(rest)
        assert pairs.load() == {}
    finally:
        store.close()


def test_pair_state_encoding_is_compact_and_tolerant() -> None:
    s = PairState(True, False, None, "2024-05-01T10:00:00Z", None)
    assert s.encode() == [1, 0, None, "2024-05-01T10:00:00Z", None]
    assert PairState.decode(s.encode()) == s
    assert PairState.decode([1]) == PairState(True)  # older, shorter rows still load


# ------------------------------------------------------------------------------------------- builder


def _connectors(*, campaign: bool = True) -> Connectors:
    """Real connectors that are only built, never called: the builder hands them to each sync."""
    limits = ServiceLimits()
    d365 = D365Connector(D365Settings(url="https://org.test", tenant_id="t", client_id="c",
                                      client_secret=Secret("unused"), limits=limits),
                         HttpClient("d365", limits, None), load_catalog())
    adobe = CampaignConnector(CampaignSettings(organization="org", client_id="c", client_secret=Secret("unused")),
                              HttpClient("campaign", limits, None), load_catalog()) if campaign else None
    return Connectors(d365, adobe, None)


def test_build_from_the_shipped_mapping(tmp_path: Path) -> None:
    result, _ = parse_file(FIXTURE_MAPPINGS / "optout.map")
    assert not result.diagnostics
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        store.put_keys("contacts", [KeyEntry("a", "@p")])
        conns = _connectors()
        [sync] = build_optout_syncs([result.module], conns, store)
        assert (sync.name, sync.direction, sync.conflict, sync.via) == ("email", "both", "optout-wins", "contacts")
        assert (sync.table, sync.d365_field, sync.resource, sync.campaign_field, sync.d365_key) == (
            "contact", "donotbulkemail", "profile", "blackListEmail", "contactid")
        assert build_optout_syncs([result.module], conns, store, only=["other"]) == []
        with pytest.raises(ConfigError):
            build_optout_syncs([result.module], _connectors(campaign=False), store)
    finally:
        store.close()


def _rule(clauses: str = "via contacts") -> ast.OptOut:
    text = f"optout email {{\n  d365.contact.donotemail <-> campaign.profile.blackList\n  {clauses}\n}}\n"
    result = parse(text, "rule.map")
    assert not result.diagnostics, result.diagnostics
    [rule] = result.module.decls
    assert isinstance(rule, ast.OptOut)
    return rule


def test_rule_settings_are_checked_and_defaulted(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.sqlite'}")
    try:
        conns = _connectors()
        [sync] = build_optout_syncs({"email": _rule()}, conns, store)
        assert (sync.direction, sync.conflict) == ("both", "optout-wins")
        assert (sync.d365_field, sync.campaign_field) == ("donotemail", "blackList")  # any boolean pair
        with pytest.raises(OptOutRuleError, match="direction 'sideways'"):
            build_optout_syncs([_rule("direction sideways\n  via contacts")], conns, store)
        with pytest.raises(OptOutRuleError, match="via"):
            build_optout_syncs([_rule("")], conns, store)
    finally:
        store.close()
