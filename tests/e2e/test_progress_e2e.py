"""The progress display knows how big a full read is (Dataverse's record count) and says how long is left."""

from __future__ import annotations

import logging

from mapsync.engine.executor import FlowCounts
from mapsync.engine.progress import RunDisplay, format_duration, remaining_seconds
from tests.e2e.conftest import Live


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_time_left_is_the_rest_of_the_read_at_the_rate_so_far() -> None:
    assert remaining_seconds(FlowCounts(read=250, expected_reads=1_000), rate=50.0) == 15.0
    assert remaining_seconds(FlowCounts(read=1_200, expected_reads=1_000), rate=50.0) == 0.0  # the count was old
    assert remaining_seconds(FlowCounts(read=250), rate=50.0) is None  # an incremental read: size unknown
    assert remaining_seconds(FlowCounts(read=20, expected_reads=1_000), rate=50.0) is None  # too early to say
    assert [format_duration(s) for s in (35, 44 * 60, 3_900)] == ["35 s", "44 min", "1 h 05 min"]


def test_a_full_read_reports_its_size_and_the_time_left(live: Live) -> None:
    display = RunDisplay(interactive=False, every_seconds=0)
    lines = Lines()
    logger = logging.getLogger("mapsync.progress")
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        live.run(on_progress=display.on_progress)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old_level)
    contacts = [r for r in lines.records if getattr(r, "flow", None) == "contacts"]
    assert contacts and all(r.expected == 120 for r in contacts if hasattr(r, "expected"))
    assert any("of about 120" in r.getMessage() and " left" in r.getMessage() for r in contacts)
    assert display.latest["contacts"].expected_reads == 120
    events = [r for r in lines.records if getattr(r, "flow", "").startswith("email_")]
    assert not any(hasattr(r, "expected") for r in events)  # the journal does not say how many events it holds
