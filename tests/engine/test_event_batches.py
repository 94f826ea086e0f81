"""Email events fill batches across journal pages: every batch is full but the last, and a batch's cursor never
passes an event that is not in it or in a batch before it (so a crash after it loses nothing)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given, settings
from hypothesis import strategies as st

from mapsync.engine.connectors.base import EventPage
from mapsync.engine.sources import EventFeedSource, SourceBatch


class Journal:
    """Pages of events, each page's position its number; events alternate between kinds."""

    last_gap = None

    def __init__(self, pages: list[list[str]]) -> None:
        self.pages = pages

    async def read(self, since: str | None) -> AsyncIterator[EventPage]:
        for number, kinds in enumerate(self.pages, start=1):
            if since is not None and number <= int(since):
                continue
            events = tuple({"event": {"id": f"{number}.{i}", "type": kind}} for i, kind in enumerate(kinds))
            yield EventPage(events, str(number))


def _batches(source: EventFeedSource, since: str | None) -> list[SourceBatch]:
    async def collect() -> list[SourceBatch]:
        return [b async for b in source.batches(since, full=since is None)]

    return asyncio.run(collect())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["send", "open"]), max_size=12), max_size=15), st.integers(1, 10))
def test_batches_are_full_and_cursors_never_skip_an_event(pages: list[list[str]], size: int) -> None:
    journal = Journal(pages)
    batches = _batches(EventFeedSource(journal, "send", min_batch=size), None)  # type: ignore[arg-type]
    sends = [f"{n}.{i}" for n, kinds in enumerate(pages, start=1) for i, kind in enumerate(kinds) if kind == "send"]
    assert [e["id"] for b in batches for e in b.rows] == sends  # each once, in journal order
    assert all(len(b.rows) == size for b in batches[:-1]) and (not batches or len(batches[-1].rows) <= size)
    written: list[str] = []
    for batch in batches:
        written += [e["id"] for e in batch.rows]
        if batch.cursor is not None:
            # A restart from this cursor reads every event after it: those before it must all be written.
            before = [s for s in sends if int(s.split(".")[0]) <= int(batch.cursor)]
            assert set(before) <= set(written)
            rest = [e["id"] for b in _batches(EventFeedSource(journal, "send", min_batch=size), batch.cursor)  # type: ignore[arg-type]
                    for e in b.rows]
            assert set(written) | set(rest) == set(sends)  # nothing lost after a crash right after this batch
    if pages:
        assert batches and batches[-1].cursor == str(len(pages))  # the read ends at the journal's end
