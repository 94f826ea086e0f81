"""The compiled project: the one value the language hands the engine.

``compile_project`` checks a project once and keeps what the checker worked out — which flows each flow
links to, each opt-out rule's ``via`` flow (named or inferred) — next to the compiled flows, so the engine
never walks the syntax tree again. Opt-out rules arrive with their direction and conflict rule as enums.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapsync.dsl import ast
from mapsync.dsl.errors import DslError, DslSyntaxError

if TYPE_CHECKING:
    from mapsync.dsl.compiler import CompiledFlow

__all__ = [
    "DEFAULT_CONFLICT",
    "DEFAULT_DIRECTION",
    "CompiledProject",
    "ConflictRule",
    "Direction",
    "OptOutRule",
    "RuleError",
    "optout_rule",
    "optout_rules",
    "run_order",
    "tables_used",
]


class Direction(StrEnum):
    D365_TO_CAMPAIGN = "d365-to-campaign"
    CAMPAIGN_TO_D365 = "campaign-to-d365"
    BOTH = "both"


class ConflictRule(StrEnum):
    LATEST_WINS = "latest-wins"
    OPTOUT_WINS = "optout-wins"
    D365_WINS = "d365-wins"
    CAMPAIGN_WINS = "campaign-wins"


DEFAULT_DIRECTION = Direction.BOTH
# Re-subscribing someone who opted out is the one mistake an opt-out sync must not make.
DEFAULT_CONFLICT = ConflictRule.OPTOUT_WINS


class RuleError(DslError):
    """An opt-out rule cannot run as written (an unknown word, no flow to pair its records through)."""


@dataclass(frozen=True, slots=True)
class OptOutRule:
    """``optout NAME { d365.T.f <-> campaign.R.g ... }`` ready to run. ``via`` is the flow whose key map pairs
    the records: the one the rule names, else the one flow between the two tables (the checker's choice)."""

    name: str
    d365_table: str
    d365_field: str
    campaign_table: str
    campaign_field: str
    via: str | None
    direction: Direction = DEFAULT_DIRECTION
    conflict: ConflictRule = DEFAULT_CONFLICT
    file: str = ""
    line: int | None = None  # where the rule is written: its dead letters point there
    where: str = ""  # `file:line:col` of the rule, for messages


def optout_rule(rule: ast.OptOut, via: str | None = None) -> OptOutRule:
    """The runnable form of a parsed rule; ``via`` (resolved by the checker) stands in when the rule has none."""
    named = str(rule.via.value) if rule.via is not None else None
    return OptOutRule(
        name=rule.name, d365_table=rule.d365.table.name, d365_field=rule.d365.field,
        campaign_table=rule.campaign.table.name, campaign_field=rule.campaign.field, via=named or via,
        direction=Direction(_word(rule, rule.direction, Direction, DEFAULT_DIRECTION, "direction")),
        conflict=ConflictRule(_word(rule, rule.conflict, ConflictRule, DEFAULT_CONFLICT, "conflict")),
        file=rule.span.file, line=rule.span.line, where=str(rule.span))


def _word(rule: ast.OptOut, setting: ast.Setting | None, allowed: type[StrEnum], default: StrEnum, what: str) -> str:
    if setting is None:
        return default.value
    word = str(setting.value)
    if word not in {a.value for a in allowed}:
        raise RuleError(f"{setting.span}: optout {rule.name}: {what} {word!r} is not one of "
                        f"{', '.join(a.value for a in allowed)}")
    return word


def optout_rules(rules: Any) -> list[OptOutRule]:
    """Runnable rules from a ``CompiledProject``, a ``Project``, a checker ``Analysis`` (``via`` resolved), a
    mapping or iterable of rules (parsed or compiled), or parsed modules."""
    optouts = getattr(rules, "optouts", rules)
    items = optouts.values() if isinstance(optouts, Mapping) else optouts
    out: list[OptOutRule] = []
    for item in items:
        if isinstance(item, OptOutRule):
            out.append(item)
        elif isinstance(item, ast.OptOut):
            out.append(optout_rule(item))
        elif isinstance(getattr(item, "optout", None), ast.OptOut):  # the checker's OptOutInfo
            out.append(optout_rule(item.optout, item.via))
        elif isinstance(item, ast.Module):
            out.extend(optout_rule(d) for d in item.decls if isinstance(d, ast.OptOut))
        else:
            raise TypeError(f"not an opt-out rule: {item!r}")
    return out


def run_order(links: Mapping[str, frozenset[str]], sources: Mapping[str, str]) -> tuple[str, ...]:
    """Flows another flow links to come first, so links resolve in the same run; then flows out of Dynamics
    365 before the flows back into it (their events point at the contacts those flows made).
    ``sources``: flow name -> the system it reads."""
    remaining = {name: set(links.get(name, ())) & set(sources) - {name} for name in sources}
    ordered: list[str] = []
    ready = sorted(n for n, d in remaining.items() if not d)
    remaining = {n: d for n, d in remaining.items() if d}
    while ready:
        name = ready.pop(0)
        ordered.append(name)
        for other in sorted(remaining):
            remaining[other].discard(name)
            if not remaining[other]:
                del remaining[other]
                ready.append(other)
    ordered.extend(sorted(remaining))  # the checker rejects cycles; keep any leftovers runnable anyway
    return tuple(sorted(ordered, key=lambda n: (sources[n] != "d365", ordered.index(n))))


@dataclass(frozen=True, eq=False)
class CompiledProject(Mapping[str, "CompiledFlow"]):
    """Compiled flows by name (it reads as that mapping), what each links to, the opt-out rules, the run order."""

    flows: Mapping[str, CompiledFlow]
    links: Mapping[str, frozenset[str]] = field(default_factory=dict)  # flow -> the other flows it links to
    optouts: Mapping[str, OptOutRule] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> CompiledFlow:
        return self.flows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.flows)

    def __len__(self) -> int:
        return len(self.flows)

    def links_of(self, names: Iterable[str]) -> dict[str, frozenset[str]]:
        return {name: self.links.get(name, frozenset()) for name in names}


def tables_used(paths: Iterable[Path], *, strict: bool = True) -> list[str]:
    """``system.name`` of every table a flow or opt-out rule of these mapping files reads or writes. A file
    that does not parse raises ``DslSyntaxError``, or is passed over with ``strict=False``."""
    from mapsync.dsl.parser import parse_file

    found: set[str] = set()
    for path in paths:
        result, _text = parse_file(path)
        if not result.ok:
            if not strict:
                continue
            raise DslSyntaxError(f"{path}: the mapping does not parse; run `mapsync validate` first")
        for decl in result.module.decls:
            refs: list[ast.TableRef | None] = []
            if isinstance(decl, ast.Flow):
                refs = [decl.source, decl.target]
            elif isinstance(decl, ast.OptOut):
                refs = [decl.d365.table, decl.campaign.table]
            found.update(r.dotted for r in refs if r is not None)
    return sorted(found)
