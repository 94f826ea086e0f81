"""Opt-out synchronization (``optout NAME { d365.T.f <-> campaign.R.g ... }``): one boolean kept in step.

The runner calls one ``OptOutSync`` per rule after the contacts flow::

    for sync in build_optout_syncs(project, connectors, store):
        result = await sync.run()

How a run works
---------------
A run takes the steps a flow takes — read (``engine.sources``), write (``engine.writer``), acknowledge
(``engine.acknowledge``) — and only the decision in between is its own:

1. **Pairs** come from the ``via`` flow's key map: source key (``contactid``) -> target id (profile ``PKey``).
   A record on either side without a partner is skipped and counted ``unpaired``.
2. **Read.** D365 through ``D365TableSource``, as a flow reads it: change tracking, selecting only the key, the
   opt-out field and ``modifiedon``; the delta link is the cursor ``optout:<name>:d365``. No cursor, or an
   expired one, means a full read (the expiry is logged and noted; ``OptOutResult.full_read`` says so). Pairs
   that joined the key map since the last run and did not change in D365 are fetched by key
   (``fetch_many``). Campaign through ``CampaignResourceSource``: it has no change feed, so every run reads
   the resource and keeps, per pair, only the opt-out value and ``lastModified``.
3. **Decision** per pair (``decide``, pure): a side *changed* when its value differs from the last value synced
   for that side. One side changed -> it wins; both changed to different values -> the conflict rule;
   then the direction decides whether the winner's value may be written to the other side. A one-way rule
   records the other side's own change as seen and leaves it alone; under ``both``, a difference that
   neither side changed (left behind by an earlier one-way rule) is settled by the conflict rule.
   A pair never synced, or whose Campaign record mapsync made anew since (a contact deactivated, then
   reactivated: the via flow deleted the profile and created another), has no history to compare with, and
   the new record's value is a default, not anybody's choice: a difference is settled for the opted-out
   side under every rule, so a sync artefact never cancels an opt-out.
4. **Write.** A decision to write becomes a planner ``Write`` (``Op.UPDATE`` of the one field, by id, on the
   other side), sent by the flows' ``Writer`` (batches, the rounds for transient failures), both sides at once.
5. **Acknowledge**, in one transaction (``acknowledge``): a write the service rejected becomes a dead letter
   (flow ``optout:<name>``, pointing at the rule's line and the field; it never stops the run), dead letters
   of writes that went through are resolved, the per-pair state is saved and the new delta link stored:
   the cursor never runs ahead of the state.

No ping-pong: after mapsync writes value v, v is recorded as the synced value of *both* sides, so the echo of
its own write (a D365 change-tracking row, a new Campaign ``lastModified``) is not a change next run.

Per-pair state (scales to 100k+ pairs)
--------------------------------------
The state store's ``optout_pairs`` table: per rule and source key, ``d365_synced``, ``campaign_synced``,
``d365_seen``, ``d365_modifiedon``, ``synced_at`` and ``pkey`` (the Campaign record the synced values belong
to; null while unknown). A run loads its rule's pairs in one query and writes only the pairs that changed.
(Stores written before migration 4 kept them as JSON buckets in ``meta``; the migration moves them.) ``d365_seen`` is
kept because change tracking only reports changed rows: a D365 change whose write failed stays visible
(seen != synced) to the next run even after the cursor has moved.

Assumptions: the ``via`` flow goes D365 -> Campaign (its key map's source key is the D365 primary key, its
target id the Campaign PKey); a null opt-out value means "not opted out" (false); defaults when the rule
omits them are ``direction both`` and ``conflict optout-wins`` (re-subscribing someone who opted out is the
one mistake an opt-out sync must not make).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from mapsync.dsl.plan import (
    DEFAULT_CONFLICT,
    DEFAULT_DIRECTION,
    ConflictRule,
    Direction,
    OptOutRule,
    RuleError,
)
from mapsync.dsl.plan import optout_rule as _compile_rule
from mapsync.dsl.plan import optout_rules as _optout_rules
from mapsync.engine.acknowledge import Page, Record, acknowledge
from mapsync.engine.connectors.base import WriteOutcome
from mapsync.engine.creates import Creates
from mapsync.engine.errors import ConfigError, SyncError
from mapsync.engine.failpoints import Failpoint
from mapsync.engine.planner import FlowRules, Op, Write
from mapsync.engine.sources import CampaignResourceSource, D365TableSource
from mapsync.engine.state.base import PairRow
from mapsync.engine.targets import CampaignTarget, D365Target, Target
from mapsync.engine.writer import Writer

if TYPE_CHECKING:
    from mapsync.engine.connectors import Connectors
    from mapsync.engine.connectors.campaign import CampaignConnector
    from mapsync.engine.connectors.d365 import D365Connector
    from mapsync.engine.state import StateStore

__all__ = [
    "CONFLICT_RULES",
    "DEFAULT_CONFLICT",
    "DEFAULT_DIRECTION",
    "DIRECTIONS",
    "ConflictRule",
    "Decision",
    "Direction",
    "OptOutResult",
    "OptOutRuleError",
    "OptOutSync",
    "PairPlan",
    "PairState",
    "PlannedChange",
    "Reading",
    "build_optout_syncs",
    "decide",
    "parse_time",
    "plan_pairs",
]

log = logging.getLogger("mapsync.optout")

Side = Literal["d365", "campaign"]
DIRECTIONS: tuple[Direction, ...] = tuple(Direction)
CONFLICT_RULES: tuple[ConflictRule, ...] = tuple(ConflictRule)



class OptOutRuleError(SyncError):
    """An opt-out rule cannot run as written (unknown direction or conflict word, no ``via`` flow)."""


# ------------------------------------------------------------------------------------------- decision table


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one pair. ``write_*`` is the value to write to that side (None: nothing);
    ``*_synced`` are the values to record as synced once the write (if any) succeeded."""

    write_d365: bool | None
    write_campaign: bool | None
    d365_synced: bool
    campaign_synced: bool
    d365_changed: bool
    campaign_changed: bool
    conflict: bool
    winner: Side | None
    reason: str

    @property
    def cancels_optout(self) -> bool:
        """It writes "not opted out" over an opted-out value."""
        return self.write_d365 is False or self.write_campaign is False


