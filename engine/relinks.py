"""When a linked flow removes or re-creates target records, the flows linking to it re-read everything once.

A record that links to another flow's record stores that record's target id in its payload. When the other
flow deletes a target record or makes a new one for the same source key, the target system drops or
dangles the link although the linking record did not change at its source: such a flow re-reads all its
records once (unchanged payloads are still not written). Generations in the state store's meta say when
that is due, for every runner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mapsync.engine.state.base import StateStore

__all__ = ["bump_generation", "due", "mark_seen"]


def due(store: StateStore, flow: str, links_to: Iterable[str]) -> dict[str, str]:
    """The linked flows whose generation moved since ``flow`` last re-read, with that generation (taken now:
    a change made while this run reads is seen by the next run, not marked seen by this one)."""
    out = {}
    for other in sorted(links_to):
        generation = store.get_meta(f"links:{other}:generation")
        if generation is not None and generation != store.get_meta(f"links:{other}:seen-by:{flow}"):
            out[other] = generation
    return out


def mark_seen(store: StateStore, flow: str, seen: Mapping[str, str]) -> None:
    with store.transaction():
        for other, generation in seen.items():
            store.set_meta(f"links:{other}:seen-by:{flow}", generation)


def bump_generation(store: StateStore, flow: str) -> None:
    """``flow`` removed or re-created a target record (inside the acknowledging transaction)."""
    generation = int(store.get_meta(f"links:{flow}:generation") or 0) + 1
    store.set_meta(f"links:{flow}:generation", str(generation))
