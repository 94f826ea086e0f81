"""State bound to its environment (issue 15): a state store made against one emulator is refused against
another, and `--rebind` moves it deliberately, ending as a clean run against the new services would."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mapsync.emulators.server import Emulator, start_in_thread, write_config
from mapsync.emulators.tls import TestCA
from mapsync.engine.demo import verify
from mapsync.engine.identity import EnvironmentMismatch
from mapsync.engine.runner import load_job, run_job
from mapsync.engine.state.base import open_store
from tests.e2e.processes import emulate, free_port
from tests.paths import FIXTURE_MAPPINGS


def test_a_state_made_against_port_a_is_refused_against_port_b_until_rebound(project: Path) -> None:
    config = project / "mapsync.yaml"
    first = Emulator(seed=9, contacts=80)
    served = start_in_thread(first)
    write_config(config, base_url=served.base_url, ca_file=served.ca_file)
    try:
        assert asyncio.run(run_job(load_job(config, "emulator"))).flows
    finally:
        served.stop()
    old_port = served.port
    with open_store(load_job(config, "emulator").env.state_url) as store:
        identities = store.get_identities("emulator")
        assert set(identities) == {"d365", "campaign"} and f":{old_port}" in identities["d365"]
        assert any(f":{old_port}/" in (store.get_cursor(f) or _NoCursor).value for f in ("contacts", "vehicles"))

    second = Emulator(seed=9, contacts=80)  # the same seed on another port: a new instance, as after a restart
    ca = TestCA(project / ".mapsync" / "second-ca")
    other = start_in_thread(second, ca=ca)
    try:
        write_config(config, base_url=other.base_url, ca_file=other.ca_file)  # the same config file, rewritten
        with pytest.raises(EnvironmentMismatch) as info:
            asyncio.run(run_job(load_job(config, "emulator")))
        message = str(info.value)
        assert "--rebind" in message and f":{old_port}" in message and f":{other.port}" in message
        assert info.value.setting == "environments.emulator.state"
        assert second.counters()["requests"].get("campaign", 0) == 0  # refused before reading or writing

        report = asyncio.run(run_job(load_job(config, "emulator"), rebind=True))
        assert report.ok or not report.errors, report.errors
        assert verify(load_job(config, "emulator"), second) == []  # filled as a clean run would fill it
        with open_store(load_job(config, "emulator").env.state_url) as store:
            assert all(f":{old_port}/" not in c.value for f in load_job(config, "emulator").flows
                       if (c := store.get_cursor(f)) is not None)  # no stale delta link left to follow
        again = asyncio.run(run_job(load_job(config, "emulator")))  # bound now: no refusal, nothing to do
        assert all(r.counts.written == 0 for r in again.flows)
    finally:
        other.stop()


class _NoCursor:
    value = ""






def test_the_three_command_reproduction_gives_a_clear_refusal(tmp_path: Path) -> None:
    """`emulate --port A --write-config`, run, stop; `emulate --port B` with the same config, run."""
    shutil.copytree(FIXTURE_MAPPINGS, tmp_path / "mappings")
    config = tmp_path / "mapsync.yaml"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(config), "run", "--env",
                               "emulator", *extra], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "COLUMNS": "200"})

    a_port, b_port = free_port(), free_port()
    a = emulate(config, a_port)
    try:
        assert run().returncode in (0, 1)  # 1: the demo data leaves dead letters
    finally:
        a.terminate()
        a.wait(timeout=30)
    b = emulate(config, b_port)
    try:
        refused = run()
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "--rebind" in refused.stderr and "ConnectError" not in refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr
        moved = run("--rebind")
        assert moved.returncode in (0, 1), moved.stdout + moved.stderr
        assert "unreachable" not in moved.stdout and f":{a_port}" not in moved.stdout
    finally:
        b.terminate()
        b.wait(timeout=30)
