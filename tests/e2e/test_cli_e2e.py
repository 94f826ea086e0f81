"""The operator's commands as a consultant runs them: subprocesses against the emulators over TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.e2e.conftest import Live


def mapsync(live: Live, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), *args],
                          cwd=live.config.parent, env=env, capture_output=True, text=True, timeout=300)


def test_plan_writes_nothing_and_shows_filter_diffs_and_cost(live: Live) -> None:
    before = live.emulator.counters()["requests"]
    out = mapsync(live, "plan", "--env", "emulator")
    assert out.returncode == 0, out.stderr
    assert "$filter (sent to Dynamics 365 on full reads): statecode eq 0 and emailaddress1 ne null" in out.stdout
    assert "API calls: about" in out.stdout
    assert "create " in out.stdout and "email = " in out.stdout
    profiles = [p for p in live.emulator.adobe.store.rows_where("profile") if p[1].get("externalId")]
    assert profiles == []  # nothing was written
    assert live.emulator.counters()["requests"] != before  # but both systems were read


def test_run_status_deadletters_explain_retry(live: Live) -> None:
    owner = next(r["contactid"] for r in live.emulator.dataverse.store.rows("contact"))
    live.control("POST", "d365/new_vehicle", {"new_name": "no VIN", "statecode": 0,  # the mapping requires a VIN
                                              "new_contactid@odata.bind": f"/contacts({owner})"})
    first = mapsync(live, "run", "--env", "emulator")
    assert first.returncode == 1, first.stderr  # a record the mapping rejects is a dead letter
    assert "contacts" in first.stdout and "dead letters" in first.stdout
    status = mapsync(live, "status", "--env", "emulator")
    assert "contacts" in status.stdout and "vehicles" in status.stdout
    listed = mapsync(live, "deadletters", "list", "--env", "emulator", "--format", "json")
    letters = json.loads(listed.stdout)
    assert letters and all(d["flow"] and d["key"] and d["reason"] for d in letters)
    one = letters[0]
    shown = mapsync(live, "deadletters", "show", str(one["id"]), "--env", "emulator")
    assert json.loads(shown.stdout)["key"] == one["key"]
    explained = mapsync(live, "explain", "--env", "emulator", "--flow", one["flow"], "--key", one["key"])
    assert explained.returncode == 0, explained.stderr
    assert one["key"] in explained.stdout and "dead letter" in explained.stdout
    retried = mapsync(live, "deadletters", "retry", str(one["id"]), "--env", "emulator")
    assert "queued" in retried.stdout
    assert mapsync(live, "deadletters", "show", "999999", "--env", "emulator").returncode == 1


def test_unknown_flow_and_environment_are_usage_errors(live: Live) -> None:
    out = mapsync(live, "run", "--env", "emulator", "--flow", "contactz")
    assert out.returncode == 2 and "unknown flow(s): contactz" in out.stderr and "Traceback" not in out.stderr
    out = mapsync(live, "status", "--env", "prod")
    assert out.returncode == 2 and "emulator" in out.stderr and "Traceback" not in out.stderr


def test_watch_stops_cleanly_on_sigterm(live: Live) -> None:
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                             "emulator", "--watch", "1"], cwd=live.config.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert "stopped" in out, err
    assert "Traceback" not in err
    assert live.emulator.counters()["requests"]["ims"] == 1  # one token for every round, not one per round


def test_bad_credentials_unreachable_service_and_broken_state_each_say_what_to_fix(live: Live) -> None:
    text = live.config.read_text()
    bad_secret = live.config.with_name("bad-secret.yaml")
    bad_secret.write_text(text.replace("emulator-d365-secret", "not-the-secret-4711"))
    out = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(bad_secret), "run", "--env", "emulator"],
                         cwd=live.config.parent, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "environments.emulator.d365.client_secret" in out.stderr and "AADSTS7000215" in out.stderr
    assert "not-the-secret-4711" not in out.stdout + out.stderr

    port = live.served.base_url.rsplit(":", 1)[1]
    unreachable = live.config.with_name("unreachable.yaml")
    unreachable.write_text(text.replace(f":{port}", ":9"))  # the discard port: nothing listens there
    out = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(unreachable), "run", "--env",
                          "emulator"], cwd=live.config.parent, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "cannot reach" in out.stderr and "Traceback" not in out.stderr

    state = live.config.parent / ".mapsync" / "e2e.sqlite"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"this is not a database" * 20)
    out = mapsync(live, "run", "--env", "emulator")
    assert out.returncode == 1 and "not a readable mapsync state database" in out.stderr
    assert "Traceback" not in out.stderr
    assert state.read_bytes() == b"this is not a database" * 20  # left as it was: nothing lost
