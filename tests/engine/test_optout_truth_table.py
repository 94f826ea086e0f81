"""The opt-out decision over its whole truth table: {never synced, synced, Campaign record new} x {changed on
one side, both, neither} x every value x every conflict rule x every direction x the order of the changes.

The table below is the specification, written out independently of ``mapsync.engine.optout.decide``:

* a pair that was never synced, or whose Campaign record mapsync has just made (its value is a default, not
  anybody's choice): a difference is settled for the opted-out side, under every rule;
* a synced pair: the side a person changed wins; when both changed (or, both ways, neither did and they
  differ), the conflict rule decides: ``latest-wins`` by the time of the change, opted out winning a tie
  or an unknown time;
* the direction then says whether the winner's value may be written to the other side.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from mapsync.engine.optout import CONFLICT_RULES, DIRECTIONS, decide

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)
TIMES = [(T0, LATER), (LATER, T0), (T0, T0), (None, T0), (T0, None)]  # (d365 change, Campaign change)
BOOLS = (False, True)
HISTORIES = ("never synced", "synced", "campaign record new")
CHANGES = ("d365 changed", "campaign changed", "both changed", "neither changed")


def _by_rule(rule: str, d365_now: bool, campaign_now: bool, d365_time: datetime | None,
             campaign_time: datetime | None) -> str:
    if rule == "d365-wins":
        return "d365"
    if rule == "campaign-wins":
        return "campaign"
    if rule == "latest-wins" and d365_time and campaign_time and d365_time != campaign_time:
        return "d365" if d365_time > campaign_time else "campaign"
    return "d365" if d365_now else "campaign"


def expected(history: str, d365_synced: bool | None, d365_now: bool, campaign_synced: bool | None,
             campaign_now: bool, rule: str, direction: str, d365_time: datetime | None,
             campaign_time: datetime | None) -> tuple[bool | None, bool | None]:
    """(value written to Dynamics 365, value written to Campaign); None: nothing written there."""
    if d365_now == campaign_now:
        return None, None
    if history != "synced":
        winner = "d365" if d365_now else "campaign"  # opted out wins, whatever the rule
    else:
        d_changed, c_changed = d365_now != d365_synced, campaign_now != campaign_synced
        if d_changed != c_changed:
            winner = "d365" if d_changed else "campaign"
        elif not d_changed and direction != "both":
            return None, None  # a one-way rule leaves a difference nobody changed alone
        else:
            winner = _by_rule(rule, d365_now, campaign_now, d365_time, campaign_time)
    if winner == "d365":
        return (None, d365_now) if direction != "campaign-to-d365" else (None, None)
    return (campaign_now, None) if direction != "d365-to-campaign" else (None, None)


def cases(history: str, change: str):  # type: ignore[no-untyped-def]
    """Every (d365_synced, d365_now, campaign_synced, campaign_now) of one cell of the table."""
    synced_values = [(None, None)] if history == "never synced" else list(itertools.product(BOOLS, BOOLS))
    for (ds, cs), dn, cn in itertools.product(synced_values, BOOLS, BOOLS):
        if history == "never synced":
            # Without history a side "changed" when it disagrees with the other.
            d_changed = c_changed = dn != cn
        else:
            d_changed, c_changed = dn != ds, cn != cs
        cell = ("both changed" if d_changed and c_changed else "d365 changed" if d_changed
                else "campaign changed" if c_changed else "neither changed")
        if cell == change:
            yield ds, dn, cs, cn


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("history", HISTORIES)
def test_every_case_of_the_decision_table(history: str, change: str) -> None:
    checked = 0
    for (ds, dn, cs, cn), rule, direction, (dt, ct) in itertools.product(
            cases(history, change), CONFLICT_RULES, DIRECTIONS, TIMES):
        got = decide(d365_synced=ds, d365_now=dn, campaign_synced=cs, campaign_now=cn, d365_time=dt,
                     campaign_time=ct, direction=direction, conflict=rule,  # type: ignore[arg-type]
                     campaign_created=history == "campaign record new")
        case = (history, change, ds, dn, cs, cn, rule, direction, dt, ct)
        assert (got.write_d365, got.write_campaign) == expected(history, ds, dn, cs, cn, rule, direction, dt, ct), case
        if history != "synced":
            assert not got.cancels_optout, case  # nothing but a person's change ever re-subscribes anyone
        checked += 1
    if history == "never synced" and change in ("d365 changed", "campaign changed"):
        assert checked == 0  # without history, a difference is a change on both sides
    else:
        assert checked > 0


def test_a_new_campaign_record_never_cancels_an_opt_out_under_latest_wins() -> None:
    """The reproduction: the contact opted out long ago, mapsync made its profile a moment ago (not opted out,
    the newer record): the opt-out is written to Campaign, nothing to Dynamics 365."""
    for synced in (None, True):
        got = decide(d365_synced=synced, d365_now=True, campaign_synced=synced, campaign_now=False,
                     d365_time=T0 - timedelta(days=30), campaign_time=T0, direction="both", conflict="latest-wins",
                     campaign_created=synced is not None)
        assert (got.write_d365, got.write_campaign, got.winner) == (None, True, "d365")
        assert "opted out wins" in got.reason


def test_a_person_may_still_opt_back_in() -> None:
    """Opting in is a change like any other once the pair has history: it is not an artefact."""
    got = decide(d365_synced=True, d365_now=False, campaign_synced=True, campaign_now=True, conflict="optout-wins")
    assert (got.write_d365, got.write_campaign) == (None, False)
