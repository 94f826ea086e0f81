"""`mapsync run` as a person sees it: in a real terminal (tmux), against 20,000 seeded contacts and a flaky
emulator whose throttling makes the HTTP layer log retries while the live table is on screen.

The pane is captured about once a second during the first seconds of the contacts flow: no log line may be
glued to the table, and the progress line must move between captures. The run is not waited for: the test
stops the terminal after its captures (about 40 s in all, most of it seeding the emulator).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from mapsync.emulators.server import Emulator, start_in_thread, write_config
from tests.paths import FIXTURE_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
CONTACTS = 20_000
CAPTURES = 6
LOG_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (debug|info|warning|error) mapsync\.")
ROW = re.compile(r"^contacts\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s")  # flow, read, of about, written


def _tmux() -> str:
    """The tmux binary; installed from the distribution's packages when missing (as `.ci/run` does)."""
    found = shutil.which("tmux")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "tmux"], capture_output=True, timeout=300,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False)
        found = shutil.which("tmux")
        if found:
            return found
    pytest.skip("tmux is not installed and could not be installed (needs root and apt-get): "
                "the real-terminal check of `mapsync run` needs it")


def _capture(tmux: str, server: str, session: str) -> list[str]:
    out = subprocess.run([tmux, "-L", server, "capture-pane", "-p", "-t", session], capture_output=True,
                         text=True, timeout=10)
    return out.stdout.splitlines()


def test_run_in_a_terminal_keeps_log_lines_apart_from_a_table_that_moves(tmp_path: Path) -> None:
    tmux = _tmux()
    shutil.copytree(FIXTURE_MAPPINGS, tmp_path / "mappings")
    served = start_in_thread(Emulator(seed=42, contacts=CONTACTS, faults="flaky"))
    server, session = f"mapsync-test-{os.getpid()}", "run"
    try:
        config = write_config(tmp_path / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file,
                              state="sqlite:///.mapsync/tmux.sqlite", mappings="mappings")
        command = (f"cd {shlex.quote(str(tmp_path))} && {shlex.quote(sys.executable)} -m mapsync.engine.cli "
                   f"--config {shlex.quote(str(config))} run --env emulator; sleep 60")
        subprocess.run([tmux, "-L", server, "new-session", "-d", "-s", session, "-x", "120", "-y", "40",
                        "env", f"PYTHONPATH={ROOT}", "TERM=xterm-256color", "sh", "-c", command],
                       check=True, timeout=10)
        screens: list[list[str]] = []
        for _ in range(300):  # the contacts row appears once the first page is read (a few seconds)
            screen = _capture(tmux, server, session)
            if any(ROW.match(line) and ROW.match(line)[3] != "0" for line in screen):
                break
            time.sleep(0.1)
        for _ in range(CAPTURES):
            screens.append(_capture(tmux, server, session))
            time.sleep(1.0)
    finally:
        subprocess.run([tmux, "-L", server, "kill-server"], capture_output=True, timeout=10, check=False)
        served.stop()

    glued = [line for screen in screens for line in screen if (m := LOG_AT.search(line)) and m.start() > 0]
    assert not glued, "log lines glued to other output:\n" + "\n".join(glued)
    logged = [line for screen in screens for line in screen if LOG_AT.match(line)]
    assert logged, "the flaky emulator's throttling is logged while the table is on screen:\n" + \
        "\n\n".join("\n".join(s) for s in screens)
    rows = [next((line for line in screen if ROW.match(line)), None) for screen in screens]
    assert all(rows), "the contacts row is on every capture:\n" + "\n\n".join("\n".join(s) for s in screens)
    assert all(a != b for a, b in pairwise(rows)), rows  # the line moves every second
    written = [int(ROW.match(r)[3].replace(",", "")) for r in rows if r]
    moved = sum(b > a for a, b in pairwise(written))
    assert moved >= (CAPTURES - 1) // 2, rows  # and so does the count of records written, not once per page
