"""What `mapsync doctor` asks of the services, read from the mappings; and how its findings are printed."""

from __future__ import annotations

from mapsync.dsl.compiler import compile_project
from mapsync.dsl.project import load_project
from mapsync.dsl.schema import load_catalog
from mapsync.engine.commands.doctor import render
from mapsync.engine.doctor import Check, needs_of
from tests.paths import FIXTURE_MAPPINGS, FIXTURE_SNAPSHOTS


def fixture_needs():  # type: ignore[no-untyped-def]
    project, diagnostics = load_project([FIXTURE_MAPPINGS], root=FIXTURE_MAPPINGS)
    assert not [d for d in diagnostics if d.is_error]
    catalog = load_catalog(FIXTURE_SNAPSHOTS)
    return needs_of(compile_project(project, catalog), catalog)


def test_privileges_follow_what_each_flow_reads_and_writes() -> None:
    needs = fixture_needs()
    events = ("acs_emailsend", "acs_emailopen", "acs_emailclick", "acs_emailbounce")
    expected = {("Read", "contact"), ("Write", "contact"), ("Read", "new_vehicle"), ("AppendTo", "contact")}
    expected |= {(access, table) for table in events for access in ("Create", "Read", "Append")}
    assert set(needs.privileges) == expected
    assert needs.privileges[("Write", "contact")] == {"opt-out email (writes donotbulkemail)"}
    assert needs.privileges[("Read", "contact")] == {"flow contacts", "opt-out email"}
    assert "flow email_sends (regardingobjectid)" in needs.privileges[("AppendTo", "contact")]


def test_tables_tracking_keys_and_campaign_fields() -> None:
    needs = fixture_needs()
    assert set(needs.d365_reads) == {"contact", "new_vehicle"}
    assert needs.activities == {"acs_emailsend", "acs_emailopen", "acs_emailclick", "acs_emailbounce"}
    assert needs.keys["acs_emailsend"] == ("acs_eventid", {"flow email_sends"})
    assert needs.events == {"email_sends", "email_opens", "email_clicks", "email_bounces"}
    profile = needs.campaign_fields["profile"]
    assert {"externalId", "email", "location.city", "cusSource", "blackListEmail"} <= set(profile)
    assert profile["blackListEmail"] == {"opt-out email"}
    assert "cusVehicle" in needs.campaign_fields


def test_text_is_one_line_per_check_and_falls_back_to_words_without_unicode() -> None:
    checks = [Check("a.one", True, "fine"), Check("b.two", False, "broken", "do this → then that"),
              Check("c.three", None, "skipped: needs b.two to pass first")]
    text = render(checks, "stage")
    assert text.splitlines() == [
        "mapsync doctor — environment stage",
        "✓ a.one    fine",
        "✗ b.two    broken — fix: do this → then that",
        "- c.three  skipped: needs b.two to pass first",
        "1 passed, 1 failed, 1 skipped",
    ]
    plain = render(checks, "stage", encoding="ascii")
    plain.encode("ascii")
    assert "FAIL b.two" in plain and "fix: do this -> then that" in plain
