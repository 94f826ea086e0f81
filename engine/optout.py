"""Opt-out synchronization (``optout NAME { d365.T.f <-> campaign.R.g ... }``): one boolean kept in step.

The runner calls one ``OptOutSync`` per rule after the contacts flow::

    for sync in build_optout_syncs(project, connectors, store):
        result = await sync.run()

How a run works
---------------
1. **Pairs** come from the ``via`` flow's key map: source key (``contactid``) -> target id (profile ``PKey``).
   A record on either side without a partner is skipped and counted ``unpaired``.
2. **D365 side**: change tracking on the table, selecting only the key, the opt-out field and ``modifiedon``;
   the delta link is the cursor ``optout:<name>:d365``. No cursor, or an expired one (``ChangeTrackingExpired``),
   means a full read (logged, and ``OptOutResult.full_read`` says so). Pairs that joined the key map since the
   last run and did not change in D365 are fetched by key.
3. **Campaign side**: Campaign has no change feed, so every run reads the resource and keeps, per pair, only
   the opt-out value and ``lastModified``.
4. **Decision** per pair (``decide``): a side *changed* when its value differs from the last value synced
   for that side. One side changed -> it wins; both changed to different values -> the conflict rule;
   then the direction decides whether the winner's value may be written to the other side. A one-way rule
   records the other side's own change as seen and leaves it alone; under ``both``, a difference that
   neither side changed (left behind by an earlier one-way rule) is settled by the conflict rule.
   A pair never synced, or whose Campaign record mapsync made anew since (a contact deactivated, then
   reactivated: the via flow deleted the profile and created another), has no history to compare with, and
   the new record's value is a default, not anybody's choice: a difference is settled for the opted-out
   side under every rule, so a sync artefact never cancels an opt-out.
5. **Writes** go out batched through the connectors; a record the service rejects becomes a dead letter
   (flow ``optout:<name>``) and never stops the run. Then, in one transaction, the per-pair state and the
   new delta link are saved: the cursor never runs ahead of the state.

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
from mapsync.engine.connectors.base import ChangeTrackingExpired, WriteOp, WriteOutcome
from mapsync.engine.errors import ConfigError, SyncError
from mapsync.engine.state.base import PairRow

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
    "PairState",
    "PlannedChange",
    "build_optout_syncs",
    "decide",
    "parse_time",
]

log = logging.getLogger("mapsync.optout")

Side = Literal["d365", "campaign"]
DIRECTIONS: tuple[Direction, ...] = tuple(Direction)
CONFLICT_RULES: tuple[ConflictRule, ...] = tuple(ConflictRule)

WRITE_CHUNK = 500  # ops handed to a connector at once: bounds the coroutines alive, not the wire concurrency
FETCH_CHUNK = 50  # keys per `$filter=pk eq a or pk eq b ...` request (keeps the URL far below its limit)


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
        winner: Side | None = "d365" if d365_now else "campaign"
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
    assert winner is not None
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


@dataclass(frozen=True, slots=True)
class OptOutResult:
    name: str
    d365_changes_seen: int = 0
    campaign_changes_seen: int = 0
    written_to_d365: int = 0
    written_to_campaign: int = 0
    conflicts: int = 0
    unpaired: int = 0
    failed: int = 0
    pairs: int = 0
    full_read: bool = False  # D365 was read in full (first run, or the delta token had expired)
    dry_run: bool = False
    planned: tuple[PlannedChange, ...] = ()  # the writes (made, or planned when dry_run)
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        """The counters, for ``StateStore.finish_run`` and ``mapsync status``."""
        return {name: getattr(self, name) for name in (*_COUNTERS, "pairs")}


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


# ------------------------------------------------------------------------------------------------ the sync


@dataclass
class _Counters:
    d365_changes_seen: int = 0
    campaign_changes_seen: int = 0
    written_to_d365: int = 0
    written_to_campaign: int = 0
    conflicts: int = 0
    unpaired: int = 0
    failed: int = 0
    notes: list[str] = field(default_factory=list)


_COUNTERS = tuple(f.name for f in fields(_Counters) if f.name != "notes")  # what a run counts, in this order


@dataclass(frozen=True, slots=True)
class _Pending:
    key: str
    pkey: str
    decision: Decision
    new_state: PairState  # the state to save if the write succeeds
    failed_state: PairState  # ...and if it fails: seen values updated, synced ones kept, so it is retried
    change: PlannedChange


class OptOutSync:
    """One opt-out rule between Dataverse and Campaign; ``await run()`` once per runner pass."""

    def __init__(self, rule: OptOutRule | Any, *, d365: D365Connector, campaign: CampaignConnector,
                 store: StateStore, dry_run: bool = False, via: str | None = None) -> None:
        if not isinstance(rule, OptOutRule):
            try:  # a parsed rule (tests, tools): the compiled project hands the engine compiled ones
                rule = _compile_rule(rule, via)
            except RuleError as exc:
                raise OptOutRuleError(str(exc)) from None
        self.rule = rule
        self.name = rule.name
        self.d365 = d365
        self.campaign = campaign
        self.store = store
        self.dry_run = dry_run
        self.direction: Direction = rule.direction
        self.conflict: ConflictRule = rule.conflict
        via_name = rule.via or via
        if not via_name:
            raise OptOutRuleError(f"{rule.where}: optout {rule.name}: no flow pairs the records; add `via FLOW`")
        self.via = via_name
        self.table = rule.d365_table
        self.d365_field = rule.d365_field
        self.resource = rule.campaign_table
        self.campaign_field = rule.campaign_field
        schema = d365.table(self.table)
        self.d365_key = schema.primary_key if schema is not None else f"{self.table}id"
        self.flow = f"optout:{self.name}"  # dead letters and runs
        self.cursor_name = f"optout:{self.name}:d365"
        self._pairs = _PairStore(store, self.name)

    # -- public ---------------------------------------------------------------------------------------

    async def run(self) -> OptOutResult:
        n = _Counters()
        key_map, states, cursor = await asyncio.to_thread(self._load)
        by_pkey = {pkey: key for key, pkey in key_map.items()}
        (d_rows, deleted, delta_link, full_read), c_rows = await asyncio.gather(
            self._read_d365(cursor, key_map, n), self._read_campaign(by_pkey, n))
        missing = [k for k in key_map if k not in d_rows and k not in deleted and states.get(k, PairState()).d365_seen is None]
        if missing and not full_read:
            d_rows.update(await self._fetch_d365(missing))

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        new_states: dict[str, PairState] = {}
        pending: list[_Pending] = []
        for key, pkey in key_map.items():
            old = states.get(key, PairState())
            campaign_created = old.pkey is not None and old.pkey != pkey
            if campaign_created:
                # The via flow made a new record for this contact: the synced values belonged to the old one.
                old = PairState(d365_seen=old.d365_seen, d365_modifiedon=old.d365_modifiedon, pkey=pkey)
            if key in deleted or (full_read and key not in d_rows):
                continue  # the contact is gone: its pair (and state) ends here
            if key in d_rows:
                d_now, d_time_raw = d_rows[key]
            elif old.d365_seen is not None:
                d_now, d_time_raw = old.d365_seen, old.d365_modifiedon
            else:
                n.unpaired += 1  # in the key map, but the contact cannot be read
                continue
            seen = replace(old, d365_seen=d_now, d365_modifiedon=d_time_raw)
            if pkey not in c_rows:
                n.unpaired += 1  # the profile is gone (or not readable): nothing to pair with
                new_states[key] = seen
                continue
            c_now, c_time_raw = c_rows[pkey]
            decision = decide(d365_synced=old.d365_synced, d365_now=d_now, campaign_synced=old.campaign_synced,
                              campaign_now=c_now, d365_time=parse_time(d_time_raw), campaign_time=parse_time(c_time_raw),
                              direction=self.direction, conflict=self.conflict, campaign_created=campaign_created)
            n.d365_changes_seen += decision.d365_changed
            n.campaign_changes_seen += decision.campaign_changed
            n.conflicts += decision.conflict
            synced_at = old.synced_at
            if (decision.d365_synced, decision.campaign_synced) != (old.d365_synced, old.campaign_synced):
                synced_at = now
            done = PairState(decision.d365_synced, decision.campaign_synced,
                             decision.write_d365 if decision.write_d365 is not None else d_now, d_time_raw, synced_at,
                             pkey)
            if decision.write_d365 is None and decision.write_campaign is None:
                new_states[key] = done
                continue
            if decision.write_d365 is not None:
                change = PlannedChange(key, "d365", self.table, key, self.d365_field, d_now, decision.write_d365,
                                       decision.reason)
            else:
                assert decision.write_campaign is not None
                change = PlannedChange(key, "campaign", self.resource, pkey, self.campaign_field, c_now,
                                       decision.write_campaign, decision.reason)
            pending.append(_Pending(key, pkey, decision, done, seen, change))
            new_states[key] = seen  # until the write is acknowledged

        planned = tuple(p.change for p in pending)
        if self.dry_run:
            return self._result(n, key_map, full_read, planned, written=False)

        written = await self._write(pending, new_states, c_rows, n)
        await asyncio.to_thread(self._save, states, new_states, delta_link, written)
        return self._result(n, key_map, full_read, tuple(p.change for p in pending if p.key in written), written=True)

    def forget(self) -> None:
        """Drop this rule's cursor and per-pair state (a replay: the next run is a first run)."""
        self.store.clear_flow(self.cursor_name)
        self._pairs.forget()

    # -- reads ----------------------------------------------------------------------------------------

    def _load(self) -> tuple[dict[str, str], dict[str, PairState], str | None]:
        key_map = {e.source_key: e.target_id for e in self.store.iter_keys(self.via)
                   if e.target_id and not e.deleted}
        cursor = self.store.get_cursor(self.cursor_name)
        return key_map, self._pairs.load(), cursor.value if cursor is not None else None

    async def _read_d365(self, delta_link: str | None, key_map: Mapping[str, str], n: _Counters
                         ) -> tuple[dict[str, tuple[bool, str | None]], set[str], str | None, bool]:
        select = [self.d365_key, self.d365_field, "modifiedon"]
        while True:
            rows: dict[str, tuple[bool, str | None]] = {}
            deleted: set[str] = set()
            unpaired = 0
            new_link: str | None = None
            try:
                async for page in self.d365.read_changes(self.table, select, delta_link):
                    for row in page.rows:
                        key = str(row.get(self.d365_key))
                        if key in key_map:
                            rows[key] = (_as_bool(row.get(self.d365_field)), row.get("modifiedon"))
                        else:
                            unpaired += 1
                    deleted.update(k for k in page.deleted if k in key_map)
                    new_link = page.delta_link or new_link
            except ChangeTrackingExpired as exc:
                if delta_link is None:
                    raise
                note = f"optout {self.name}: {exc}; read {self.table} in full instead"
                log.warning("%s", note, extra={"event": "optout.full_read", "optout": self.name})
                n.notes.append(note)
                delta_link = None
                continue
            n.unpaired += unpaired
            return rows, deleted, new_link, delta_link is None

    async def _fetch_d365(self, keys: Sequence[str]) -> dict[str, tuple[bool, str | None]]:
        """The current value of pairs new to the key map that change tracking did not report."""
        from mapsync.engine.connectors.odata import literal

        out: dict[str, tuple[bool, str | None]] = {}
        for start in range(0, len(keys), FETCH_CHUNK):
            chunk = keys[start:start + FETCH_CHUNK]
            flt = " or ".join(f"{self.d365_key} eq {literal(k)}" for k in chunk)
            async for page in self.d365.read(self.table, [self.d365_key, self.d365_field, "modifiedon"], flt):
                for row in page:
                    out[str(row.get(self.d365_key))] = (_as_bool(row.get(self.d365_field)), row.get("modifiedon"))
        return out

    async def _read_campaign(self, by_pkey: Mapping[str, str], n: _Counters) -> dict[str, tuple[bool, str | None]]:
        out: dict[str, tuple[bool, str | None]] = {}
        async for page in self.campaign.read(self.resource):
            for row in page:
                pkey = row.get("PKey")
                if pkey in by_pkey:
                    # Only what the decision needs: full profile rows are dropped page by page.
                    out[pkey] = (_as_bool(row.get(self.campaign_field)), row.get("lastModified"))
                else:
                    n.unpaired += 1
        return out

    # -- writes ---------------------------------------------------------------------------------------

    async def _write(self, pending: Sequence[_Pending], new_states: dict[str, PairState],
                     c_rows: Mapping[str, tuple[bool, str | None]], n: _Counters) -> set[str]:
        to_d365 = [p for p in pending if p.change.system == "d365"]
        to_campaign = [p for p in pending if p.change.system == "campaign"]

        async def send(items: list[_Pending], connector: Any, table: str, fld: str) -> list[tuple[_Pending, WriteOutcome]]:
            out: list[tuple[_Pending, WriteOutcome]] = []
            for start in range(0, len(items), WRITE_CHUNK):
                chunk = items[start:start + WRITE_CHUNK]
                ops = [WriteOp("update", table, {fld: p.change.after}, target_id=p.change.target_id, ref=p.key)
                       for p in chunk]
                out.extend(zip(chunk, await connector.write(ops), strict=True))
            return out

        results = await asyncio.gather(send(to_d365, self.d365, self.table, self.d365_field),
                                       send(to_campaign, self.campaign, self.resource, self.campaign_field))
        written: set[str] = set()
        failures: list[tuple[_Pending, WriteOutcome]] = []
        for p, outcome in (*results[0], *results[1]):
            if outcome.ok:
                written.add(p.key)
                new_states[p.key] = p.new_state
                if p.change.system == "d365":
                    n.written_to_d365 += 1
                else:
                    n.written_to_campaign += 1
            else:
                n.failed += 1
                new_states[p.key] = p.failed_state
                failures.append((p, outcome))
        if failures:
            await asyncio.to_thread(self._dead_letters, failures, c_rows)
        return written

    def _dead_letters(self, failures: Sequence[tuple[_Pending, WriteOutcome]],
                      c_rows: Mapping[str, tuple[bool, str | None]]) -> None:
        with self.store.transaction():
            for p, outcome in failures:
                c = p.change
                record = {self.d365_key: p.key, "PKey": p.pkey, "write_to": c.system, "table": c.table,
                          "field": c.field, "value": c.after, "before": c.before, "reason": c.reason}
                status = f" ({outcome.status}{' ' + outcome.code if outcome.code else ''})" if outcome.status else ""
                why = f"{c.system} rejected {c.table}.{c.field}={str(c.after).lower()}{status}: {outcome.message or 'no message'}"
                self.store.add_dead_letter(self.flow, p.key, record, why, field=c.field,
                                           mapping_file=self.rule.file, mapping_line=self.rule.line)
        log.warning("optout %s: %d writes rejected (dead letters)", self.name, len(failures),
                    extra={"event": "optout.rejected", "optout": self.name, "count": len(failures)})

    def _save(self, old: Mapping[str, PairState], new: dict[str, PairState], delta_link: str | None,
              written: set[str]) -> None:
        with self.store.transaction():
            self._pairs.save(old, new)  # pairs that ended (gone from the key map) lose their state
            if delta_link is not None:
                self.store.set_cursor(self.cursor_name, delta_link)
            if written:
                self.store.resolve_dead_letters(self.flow, written)

    def _result(self, n: _Counters, key_map: Mapping[str, str], full_read: bool,
                planned: tuple[PlannedChange, ...], *, written: bool) -> OptOutResult:
        result = OptOutResult(name=self.name, **{name: getattr(n, name) for name in _COUNTERS}, pairs=len(key_map),
                              full_read=full_read, dry_run=not written, planned=planned, notes=tuple(n.notes))
        # Debug only: the commands print this result as one sentence; at info it was said twice.
        log.debug("optout %s: %s", self.name, " ".join(f"{k}={v}" for k, v in result.counts().items()),
                 extra={"event": "optout.done", "optout": self.name, **result.counts(), "dry_run": not written})
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
