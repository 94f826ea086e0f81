"""Output a person can read: log lines never glued into the live table, the opt-out summary said once, progress
that moves while a page is written, an honest time left, plain lines off a terminal, plan samples labelled as
samples, and a demo verdict that does not hide what did not go across."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

import mapsync.engine.demo as demo
import mapsync.engine.progress as progress
from mapsync.engine.dead_letter_kinds import ReasonGroup
from mapsync.engine.executor import FlowCounts
from mapsync.engine.progress import RunDisplay, configure_logging, remaining_seconds
from mapsync.engine.state.base import DeadLetter, DeadLetterStatus
from tests.e2e.conftest import Live
from tests.paths import FIXTURE_MAPPINGS

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (info|warning|error) mapsync\.")


def mapsync(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), *args],
                          cwd=live.config.parent, env={**os.environ, "COLUMNS": "120"}, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def mapsync_logging() -> object:
    logger = logging.getLogger("mapsync")
    saved = logger.handlers[:], logger.level, logger.propagate
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def test_a_log_line_during_the_live_display_is_printed_above_it_on_a_line_of_its_own(
        monkeypatch: pytest.MonkeyPatch, mapsync_logging: logging.Logger) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, force_terminal=True, width=100))
    configure_logging()
    display = RunDisplay(interactive=True)
    with display.live():
        display.on_progress("contacts", FlowCounts(read=5_000, created=1_200, expected_reads=20_000))
        time.sleep(0.3)  # let the table be drawn once
        logging.getLogger("mapsync.http").warning("retrying a request", extra={"event": "http.retry"})
        time.sleep(0.3)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "\n", screen.getvalue())  # cursor moves start a new line
    logged = [line for line in text.splitlines() if "retrying a request" in line]
    assert logged, "the log line goes through the display's console"
    assert all(LOG_LINE.match(line) for line in logged), logged  # nothing of the table before it on its line
    assert all(line.rstrip().endswith("event=http.retry") for line in logged)  # nor after it


def test_off_a_terminal_each_flow_says_where_it_is_at_most_every_ten_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    lines: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = lines.append  # type: ignore[method-assign]
    logger = logging.getLogger("mapsync.progress")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        display = RunDisplay(interactive=False)
        for t, flow in [(0, "contacts"), (0, "vehicles"), (4, "contacts"), (9, "vehicles"), (11, "contacts"),
                        (11.5, "vehicles"), (12, "contacts"), (20, "vehicles"), (22, "contacts")]:
            clock[0] = t
            display.on_progress(flow, FlowCounts(read=int(t * 100), created=int(t * 90), expected_reads=5_000))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert [(r.flow, r.n_created) for r in lines] == [("contacts", 990), ("vehicles", 1035), ("contacts", 1980)]
    assert all("\x1b" not in r.getMessage() for r in lines)


def test_progress_moves_while_a_page_is_written_not_once_per_page(live: Live) -> None:
    seen: list[tuple[int, int]] = []

    def watch(flow: str, counts: FlowCounts) -> None:
        if flow == "contacts":
            seen.append((counts.read, counts.created + getattr(counts, "landed", 0)))

    report = live.run(on_progress=watch)
    created = next(r.counts.created for r in report.flows if r.flow == "contacts")
    assert created > 100, "enough creates for more than one step"
    # The whole table is one page: a count between none and all of it was shown while its writes came back.
    assert any(0 < written < created for read, written in seen if read), seen


def test_time_left_counts_the_records_not_done_yet_and_is_absent_when_it_cannot_be_known() -> None:
    # Every record of the table read, 1,937 of them still being written: that is not "0 s left".
    counts = FlowCounts(read=20_000, filtered=1_000, created=17_063, expected_reads=20_000)
    assert counts.settled == 18_063
    assert remaining_seconds(counts, rate=500.0, done=counts.settled) == pytest.approx(1_937 / 500)
    done = FlowCounts(read=20_500, created=20_500, expected_reads=20_000)  # the count was a day old
    assert remaining_seconds(done, rate=500.0, done=done.settled) is None
    assert remaining_seconds(FlowCounts(read=50, created=50, expected_reads=20_000), rate=500.0, done=50) is None


def test_opt_out_has_its_own_progress_line(live: Live) -> None:
    display = RunDisplay(interactive=False)
    live.run(on_progress=display.on_progress, on_finished=display.on_finished)
    assert "opt-out email" in display.latest
    assert display.latest["opt-out email"].read > 0  # the pairs it went through
    assert "opt-out email" in display.finished and "contacts" in display.finished


def test_run_says_the_opt_out_summary_once_and_plan_labels_its_samples(live: Live) -> None:
    plan = mapsync(live, "plan", "--env", "emulator")
    assert plan.returncode == 0, plan.stderr
    shown = re.search(r"(\d+) of ([\d,]+) creates shown", plan.stdout)
    assert shown and int(shown[1]) == 3 and int(shown[2].replace(",", "")) > 3, plan.stdout
    run = mapsync(live, "run", "--env", "emulator")
    both = run.stdout + run.stderr
    assert len(re.findall(r"opt-?out email:", both)) == 1, both
    assert "\x1b[" not in both  # not a terminal: no escape codes


def _letter(reason: str, flow: str = "vehicles") -> DeadLetter:
    now = datetime.now(UTC)
    return DeadLetter(1, flow, "k1", {}, reason, None, "vehicles.map", 19, "v1", 1, now, now, DeadLetterStatus.OPEN)


def test_the_demo_counts_each_reason_shows_an_example_in_full_and_says_whether_it_is_expected(
        tmp_path: Path, mapsync_logging: logging.Logger) -> None:
    (tmp_path / "mappings").symlink_to(FIXTURE_MAPPINGS)
    with progress.console.capture() as captured:
        result = demo.run_demo(tmp_path, contacts=200, seed=42)
    text = captured.get()
    assert result.ok, text
    groups = re.findall(r"^\s+(\d[\d,]*) × (\S+) \((\w+)\): (.+)$", text, flags=re.M)
    assert groups, text
    examples = re.findall(r"^\s+e\.g\. (\S+): (.+)$", text, flags=re.M)
    assert len(examples) == len(groups)
    for key, reason in examples:  # untruncated: the key and the whole reason as stored
        assert re.fullmatch(r"[0-9a-f-]{36}", key) and not reason.endswith("…")
    assert len(re.findall(r"^\s+expected: ", text, flags=re.M)) == len(groups)
    assert "demo passed" in text


def test_the_demo_fails_on_a_reason_its_data_does_not_explain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapsync_logging: logging.Logger) -> None:
    assert demo.expected_because(ReasonGroup("vehicles", "failed", "cusYear: not a number", 3,
                                             _letter("cusYear: not a number")), set()) is None
    (tmp_path / "mappings").symlink_to(FIXTURE_MAPPINGS)
    surprise = ReasonGroup("vehicles", "failed", "cusYear: not a number", 3, _letter("cusYear: not a number"))
    monkeypatch.setattr(demo, "_explain_dead_letters", lambda job, deleted: [surprise])
    with progress.console.capture() as captured:
        result = demo.run_demo(tmp_path, contacts=100, seed=42)
    text = captured.get()
    assert not result.ok
    assert "demo passed" not in text and "demo failed: 3 record(s) did not go across" in text