def _winner(rule: ConflictRule, d365_now: bool, campaign_now: bool,
            d365_time: datetime | None, campaign_time: datetime | None) -> Side:
    """The side whose value stands when both changed to different values."""
    if rule == "d365-wins":
        return "d365"
    if rule == "campaign-wins":
        return "campaign"
    if rule == "latest-wins" and d365_time is not None and campaign_time is not None and d365_time != campaign_time:
        return "d365" if d365_time > campaign_time else "campaign"
    # optout-wins, and latest-wins on equal (or unknown) times: Adobe's rule is that opted out wins.
    return "d365" if d365_now else "campaign"


def decide(*, d365_synced: bool | None, d365_now: bool, campaign_synced: bool | None, campaign_now: bool,
           d365_time: datetime | None = None, campaign_time: datetime | None = None,
           direction: Direction = DEFAULT_DIRECTION, conflict: ConflictRule = DEFAULT_CONFLICT,
           campaign_created: bool = False) -> Decision:
    """The decision table, as a pure function.

    ``*_synced`` is the side's last synced value (None: never synced, e.g. the first run). With no synced
    value a side counts as changed exactly when the two sides disagree. ``campaign_created``: the Campaign
    record was made by mapsync since the synced values were recorded (they belong to a record that is gone),
    so its value is the new record's default. In both cases nobody's change can be told from a sync artefact:
    a difference is settled for the opted-out side, whatever the conflict rule (which decides only between
    changes people made); agreeing pairs are left alone.
    """
    if campaign_created:
        d365_synced = campaign_synced = None
    d_changed = d365_now != d365_synced if d365_synced is not None else d365_now != campaign_now
    c_changed = campaign_now != campaign_synced if campaign_synced is not None else campaign_now != d365_now
    if d365_now == campaign_now:
        return Decision(None, None, d365_now, campaign_now, d_changed, c_changed, False, None, "in step")
    is_conflict = d_changed and c_changed
    if d365_synced is None and campaign_synced is None:
        winner: Side = "d365" if d365_now else "campaign"
        history = "new Campaign record made by mapsync" if campaign_created else "first sync, values differ"
        reason = f"{history}: opted out wins -> {winner}"
    elif is_conflict:
        winner = _winner(conflict, d365_now, campaign_now, d365_time, campaign_time)
        reason = f"both sides changed: {conflict} -> {winner} wins"
    elif d_changed:
        winner, reason = "d365", "d365 changed"
    elif c_changed:
        winner, reason = "campaign", "campaign changed"
    elif direction == "both":
        # The sides differ and neither moved since the last run: a difference a one-way rule left behind.
        # `both` means "keep them in step", so it is settled like a conflict.
        is_conflict = True
        winner = _winner(conflict, d365_now, campaign_now, d365_time, campaign_time)
        reason = f"sides differ (left by a one-way sync): {conflict} -> {winner} wins"
    else:
        # A one-way rule leaves the other side's own changes alone, and keeps leaving them alone.
        return Decision(None, None, d365_now, campaign_now, False, False, False, None, "left as is")
    if winner == "d365":
        if direction in ("d365-to-campaign", "both"):
            return Decision(None, d365_now, d365_now, d365_now, d_changed, c_changed, is_conflict, winner, reason)
        return Decision(None, None, d365_now, campaign_now, d_changed, c_changed, is_conflict, winner,
                        f"{reason}; not written ({direction})")
    if direction in ("campaign-to-d365", "both"):
        return Decision(campaign_now, None, campaign_now, campaign_now, d_changed, c_changed, is_conflict, winner,
                        reason)
    return Decision(None, None, d365_now, campaign_now, d_changed, c_changed, is_conflict, winner,
                    f"{reason}; not written ({direction})")


