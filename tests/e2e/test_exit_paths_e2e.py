"""Every exit path releases what it holds and says what happened (issue 15): signals, a failing flow under
`plan`, a busy port under `mapsync emulate`, and two emulators with two configs side by side."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mapsync.emulators.faults import FaultProfile
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live
from tests.e2e.processes import emulate, free_port
from tests.paths import FIXTURE_MAPPINGS


def mapsync(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_releases_the_leases_and_records_interrupted(live: Live, sig: signal.Signals,
                                                                      status: int) -> None:
    # Slow Campaign replies keep the contacts flow writing long enough to be interrupted in the middle.
    live.emulator.adobe_faults.set_profile(FaultProfile(p_slow=1.0, slow_seconds=0.3))
    proc = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                             "emulator"], cwd=live.config.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    state = live.job().env.state_url
    try:
        deadline = time.monotonic() + 120
        held = False
        while time.monotonic() < deadline and proc.poll() is None and not held:
            time.sleep(0.1)
            if Path(state.removeprefix("sqlite:///")).exists():
                with open_store(state) as store:
                    held = store.get_lease("contacts", "emulator") is not None
        assert held and proc.poll() is None, "the run never got to hold its lease"
        time.sleep(0.5)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, out + err
    assert "Traceback" not in err and "never awaited" not in err
    with open_store(state) as store:
        assert store.get_lease("contacts", "emulator") is None
        assert store.last_run("contacts").outcome == "interrupted"


def test_plan_exits_1_when_a_flow_fails(live: Live) -> None:
    document = yaml.safe_load(live.config.read_text(encoding="utf-8"))
    events = document["environments"]["emulator"]["events"]
    events["journal_url"] = events["journal_url"].rsplit("/", 1)[0] + "/no-such-registration"
    live.config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    proc = mapsync("--config", str(live.config), "plan", "--env", "emulator", "--flow", "email_sends",
                   cwd=live.config.parent)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "email_sends" in proc.stdout and "Traceback" not in proc.stderr


def test_emulate_on_a_busy_port_says_so_before_seeding(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = mapsync("emulate", "--port", str(port), "--contacts", "5", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"mapsync: error: port {port} is in use (try --port N)"
    assert proc.stdout == ""






def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_emulators_with_two_configs_in_one_folder_never_disturb_each_other(tmp_path: Path) -> None:
    shutil.copytree(FIXTURE_MAPPINGS, tmp_path / "mappings")
    a_config, b_config = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a = emulate(a_config, free_port())
    b: subprocess.Popen[str] | None = None
    try:
        first = mapsync("--config", str(a_config), "run", "--env", "emulator", cwd=tmp_path)
        assert first.returncode in (0, 1), first.stdout + first.stderr  # 1: the demo data has dead letters
        a_files = _digest(tmp_path / ".mapsync")
        b = emulate(b_config, free_port())
        second = mapsync("--config", str(b_config), "run", "--env", "emulator", cwd=tmp_path)
        assert second.returncode in (0, 1), second.stdout + second.stderr
        after = _digest(tmp_path / ".mapsync")
        assert {k: v for k, v in after.items() if k in a_files and not k.endswith(".sqlite")} == \
               {k: v for k, v in a_files.items() if not k.endswith(".sqlite")}  # a's CA untouched by b
        again = mapsync("--config", str(a_config), "run", "--env", "emulator", cwd=tmp_path)
        assert again.returncode in (0, 1), again.stdout + again.stderr
        assert "not trusted" not in again.stdout + again.stderr
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    a_env = yaml.safe_load(a_config.read_text(encoding="utf-8"))["environments"]["emulator"]
    b_env = yaml.safe_load(b_config.read_text(encoding="utf-8"))["environments"]["emulator"]
    assert a_env["state"] != b_env["state"] and a_env["ca_file"] != b_env["ca_file"]
