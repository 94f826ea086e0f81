"""A service that goes away mid-run (issue 15): the run stops within the outage bound with one line per service,
and once the service is back the next run ends exactly as one clean run would.

The bound is ``limits.outage_seconds`` (3 s here). The elapsed-time checks below are liveness bounds, far above
what a healthy machine needs: without the circuit breaker such a run retries each record for many minutes.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mapsync.emulators.server import Emulator, Served, start_in_thread, write_config
from mapsync.engine.demo import verify
from mapsync.engine.runner import RunReport, load_job, run_job
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import counts

BOUND = 3.0
LIVENESS = BOUND + 40.0  # exits within the bound plus a few seconds; generous for 2 busy cores


def with_outage_bound(config: Path, seconds: float) -> None:
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    for env in document["environments"].values():
        for service in ("d365", "campaign", "events"):
            env[service].setdefault("limits", {})["outage_seconds"] = seconds
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


class KillSwitch:
    """ASGI wrapper that stops the served emulator (from another thread, as a crash would) at the Nth Campaign
    profile create, so the outage starts while records are being written."""

    def __init__(self, app: Any, after: int) -> None:
        self.app = app
        self.after = after
        self.seen = 0
        self.armed = True
        self.served: Served | None = None
        self.killed_at: float | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (self.armed and scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].endswith("/profileAndServicesExt/profile")):
            self.seen += 1
            if self.seen == self.after and self.served is not None:
                self.armed = False
                self.killed_at = time.monotonic()
                threading.Thread(target=self.served.stop, daemon=True).start()
        await self.app(scope, receive, send)


def snapshot(emulator: Emulator) -> dict[str, Any]:
    """What both systems hold, without the ids and timestamps each run makes anew."""
    profiles = sorted((p.get("externalId") or "", p.get("email") or "", p.get("firstName") or "",
                       p.get("lastName") or "") for _, p in emulator.adobe.store.rows_where("profile"))
    d365 = {table: len(list(emulator.dataverse.store.rows(table)))
            for table in ("contact", "acs_emailsend", "acs_emailopen", "acs_emailclick")}
    return {"profiles": profiles, "d365": d365}


@pytest.fixture
def clean_snapshot(project: Path) -> Iterator[dict[str, Any]]:
    emulator = Emulator(seed=5, contacts=300)
    served = start_in_thread(emulator)
    folder = project / "clean"
    folder.mkdir()
    shutil.copytree(project / "mappings", folder / "mappings")
    config = write_config(folder / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file)
    try:
        asyncio.run(run_job(load_job(config, "emulator")))
        yield snapshot(emulator)
    finally:
        served.stop()


def test_an_emulator_killed_mid_run_stops_the_run_within_the_bound_and_the_next_run_ends_clean(
        project: Path, clean_snapshot: dict[str, Any]) -> None:
    emulator = Emulator(seed=5, contacts=300)
    switch = KillSwitch(emulator.app, after=40)
    emulator.app = switch
    served = start_in_thread(emulator)
    switch.served = served
    config = write_config(project / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file)
    with_outage_bound(config, BOUND)

    stopped: RunReport = asyncio.run(run_job(load_job(config, "emulator")))
    elapsed = time.monotonic() - (switch.killed_at or 0.0)
    assert switch.killed_at is not None, "the emulator was never stopped"
    assert elapsed < LIVENESS
    assert not stopped.ok
    assert "campaign" in stopped.outages
    lines = stopped.outage_lines()
    assert 1 <= len(lines) <= 3  # one per service that was in use, not one per record or per flow
    assert all(re.search(r"unreachable since \d\d:\d\d:\d\d UTC: (refused|connection dropped|timeout|connect failed)",
                         line) for line in lines), lines
    assert all("nothing lost" in line for line in lines)
    with open_store(load_job(config, "emulator").env.state_url) as store:
        assert all(store.get_lease(flow, "emulator") is None for flow in load_job(config, "emulator").flows)
        assert all(run.outcome != "running" for run in store.list_runs(limit=50))

    # The service is back (same port, same CA): one run ends exactly where a clean run ends.
    restarted = start_in_thread(emulator, port=served.port, ca=served._ca)
    try:
        with_outage_bound(config, 60.0)
        after = asyncio.run(run_job(load_job(config, "emulator")))
        assert after.ok, (after.errors, after.outage_lines())
        assert verify(load_job(config, "emulator"), emulator) == []
        assert snapshot(emulator) == clean_snapshot
        assert counts(after, "contacts")["created"] > 0  # it did resume work that the outage left undone
    finally:
        restarted.stop()


def test_a_run_whose_ca_is_not_trusted_stops_at_once_without_retrying(project: Path) -> None:
    emulator = Emulator(seed=5, contacts=20)
    served = start_in_thread(emulator)
    other = start_in_thread(Emulator(seed=5, contacts=0))  # another CA: the run trusts the wrong one
    try:
        config = write_config(project / "mapsync.yaml", base_url=served.base_url, ca_file=other.ca_file)
        with_outage_bound(config, 600.0)  # the bound is never waited for: waiting cannot fix trust
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(config), "run", "--env", "emulator"],
                              capture_output=True, text=True, cwd=project, timeout=120)
        assert time.monotonic() - started < 60
    finally:
        served.stop()
        other.stop()
    output = proc.stdout + proc.stderr
    assert proc.returncode in (1, 2), output
    assert "Traceback" not in output
    assert "not trusted" in output and "ca_file" in output
    assert "retry" not in output


@pytest.mark.slow
def test_a_killed_emulate_process_stops_the_run_within_the_bound_in_few_lines(project: Path) -> None:
    """The real thing: `mapsync emulate` as its own process, SIGKILLed while `mapsync run` writes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = project / "mapsync.yaml"
    emulate = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "emulate", "--port", str(port), "--contacts", "3000",
                                "--write-config", str(config)], cwd=project, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    run: subprocess.Popen[str] | None = None
    try:
        assert emulate.stdout is not None
        for line in emulate.stdout:  # bounded: the process prints a handful of lines, then waits
            if "Press Ctrl+C" in line:
                break
        with_outage_bound(config, BOUND)
        run = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "--config", str(config), "run", "--env", "emulator"],
                               cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "200"})
        state = project / ".mapsync" / "mapsync.sqlite"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:  # wait until records are being written
            if state.exists():
                with open_store(f"sqlite:///{state}") as store:
                    if store.count_keys("contacts") > 0:
                        break
            time.sleep(0.2)
        assert run.poll() is None, "the run ended before the emulator could be killed"
        emulate.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        output, _ = run.communicate(timeout=LIVENESS + 60)
        assert time.monotonic() - killed < LIVENESS
    finally:
        for proc in (run, emulate):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert run.returncode == 1, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) <= 20, output
    assert "unreachable since" in output and "refused" in output, output
    assert "Traceback" not in output

    # Restarted, `mapsync emulate` is a new instance (new data) on the same port: the state is refused, not
    # followed into records that no longer exist; `--rebind` then ends where a clean run ends.
    emulate = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "emulate", "--port", str(port), "--contacts",
                                "3000", "--write-config", str(config)], cwd=project, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert emulate.stdout is not None
        for line in emulate.stdout:
            if "Press Ctrl+C" in line:
                break

        def again(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(config), "run", "--env",
                                   "emulator", *extra], cwd=project, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "COLUMNS": "200"})

        refused = again()
        assert refused.returncode == 2 and "--rebind" in refused.stderr, refused.stdout + refused.stderr
        rebound = again("--rebind")
        assert rebound.returncode in (0, 1) and "unreachable" not in rebound.stdout, rebound.stdout + rebound.stderr
        steady = again()
        assert steady.returncode in (0, 1), steady.stdout + steady.stderr
        with open_store(f"sqlite:///{state}") as store:
            assert store.last_run("contacts").counts["created"] == 0  # the rebound run did it all, once
            assert store.last_run("contacts").outcome == "ok"
    finally:
        emulate.kill()
        emulate.wait()
