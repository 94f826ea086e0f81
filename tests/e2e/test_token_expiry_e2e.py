"""Expired and refused tokens (issue 12): a 401 renews the token and resends; a 401 after renewal is the
credentials' fault, stops the run with the setting named, and never turns a record into a dead letter."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mapsync.emulators.faults import FaultProfile
from mapsync.engine.demo import verify
from mapsync.engine.errors import ConfigError
from mapsync.engine.executor import TRANSIENT_PREFIX
from mapsync.engine.state.base import open_store
from tests.e2e.conftest import Live


def permanent_dead_letters(live: Live) -> list[str]:
    """Open dead letters the next run will not retry by itself (neither transient nor waiting for a link)."""
    with open_store(live.job().env.state_url) as store:
        return [f"{d.flow} {d.source_key}: {d.reason}" for d in store.list_dead_letters(status="open", limit=10_000)
                if not d.reason.startswith((TRANSIENT_PREFIX, "deferred:"))]


def test_tokens_expiring_under_load_make_no_permanent_dead_letter(live: Live) -> None:
    # Every other Campaign request revokes every token first: some requests see their renewed token revoked
    # again before the resend arrives, which today turns their records into permanent 401 dead letters.
    live.emulator.adobe_faults.set_profile(FaultProfile(p_token_expiry=0.5, token_min_age_seconds=0, seed=3))
    try:
        live.run()
    except ConfigError as exc:  # renewals that keep failing: the run stops, naming the credential
        assert exc.setting is not None and exc.setting.endswith("campaign.client_secret")
    assert permanent_dead_letters(live) == []
    live.emulator.adobe_faults.set_profile("none")
    report = live.run()
    assert report.ok, report.errors
    assert permanent_dead_letters(live) == []
    assert verify(live.job(), live.emulator) == []


def test_a_token_refused_after_renewal_is_a_configuration_error_not_a_dead_letter(live: Live) -> None:
    live.run(only=["contacts"])  # tokens worked once: the refusals below are not a wrong secret from the start
    live.control("PATCH", f"d365/contact/{next(live.emulator.dataverse.store.rows('contact'))['contactid']}",
                 {"lastname": "Renewed"})
    # Every token refused, always, even one issued a moment ago: the application's access was withdrawn.
    live.emulator.adobe_faults.set_profile(FaultProfile(p_token_expiry=1.0, token_min_age_seconds=0))
    proc = subprocess.run([sys.executable, "-m", "mapsync.engine.cli", "--config", str(live.config), "run", "--env",
                           "emulator", "--flow", "contacts"], capture_output=True, text=True, timeout=300,
                          cwd=live.config.parent)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "campaign.client_secret" in proc.stderr and "Traceback" not in proc.stderr
    assert permanent_dead_letters(live) == []
    with open_store(live.job().env.state_url) as store:
        assert store.get_lease("contacts", "emulator") is None
        assert store.last_run("contacts").outcome.startswith("failed: ")


@pytest.mark.parametrize("flows", [["email_sends", "email_opens", "email_clicks", "email_bounces"]])
def test_a_wrong_secret_releases_every_lease_and_records_each_outcome(live: Live, flows: list[str]) -> None:
    text = live.config.read_text(encoding="utf-8")
    live.config.write_text(text.replace("emulator-campaign-secret", "not-the-secret"), encoding="utf-8")
    args = [arg for flow in flows for arg in ("--flow", flow)]
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "mapsync.engine.cli", "--config",
                           str(live.config), "run", "--env", "emulator", *args],
                          capture_output=True, text=True, timeout=300, cwd=live.config.parent)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "campaign.client_secret" in proc.stderr
    assert "never awaited" not in output and "Warning" not in output and "Traceback" not in output
    assert "not-the-secret" not in output
    with open_store(live.job().env.state_url) as store:
        for flow in flows:
            assert store.get_lease(flow, "emulator") is None, flow
            last = store.last_run(flow)
            assert last is not None and last.outcome != "running", flow
            assert last.outcome.startswith("failed: ") or last.outcome == "interrupted", (flow, last.outcome)
