"""`mapsync doctor` against the emulators over TLS: each setup switch of the emulator breaks one step of the
setup, doctor finds it (✗) with the step that fixes it, and with the switch undone the same check is ✓ again.
A check that cannot run because an earlier one failed is skipped, not failed; no secret is ever printed."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from mapsync.emulators.server import Credentials
from mapsync.engine.cli import main
from tests.e2e.conftest import Live


def doctor(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["--config", str(config), "doctor", "--env", "emulator", *extra])
    out, err = capsys.readouterr()
    return code, out + err


def checks(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, Any]], str]:
    code, out = doctor(config, capsys, "--format", "json")
    found = json.loads(out)
    assert all(set(c) == {"check", "ok", "detail", "fix"} for c in found)
    return code, {c["check"]: c for c in found}, out


def test_a_correct_setup_passes_every_check(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    level = logging.getLogger("mapsync").level
    code, text = doctor(live.config, capsys)
    assert logging.getLogger("mapsync").level == level  # quiet while it runs, as it was afterwards
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == "mapsync doctor — environment emulator"
    assert lines[-1] == "13 passed, 0 failed, 0 skipped"
    body = lines[1:-1]
    assert [line.split()[1] for line in body] == [
        "entra.tenant", "entra.client_secret", "d365.application_user", "d365.tables", "d365.privileges",
        "d365.change_tracking", "d365.alternate_keys", "ims.credentials", "campaign.organization",
        "campaign.resources", "events.journal", "state.writable", "clock.skew"]
    assert all(line.startswith("✓ ") for line in body)
    assert "activity tables acs_emailbounce, acs_emailclick, acs_emailopen, acs_emailsend" in text


# (switch, the check that fails, words of its detail, words of its fix)
BROKEN = [
    pytest.param({"application_user": "missing"}, "d365.application_user",
                 "admits no application user for client", "Application users → + New app user", id="no-app-user"),
    pytest.param({"application_user": "disabled"}, "d365.application_user", "is disabled",
                 "Application users → the app user of", id="app-user-disabled"),
    pytest.param({"privileges": {"remove": ["prvReadContact"]}}, "d365.privileges",
                 "prvReadContact missing (flow contacts, opt-out email)",
                 "Security roles → the application user's role (e.g. mapsync) → grant at Organization level: "
                 "Contact: Read", id="missing-privilege"),
    pytest.param({"privileges": {"remove": ["prvCreateacs_emailsend", "prvAppendToContact"]}}, "d365.privileges",
                 "prvCreateacs_emailsend missing (flow email_sends)",
                 "acs_emailsend: Create; Contact: Append To", id="missing-activity-privileges"),
    pytest.param({"change_tracking": {"contact": False}}, "d365.change_tracking",
                 "off on contact (flow contacts, opt-out email)",
                 "Tables → contact → Properties → Advanced options → Track changes → Save", id="tracking-off"),
    pytest.param({"key_status": {"acs_emailsend:acs_eventid_key": "Failed"}}, "d365.alternate_keys",
                 "acs_emailsend: key acs_eventid_key on acs_eventid is Failed",
                 "reactivate the key acs_eventid_key", id="key-failed"),
    pytest.param({"key_status": {"acs_emailopen:acs_eventid_key": "Pending"}}, "d365.alternate_keys",
                 "acs_emailopen: key acs_eventid_key on acs_eventid is Pending, not yet Active",
                 "wait until Dataverse has built the index", id="key-pending"),
    pytest.param({"campaign_resources": {"remove": ["cusVehicle"]}}, "campaign.resources",
                 "resource cusVehicle not found (flow vehicles)", "Custom resources → cusVehicle → Publish",
                 id="resource-missing"),
    pytest.param({"campaign_resources": {"remove": ["profile.cusSource"]}}, "campaign.resources",
                 "profile has no field cusSource (flow contacts)", "add cusSource to the profile resource",
                 id="field-missing"),
    pytest.param({"journal": "down"}, "events.journal", "HTTP 503", "check Adobe's status page", id="journal-down"),
    pytest.param({"clock_skew_seconds": 600}, "clock.skew", "s behind the clock of", "synchronise this machine's clock",
                 id="service-clock-ahead"),
    pytest.param({"clock_skew_seconds": -900}, "clock.skew", "s ahead of the clock of", "NTP", id="service-clock-behind"),
]


@pytest.mark.parametrize(("switch", "name", "detail", "fix"), BROKEN)
def test_each_broken_setting_is_found_with_its_fix_and_passes_once_mended(
        live: Live, capsys: pytest.CaptureFixture[str], switch: dict[str, Any], name: str, detail: str,
        fix: str) -> None:
    live.control("PUT", "setup", switch)
    code, found, out = checks(live.config, capsys)
    assert code == 1
    assert found[name]["ok"] is False, out
    assert detail in found[name]["detail"]
    assert fix in found[name]["fix"]
    if "clock_skew_seconds" in switch:  # a Date header counts whole seconds, and the reply takes its time
        seconds = int(re.search(r"clock is (\d+) s", found[name]["detail"]).group(1))  # type: ignore[union-attr]
        assert abs(seconds - abs(switch["clock_skew_seconds"])) <= 2
    failed = [c for c in found.values() if c["ok"] is False]
    assert [c["check"] for c in failed] == [name], "one broken setting, one ✗ (the rest pass or are skipped)"

    live.control("DELETE", "setup")
    code, found, out = checks(live.config, capsys)
    assert code == 0, out
    assert found[name]["ok"] is True


def test_checks_that_depend_on_a_failed_one_are_skipped_not_failed(
        live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    live.control("PUT", "setup", {"application_user": "missing"})
    code, text = doctor(live.config, capsys)
    assert code == 1
    lines = {line.split()[1]: line for line in text.splitlines()[1:-1]}
    assert lines["d365.application_user"].startswith("✗ ")
    assert " — fix: Power Platform admin center → Environments → " in lines["d365.application_user"]
    for name in ("d365.tables", "d365.privileges", "d365.change_tracking", "d365.alternate_keys"):
        assert lines[name].startswith("- "), lines[name]
        assert "skipped: needs d365.application_user to pass first" in lines[name]
    assert text.splitlines()[-1] == "8 passed, 1 failed, 4 skipped"


def test_a_missing_activity_table_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from mapsync import resources
    from mapsync.emulators.server import Emulator, start_in_thread, write_config
    from tests.paths import FIXTURE_MAPPINGS

    snapshots = tmp_path / "served"
    shutil.copytree(resources.snapshots_dir(), snapshots)
    (snapshots / "d365" / "acs_emailbounce.json").unlink()  # an org without that activity table
    shutil.copytree(FIXTURE_MAPPINGS, tmp_path / "mappings")
    served = start_in_thread(Emulator(contacts=10, snapshots=snapshots))
    try:
        config = write_config(tmp_path / "mapsync.yaml", base_url=served.base_url, ca_file=served.ca_file)
        code, found, _out = checks(config, capsys)
    finally:
        served.stop()
    assert code == 1
    tables = found["d365.tables"]
    assert tables["ok"] is False
    assert tables["detail"] == "not in the organization: acs_emailbounce (activity table of flow email_bounces)"
    assert "install the solution that holds acs_emailbounce" in tables["fix"]
    # The key of a missing table is not a second finding about the same cause.
    assert "acs_emailbounce: not installed (see d365.tables)" in found["d365.alternate_keys"]["detail"]


def test_wrong_credentials_are_named_and_no_secret_is_printed(
        live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    creds = Credentials()
    text = live.config.read_text(encoding="utf-8")
    wrong_d365, wrong_campaign = "wrong-d365-secret-4f2a", "wrong-campaign-secret-9b1c"
    live.config.write_text(text.replace(creds.d365_client_secret, wrong_d365)
                           .replace(creds.campaign_client_secret, wrong_campaign), encoding="utf-8")
    code, found, out = checks(live.config, capsys)
    _, plain = doctor(live.config, capsys)
    assert code == 1
    assert found["entra.tenant"]["ok"] is True
    assert found["entra.client_secret"]["ok"] is False
    assert "[AADSTS7000215]" in found["entra.client_secret"]["detail"]
    assert "Certificates & secrets → New client secret" in found["entra.client_secret"]["fix"]
    assert found["d365.application_user"]["ok"] is None
    assert found["ims.credentials"]["ok"] is False
    assert "Retrieve client secret" in found["ims.credentials"]["fix"]
    assert found["events.journal"]["ok"] is None
    for secret in (wrong_d365, wrong_campaign, creds.d365_client_secret, creds.campaign_client_secret):
        assert secret not in out
        assert secret not in plain


def test_a_correct_setup_prints_no_secret_either(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    creds = Credentials()
    for args in ((), ("--format", "json")):
        _, out = doctor(live.config, capsys, *args)
        assert creds.d365_client_secret not in out
        assert creds.campaign_client_secret not in out
        assert "Bearer" not in out and "eyJ" not in out  # no token either (Entra ID tokens are JWTs)


def test_an_unwritable_state_store_is_found(live: Live, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state folder should be", encoding="utf-8")
    text = live.config.read_text(encoding="utf-8")
    live.config.write_text(text.replace("state: sqlite:///.mapsync/e2e.sqlite", f"state: sqlite:///{blocked}/s.sqlite"),
                           encoding="utf-8")
    code, found, _out = checks(live.config, capsys)
    assert code == 1
    assert found["state.writable"]["ok"] is False
    assert "make " in found["state.writable"]["fix"] and "writable" in found["state.writable"]["fix"]


# -- the bulk path: only checked when the environment configures it -----------------------------------------

def _with_bulk(live: Live, **sftp_changes: Any) -> Path:
    """The live config plus the emulator's ``campaign.sftp`` and ``bulk`` (with ``sftp_changes`` applied)."""
    import yaml

    setup = live.emulator.bulk_setup()
    assert setup is not None, "the emulator serves no SFTP storage"
    sftp, bulk = setup.config()
    doc = yaml.safe_load(live.config.read_text(encoding="utf-8"))
    env = doc["environments"]["emulator"]
    env["campaign"]["sftp"] = {**sftp, **sftp_changes}
    env["bulk"] = bulk
    config = live.config.with_name("bulk.yaml")
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return config