def parse_time(value: Any) -> datetime | None:
    """A Dataverse (``2024-01-31T10:00:00Z``) or Campaign (``2024-01-31 10:00:00.000Z``) time, aware UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _as_bool(value: Any) -> bool:
    # Opt-out booleans can arrive as null (never set): that is "not opted out".
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class PairState:
    """What the store remembers about one pair (see the module docstring for the encoding)."""

    d365_synced: bool | None = None
    campaign_synced: bool | None = None
    d365_seen: bool | None = None  # the D365 value as last read (change tracking only says what changed)
    d365_modifiedon: str | None = None
    synced_at: str | None = None
    pkey: str | None = None  # the Campaign record the synced values belong to (None: not known)

    def encode(self) -> list[Any]:
        def b(v: bool | None) -> int | None:
            return None if v is None else int(v)

        row = [b(self.d365_synced), b(self.campaign_synced), b(self.d365_seen), self.d365_modifiedon, self.synced_at]
        return row if self.pkey is None else [*row, self.pkey]

    @staticmethod
    def decode(raw: Sequence[Any]) -> PairState:
        def b(v: Any) -> bool | None:
            return None if v is None else bool(v)

        padded = [*raw, None, None, None, None, None, None][:6]
        return PairState(b(padded[0]), b(padded[1]), b(padded[2]), padded[3], padded[4], padded[5])


@dataclass(frozen=True, slots=True)
class PlannedChange:
    """One write a run would make (``mapsync plan``) or made."""

    key: str  # the D365 primary key of the pair
    system: Side  # the side written to
    table: str
    target_id: str
    field: str
    before: bool
    after: bool
    reason: str


def _counter(meaning: str) -> Any:
    """A count a run makes, and what it counts: ``OptOutResult.counts`` reports the fields made so."""
    return field(default=0, metadata={"counts": meaning})


@dataclass
class OptOutResult:
    """What one run of a rule saw and did; the run counts into it as it goes."""

    name: str
    d365_changes_seen: int = _counter("pairs whose D365 value moved from the value last synced")
    campaign_changes_seen: int = _counter("pairs whose Campaign value moved from the value last synced")
    written_to_d365: int = _counter("values written to D365")
    written_to_campaign: int = _counter("values written to Campaign")
    conflicts: int = _counter("pairs settled by the conflict rule")
    unpaired: int = _counter("records read without a partner on the other side")
    failed: int = _counter("writes that did not go through (dead letters)")
    pairs: int = _counter("pairs in the via flow's key map")
    full_read: bool = False  # D365 was read in full (first run, or the delta token had expired)
    dry_run: bool = False
    planned: tuple[PlannedChange, ...] = ()  # the writes (made, or planned when dry_run)
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """The counters by name (the run's ``optout.done`` log event)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if "counts" in f.metadata}


# -------------------------------------------------------------------------------------------- pair storage


class _PairStore:
    """Per-pair state in the state store's ``optout_pairs`` table: one query to load, only changed pairs written."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name

    def load(self) -> dict[str, PairState]:
        return {key: PairState(*row) for key, row in self.store.optout_pairs(self.name).items()}

    def save(self, old: Mapping[str, PairState], new: Mapping[str, PairState]) -> None:
        """Write the pairs whose state changed and drop the pairs that ended; call inside a transaction."""
        changed = {k: PairRow(s.d365_synced, s.campaign_synced, s.d365_seen, s.d365_modifiedon, s.synced_at, s.pkey)
                   for k, s in new.items() if old.get(k) != s}
        self.store.put_optout_pairs(self.name, changed)
        self.store.delete_optout_pairs(self.name, [k for k in old if k not in new])

    def forget(self) -> int:
        return self.store.delete_optout_pairs(self.name)


# ------------------------------------------------------------------------------------------- planning pairs

Values = dict[str, tuple[bool, str | None]]  # key -> (opt-out value, when it last changed, as the wire says)


@dataclass(frozen=True, slots=True)
class Reading:
    """Both sides as one run read them, reduced to what the decision needs."""

    d365: Values  # by D365 key: the pairs change tracking reported (all of them on a full read)
    deleted: frozenset[str]  # D365 keys of paired contacts deleted since the last run
    campaign: Values  # by PKey: every paired profile
    full_read: bool
    cursor: str | None  # the delta link to store with the outcome


@dataclass
class PairPlan:
    """What a run does to its pairs: the state of every pair that goes on (for a pair with a write, the state
    that keeps the write due, in case it fails), and the writes, at most one per pair."""

    states: dict[str, PairState] = field(default_factory=dict)
    writes: list[Write] = field(default_factory=list)
    changes: dict[str, PlannedChange] = field(default_factory=dict)  # by pair key, in the order of ``writes``
    written: dict[str, PairState] = field(default_factory=dict)  # the state of a pair once its write went through


@dataclass(frozen=True, slots=True)
class _PairValues:
    """One pair's values at this run. ``campaign_created``: the via flow made its Campaign record anew."""

    key: str
    pkey: str
    old: PairState
    d365: tuple[bool, str | None]
    campaign: tuple[bool, str | None]
    campaign_created: bool


def plan_pairs(rule: OptOutRule, d365_key: str, key_map: Mapping[str, str], states: Mapping[str, PairState],
               reading: Reading, *, result: OptOutResult, now: str) -> PairPlan:
    """Every pair of a run decided (``decide``), each decision to write as a planner ``Write``: a function of
    plain data, counting what it saw into ``result``. ``now`` stamps the pairs whose synced values change."""
    return _Planner(rule, d365_key, result, now).plan_all(key_map, states, reading)


class _Planner:
    """Decides every pair of a run (``decide``) and turns each decision to write into a planner ``Write``."""

    def __init__(self, rule: OptOutRule, d365_key: str, result: OptOutResult, now: str) -> None:
        self.rule = rule
        self.d365_key = d365_key
        self.result = result  # counts what the run saw
        self.now = now
        self.plan = PairPlan()

    def plan_all(self, key_map: Mapping[str, str], states: Mapping[str, PairState], reading: Reading) -> PairPlan:
        for key, pkey in key_map.items():
            pair = self._pair_values(key, pkey, states.get(key, PairState()), reading)
            if pair is not None:
                self._decide(pair)
        return self.plan

    def _pair_values(self, key: str, pkey: str, old: PairState, reading: Reading) -> _PairValues | None:
        """The pair's values now; None when there is nothing to decide (its state says why)."""
        campaign_created = old.pkey is not None and old.pkey != pkey
        if campaign_created:
            # The via flow made a new record for this contact: the synced values belonged to the old one.
            old = PairState(d365_seen=old.d365_seen, d365_modifiedon=old.d365_modifiedon, pkey=pkey)
        if key in reading.deleted or (reading.full_read and key not in reading.d365):
            return None  # the contact is gone: its pair (and state) ends here
        if key in reading.d365:
            d365 = reading.d365[key]
        elif old.d365_seen is not None:
            d365 = (old.d365_seen, old.d365_modifiedon)
        else:
            self.result.unpaired += 1  # in the key map, but the contact cannot be read
            return None
        if pkey not in reading.campaign:
            self.result.unpaired += 1  # the profile is gone (or not readable): nothing to pair with
            self.plan.states[key] = replace(old, d365_seen=d365[0], d365_modifiedon=d365[1])
            return None
        return _PairValues(key, pkey, old, d365, reading.campaign[pkey], campaign_created)

    def _decide(self, pair: _PairValues) -> None:
        (d_now, d_time), (c_now, c_time), old = pair.d365, pair.campaign, pair.old
        decision = decide(d365_synced=old.d365_synced, d365_now=d_now, campaign_synced=old.campaign_synced,
                          campaign_now=c_now, d365_time=parse_time(d_time), campaign_time=parse_time(c_time),
                          direction=self.rule.direction, conflict=self.rule.conflict,
                          campaign_created=pair.campaign_created)
        self.result.d365_changes_seen += decision.d365_changed
        self.result.campaign_changes_seen += decision.campaign_changed
        self.result.conflicts += decision.conflict
        synced = (decision.d365_synced, decision.campaign_synced)
        synced_at = self.now if synced != (old.d365_synced, old.campaign_synced) else old.synced_at
        done = PairState(*synced, d_now if decision.write_d365 is None else decision.write_d365, d_time, synced_at,
                         pair.pkey)
        if decision.write_d365 is None and decision.write_campaign is None:
            self.plan.states[pair.key] = done
            return
        # Until the write goes through, only what was seen is recorded: a failed write stays due.
        self.plan.states[pair.key] = replace(old, d365_seen=d_now, d365_modifiedon=d_time)
        self.plan.written[pair.key] = done
        self._write(pair, self._change(pair, decision))

    def _change(self, pair: _PairValues, decision: Decision) -> PlannedChange:
        rule = self.rule
        if decision.write_d365 is not None:
            return PlannedChange(pair.key, "d365", rule.d365_table, pair.key, rule.d365_field, pair.d365[0],
                                 decision.write_d365, decision.reason)
        after = bool(decision.write_campaign)
        return PlannedChange(pair.key, "campaign", rule.campaign_table, pair.pkey, rule.campaign_field,
                             pair.campaign[0], after, decision.reason)

    def _write(self, pair: _PairValues, c: PlannedChange) -> None:
        record = {self.d365_key: pair.key, "PKey": pair.pkey, "write_to": c.system, "table": c.table,
                  "field": c.field, "value": c.after, "before": c.before, "reason": c.reason}
        self.plan.writes.append(Write(Op.UPDATE, pair.key, {c.field: c.after}, c.target_id, record=record,
                                      field=c.field))
        self.plan.changes[pair.key] = c


# ------------------------------------------------------------------------------------------------ the sync


class OptOutSync:
    """One opt-out rule between Dataverse and Campaign; ``await run()`` once per runner pass.

    Its steps are the flows' own: D365 is read through ``D365TableSource`` (change tracking, the delta link
    as the cursor), Campaign through ``CampaignResourceSource``; the writes go through ``Writer`` and the
    outcomes through ``acknowledge``. Only the decision (``decide``) is the rule's own."""

    def __init__(self, rule: OptOutRule | Any, *, d365: D365Connector, campaign: CampaignConnector,
                 store: StateStore, dry_run: bool = False, via: str | None = None) -> None:
        if not isinstance(rule, OptOutRule):
            try:  # a parsed rule (tests, tools): the compiled project hands the engine compiled ones
                rule = _compile_rule(rule, via)
            except RuleError as exc:
                raise OptOutRuleError(str(exc)) from None
        via_name = rule.via or via
        if not via_name:
            raise OptOutRuleError(f"{rule.where}: optout {rule.name}: no flow pairs the records; add `via FLOW`")
        self.rule, self.name, self.via = rule, rule.name, via_name
        self.d365, self.campaign, self.store, self.dry_run = d365, campaign, store, dry_run
        self.direction: Direction = rule.direction
        self.conflict: ConflictRule = rule.conflict
        self.table, self.d365_field = rule.d365_table, rule.d365_field
        self.resource, self.campaign_field = rule.campaign_table, rule.campaign_field
        schema = d365.table(self.table)
        self.d365_key = schema.primary_key if schema is not None else f"{self.table}id"
        self.flow = f"optout:{self.name}"  # dead letters and runs
        self.cursor_name = f"optout:{self.name}:d365"
        self.rules = FlowRules(self.flow, file=rule.file, line=rule.line)  # where its dead letters point
        self._pairs = _PairStore(store, self.name)

    # -- public ---------------------------------------------------------------------------------------

    async def run(self) -> OptOutResult:
        result = OptOutResult(self.name, dry_run=self.dry_run)
        key_map, states, cursor = await asyncio.to_thread(self._load)
        result.pairs = len(key_map)
        reading = await self._read(key_map, states, cursor, result)
        result.full_read = reading.full_read
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        plan = plan_pairs(self.rule, self.d365_key, key_map, states, reading, result=result, now=now)
        if self.dry_run:
            result.planned = tuple(plan.changes.values())
            return self._done(result)
        writes, outcomes = await self._write(plan)
        await asyncio.to_thread(acknowledge, self.store, self.rules,
                                Page(writes, outcomes, cursor=reading.cursor, cursor_name=self.cursor_name),
                                result, self._record(states, plan))
        result.planned = tuple(plan.changes[w.key] for w, o in zip(writes, outcomes, strict=True) if o and o.ok)
        if result.failed:
            log.warning("optout %s: %d writes rejected (dead letters)", self.name, result.failed,
                        extra={"event": "optout.rejected", "optout": self.name, "count": result.failed})
        return self._done(result)

    def forget(self) -> None:
        """Drop this rule's cursor and per-pair state (a replay: the next run is a first run)."""
        self.store.clear_flow(self.cursor_name)
        self._pairs.forget()

    # -- read -----------------------------------------------------------------------------------------

    def _load(self) -> tuple[dict[str, str], dict[str, PairState], str | None]:
        key_map = {e.source_key: e.target_id for e in self.store.iter_keys(self.via)
                   if e.target_id and not e.deleted}
        cursor = self.store.get_cursor(self.cursor_name)
        return key_map, self._pairs.load(), cursor.value if cursor is not None else None

    async def _read(self, key_map: Mapping[str, str], states: Mapping[str, PairState], cursor: str | None,
                    result: OptOutResult) -> Reading:
        """Both sides at once; then, by key, the pairs new to the key map that change tracking did not report."""
        source = D365TableSource(self.d365, self.table, [self.d365_key, self.d365_field, "modifiedon"],
                                 self.d365_key, None)
        (d365, deleted, full, delta_link), campaign = await asyncio.gather(
            self._read_d365(source, cursor, key_map, result), self._read_campaign(key_map, result))
        if cursor is not None and full:
            note = f"optout {self.name}: the change tracking token of {self.table} expired; read it in full instead"
            log.warning("%s", note, extra={"event": "optout.full_read", "optout": self.name})
            result.notes += (note,)
        missing = [k for k in key_map
                   if k not in d365 and k not in deleted and states.get(k, PairState()).d365_seen is None]
        if missing and not full:
            d365.update(self._value_of(row, self.d365_key, self.d365_field)
                        for row in (await source.fetch_many(missing)).values())
        return Reading(d365, frozenset(deleted), campaign, full, delta_link)

    async def _read_d365(self, source: D365TableSource, cursor: str | None, key_map: Mapping[str, str],
                         result: OptOutResult) -> tuple[Values, set[str], bool, str | None]:
        values: Values = {}
        deleted: set[str] = set()
        full, delta_link = cursor is None, None
        async for batch in source.batches(cursor, full=False):
            for row in batch.rows:
                key = str(row.get(self.d365_key))
                if key in key_map:
                    values[key] = self._value_of(row, self.d365_key, self.d365_field)[1]
                else:
                    result.unpaired += 1
            deleted.update(k for k in batch.deleted if k in key_map)
            full = full or batch.full
            delta_link = batch.cursor or delta_link
        return values, deleted, full, delta_link

    async def _read_campaign(self, key_map: Mapping[str, str], result: OptOutResult) -> Values:
        paired = set(key_map.values())
        values: Values = {}
        async for batch in CampaignResourceSource(self.campaign, self.resource).batches(None, full=True):
            for row in batch.rows:
                if row.get("PKey") in paired:
                    # Only what the decision needs: full profile rows are dropped page by page.
                    pkey, value = self._value_of(row, "PKey", self.campaign_field, "lastModified")
                    values[pkey] = value
                else:
                    result.unpaired += 1
        return values

    @staticmethod
    def _value_of(row: Mapping[str, Any], key: str, fld: str, changed: str = "modifiedon"
                ) -> tuple[str, tuple[bool, str | None]]:
        return str(row.get(key)), (_as_bool(row.get(fld)), row.get(changed))

    # -- write and acknowledge ------------------------------------------------------------------------

    async def _write(self, plan: PairPlan) -> tuple[list[Write], list[WriteOutcome | None]]:
        """The flows' write step, once per side; both sides at once."""
        failpoint = Failpoint.from_env()
        sides: list[tuple[Target, list[Write]]] = [
            (D365Target(self.d365, self.table, self.d365.table(self.table)),
             [w for w in plan.writes if plan.changes[w.key].system == "d365"]),
            (CampaignTarget(self.campaign, self.resource),
             [w for w in plan.writes if plan.changes[w.key].system == "campaign"])]
        writers = [Writer(self.flow, self.d365_key, target, self.store,
                          Creates(self.flow, self.d365_key, target, self.store, dry_run=False),
                          batch=None, failpoint=failpoint, on_landed=lambda n: None) for target, _ in sides]
        outcomes = await asyncio.gather(*(w.write(writes) for w, (_, writes) in zip(writers, sides, strict=True)))
        return [w for _, writes in sides for w in writes], [o for side in outcomes for o in side]

    def _record(self, before: Mapping[str, PairState], plan: PairPlan) -> Record:
        """What the writes leave behind: the pairs' state (saved by ``acknowledge`` with the cursor)."""

        def record(store: StateStore, rules: FlowRules, page: Page, result: OptOutResult) -> None:
            states = dict(plan.states)
            for w, outcome in zip(page.writes, page.outcomes, strict=True):
                if outcome is not None and outcome.ok:
                    states[w.key] = plan.written[w.key]
                    if plan.changes[w.key].system == "d365":
                        result.written_to_d365 += 1
                    else:
                        result.written_to_campaign += 1
            self._pairs.save(before, states)  # pairs that ended (gone from the key map) lose their state

        return record

    def _done(self, result: OptOutResult) -> OptOutResult:
        # Debug only: the commands print this result as one sentence; at info it was said twice.
        log.debug("optout %s: %s", self.name, " ".join(f"{k}={v}" for k, v in result.counts().items()),
                  extra={"event": "optout.done", "optout": self.name, **result.counts(), "dry_run": self.dry_run})
        return result


# ------------------------------------------------------------------------------------------------ builder


def build_optout_syncs(project_or_rules: Any, connectors: Connectors, store: StateStore, *,
                       dry_run: bool = False, only: Iterable[str] | None = None) -> list[OptOutSync]:
    """One ``OptOutSync`` per rule (``only``: just these names), in declaration order.

    ``project_or_rules``: a ``CompiledProject`` or a checker ``Analysis`` (their ``via`` is resolved even
    when the rule omits it), a ``Project``, a mapping or iterable of rules, or parsed modules.
    """
    try:
        rules = _optout_rules(project_or_rules)
    except RuleError as exc:
        raise OptOutRuleError(str(exc)) from None
    if only is not None:
        names = set(only)
        rules = [r for r in rules if r.name in names]
    if not rules:
        return []
    d365, campaign = connectors.d365, connectors.campaign
    if d365 is None or campaign is None:
        missing = "d365" if d365 is None else "campaign"
        raise ConfigError(f"opt-out rules need both services; {missing} is not configured", setting=missing)
    return [OptOutSync(rule, d365=d365, campaign=campaign, store=store, dry_run=dry_run) for rule in rules]
