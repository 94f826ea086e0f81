"""Why a record's link cannot be resolved: the linked flow has no target record for the key it points at.

"Not written yet" is only one reason, and the only one that heals by waiting. The linked record may also be
filtered out by the linked flow's `where`, rejected by its mapping, or not exist at all; a person reading the
dead letter needs to know which, and where in the mappings to look. The answer comes from the linked flow's
own source, as it is now, evaluated by the linked flow itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from mapsync.dsl.runtime import Filtered, Rejected
from mapsync.engine.errors import ConfigError, SyncError
from mapsync.engine.sources import Source, source_for

__all__ = ["LinkReasons"]

log = logging.getLogger("mapsync.links")


class LinkReasons:
    """``await reasons(flow, keys)``: for keys of ``flow`` that have no target record, why — as the end of a
    sentence ("filtered out by the `where` of flow contacts (contacts.map:9)"). Keys missing from the
    answer: the linked flow would write them, so they are simply not written yet."""

    def __init__(self, flows: Mapping[str, Any], connectors: Any) -> None:
        self.flows = flows
        self.connectors = connectors
        self._sources: dict[str, Source | None] = {}

    async def __call__(self, flow: str, keys: Sequence[str]) -> dict[str, str]:
        other = self.flows.get(flow)
        source = self._source(flow)
        if other is None or source is None or not keys:
            return {}
        try:
            rows = await source.fetch_many(keys)
        except SyncError as exc:  # only an explanation: the dead letter is written either way
            log.debug("could not read flow %s's records to explain a link: %s", flow, exc)
            return {}
        where = f"{other.file}:{other.where_line}" if other.where_line else other.file
        out: dict[str, str] = {}
        for key in keys:
            row = rows.get(key)
            if row is None:
                out[key] = f"not in {other.source.system}.{other.source.name} (deleted, or never there)"
                continue
            outcome = other.evaluate(row)
            if isinstance(outcome, Filtered):
                out[key] = f"filtered out by the `where` of flow {flow} ({where})"
            elif isinstance(outcome, Rejected):
                out[key] = f"rejected by flow {flow} ({outcome.location}: {outcome.reason})"
        return out

    def _source(self, flow: str) -> Source | None:
        if flow not in self._sources:
            other = self.flows.get(flow)
            try:
                source = source_for(other, self.connectors) if other is not None else None
            except ConfigError:
                source = None
            # The journal cannot be looked up by key: no explanation beyond "not written yet".
            self._sources[flow] = source if source is not None and source.fetches_current else None
        return self._sources[flow]