def test_the_bulk_path_is_checked_when_configured(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    code, found, text = checks(_with_bulk(live), capsys)
    assert code == 0, text
    assert found["campaign.sftp"]["ok"] and "pinned host key" in found["campaign.sftp"]["detail"]
    assert found["campaign.workflows"]["ok"] and "profile → WKFIMPPROFILE" in found["campaign.workflows"]["detail"]
    assert found["bulk.work_dir"]["ok"] and "is writable;" in found["bulk.work_dir"]["detail"]
    assert " GB free, room for about " in found["bulk.work_dir"]["detail"]
    assert "emulator-sftp-secret" not in text  # the SFTP password is never printed


def test_a_work_dir_that_cannot_be_written_is_found(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    config = _with_bulk(live)
    (config.parent / "not-a-folder").write_text("a file\n")
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    doc["environments"]["emulator"]["bulk"]["work_dir"] = "not-a-folder/bulk"
    config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    code, found, _ = checks(config, capsys)
    assert code == 1
    work_dir = found["bulk.work_dir"]
    assert not work_dir["ok"] and "cannot write in" in work_dir["detail"] and "not-a-folder" in work_dir["detail"]
    assert "emulator.bulk.work_dir" in work_dir["fix"]


def test_a_wrong_host_key_is_refused_and_named(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    code, found, _ = checks(_with_bulk(live, host_key=other), capsys)
    assert code == 1
    sftp = found["campaign.sftp"]
    assert not sftp["ok"] and "another host key than the one pinned" in sftp["detail"]
    assert "campaign.sftp.host_key" in sftp["fix"]


def test_a_stopped_import_workflow_is_found(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    config = _with_bulk(live)
    live.emulator.adobe.workflows.find("WKFIMPPROFILE").state = "stopped"
    code, found, _ = checks(config, capsys)
    assert code == 1
    workflows = found["campaign.workflows"]
    assert not workflows["ok"] and "profile: workflow WKFIMPPROFILE is stopped" in workflows["detail"]
    assert "start the workflow WKFIMPPROFILE in Campaign" in workflows["fix"]
    live.emulator.adobe.workflows.find("WKFIMPPROFILE").state = "started"
    assert checks(config, capsys)[1]["campaign.workflows"]["ok"]
