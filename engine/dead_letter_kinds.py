"""What an open dead letter means for a person: will it go through by itself, or does it need a fix?

`mapsync status` and `mapsync deadletters list` count with these same words, so they always agree.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mapsync.engine.executor import DEFERRED_PREFIX, TRANSIENT_PREFIX
from mapsync.engine.state.base import DeadLetter, DeadLetterStatus

__all__ = ["KINDS", "ReasonGroup", "group_by_reason", "kind", "open_letters", "reason_shape", "tally", "tally_line"]

# kind -> what it means, in the order shown. All but "failed" go through again on the next run by themselves.
KINDS: dict[str, str] = {
    "deferred": "waiting for the record they link to",
    "retrying": "after a transient error",
    "queued": "by `deadletters retry`",
    "failed": "need a fix",
}


def kind(letter: DeadLetter) -> str:
    if letter.status == DeadLetterStatus.RETRIED:
        return "queued"
    if letter.reason.startswith(DEFERRED_PREFIX):
        return "deferred"
    if letter.reason.startswith(TRANSIENT_PREFIX):
        return "retrying"
    return "failed"


def open_letters(store: Any, flow: str | None = None) -> list[DeadLetter]:
    """Every dead letter not resolved yet (open, or queued for a retry), oldest first."""
    letters = [*store.list_dead_letters(flow=flow, status=DeadLetterStatus.OPEN, limit=10**9),
               *store.list_dead_letters(flow=flow, status=DeadLetterStatus.RETRIED, limit=10**9)]
    return sorted(letters, key=lambda d: d.id)


def tally(letters: Iterable[DeadLetter]) -> Counter[str]:
    return Counter(kind(d) for d in letters)


def tally_line(counts: Counter[str], env: str) -> str:
    """``41 open dead letter(s): 40 deferred (go through by themselves ...), 1 failed (need a fix ...)``."""
    total = sum(counts.values())
    if not total:
        return "no open dead letters"
    again = [f"{counts[k]:,} {k} ({KINDS[k]})" for k in ("deferred", "retrying", "queued") if counts[k]]
    parts = []
    if again:
        parts.append(", ".join(again) + ": the next run takes them again by itself")
    if counts["failed"]:
        parts.append(f"{counts['failed']:,} failed ({KINDS['failed']}: `mapsync deadletters list --env {env}`, "
                     "then `deadletters show ID`)")
    return f"{total:,} open dead letter(s): " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    """Dead letters of one flow and kind whose reasons differ only in ids, counts and URLs."""

    flow: str
    kind: str
    shape: str  # the reason with what differs per record replaced by "…"
    count: int
    example: DeadLetter  # the oldest one, to show in full


def group_by_reason(letters: Iterable[DeadLetter]) -> list[ReasonGroup]:
    """Largest group first."""
    groups: dict[tuple[str, str, str], list[DeadLetter]] = {}
    for d in sorted(letters, key=lambda d: d.id):
        groups.setdefault((d.flow, kind(d), reason_shape(d.reason)), []).append(d)
    return sorted((ReasonGroup(flow, k, shape, len(ds), ds[0]) for (flow, k, shape), ds in groups.items()),
                  key=lambda g: (-g.count, g.flow, g.shape))


def reason_shape(reason: str) -> str:
    text = reason.removeprefix(DEFERRED_PREFIX).removeprefix(TRANSIENT_PREFIX)
    text = re.sub(r"https?://\S+", "…", text)
    # Ids and long numbers differ per record; line numbers, HTTP statuses and error codes are the point.
    return re.sub(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|\b\d{5,}\b", "…", text)
