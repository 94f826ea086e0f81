"""Every bad input a user can type gives one line naming the setting or argument, exit 2, never a traceback.

Each case runs the real command line (``mapsync.engine.cli.main``). The services are configured at a loopback port
nothing listens on: a command that sent a request would fail with a connection error instead of the message
about the input, so each case also shows that the input is refused before any request.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from mapsync.engine.cli import main
from tests.paths import FIXTURE_MAPPINGS

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "https://127.0.0.1:9"  # the discard port: nothing answers there
CONTACT = "2f1e3c1a-6b8d-4c1e-9a3e-0d5f7b9c1e2a"


def _environment() -> dict[str, Any]:
    return {
        "d365": {"url": NOWHERE, "tenant_id": "t", "client_id": "c", "client_secret": "${X_SECRET}",
                 "authority_host": NOWHERE},
        "campaign": {"organization": "o", "client_id": "c", "client_secret": "${X_SECRET}", "ims_url": NOWHERE,
                     "base_url": NOWHERE},
        "events": {"journal_url": f"{NOWHERE}/events/organizations/o/integrations/i/r"},
        "state": "sqlite:///.mapsync/stage.sqlite",
        "ca_file": "ca.pem",
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(FIXTURE_MAPPINGS, tmp_path / "mappings")
    (tmp_path / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("X_SECRET", "s")
    _write(tmp_path, lambda env: None)
    return tmp_path


def _write(project: Path, change: Callable[[dict[str, Any]], None]) -> None:
    env = _environment()
    change(env)
    doc = {"version": 1, "mappings": "mappings", "environments": {"stage": env}}
    (project / "mapsync.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], names: str) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err and "internal error" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert names in lines[0], lines[0]
    return lines[0]


def _set(service: str, key: str, value: str) -> Callable[[dict[str, Any]], None]:
    def change(env: dict[str, Any]) -> None:
        env[service][key] = value
    return change


@pytest.mark.parametrize(("service", "key", "url"), [
    ("d365", "url", "https://127.0.0.1:abc"),
    ("d365", "authority_host", "https://127.0.0.1:99999"),
    ("campaign", "base_url", "https://127.0.0.1:99999"),
    ("campaign", "ims_url", "https://127.0.0.1:0"),
    ("events", "journal_url", "https://127.0.0.1:abc/events/organizations/o/integrations/i/r"),
    ("d365", "url", "https://xn--a.example"),
    ("d365", "url", "https://[::1"),
])
@pytest.mark.parametrize("command", [["status", "--env", "stage"], ["run", "--env", "stage"]])
def test_a_bad_service_url_is_refused_when_the_config_loads(project: Path, capsys: pytest.CaptureFixture[str],
                                                            service: str, key: str, url: str,
                                                            command: list[str]) -> None:
    _write(project, _set(service, key, url))
    _one_line_error(capsys, command, f"environments.stage.{service}.{key}")


def test_a_bad_url_from_an_environment_variable_is_refused_too(project: Path, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_URL", "https://127.0.0.1:abc")
    _write(project, _set("d365", "url", "${CRM_URL}"))
    line = _one_line_error(capsys, ["status", "--env", "stage"], "environments.stage.d365.url")
    assert "invalid port" in line


@pytest.mark.parametrize("url", ["https://user:Zq7planted@127.0.0.1:9", "https://127.0.0.1:9/?token=Zq7planted"])
def test_credentials_in_a_service_url_are_refused_without_being_shown(project: Path, url: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _write(project, _set("campaign", "ims_url", url))
    line = _one_line_error(capsys, ["status", "--env", "stage"], "environments.stage.campaign.ims_url")
    assert "Zq7planted" not in line


@pytest.mark.parametrize("content", [b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n",
                                     b"\x00\xff binary"])
def test_a_ca_file_that_is_not_a_pem_certificate_is_refused(project: Path, content: bytes,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    (project / "ca.pem").write_bytes(content)
    line = _one_line_error(capsys, ["run", "--env", "stage"], "environments.stage.ca_file")
    assert "broken" not in line and "not a certificate" not in line  # the file's content is not quoted


@pytest.mark.parametrize(("key", "says"), [
    ("x" * 100_000, "contactid is a GUID"),
    ("nope", "contactid is a GUID; 'nope' is not one"),
    ("ab'c", "contactid is a GUID"),
    (f"{{{CONTACT}}}", "contactid is a GUID"),
    ("", "contactid needs a value"),
])
def test_explain_checks_the_key_against_its_type_before_any_request(project: Path, key: str, says: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, ["explain", "--env", "stage", "--flow", "contacts", "--key", key], "--key")
    assert says in line and len(line) < 300


@pytest.mark.parametrize("argv", [
    ["deadletters", "retry", "99999999999999999999999", "--env", "stage"],
    ["deadletters", "show", "0", "--env", "stage"],
    ["deadletters", "show", "-5", "--env", "stage"],
])
def test_dead_letter_ids_are_range_checked(project: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line_error(capsys, argv, "ID")
    assert "is not a dead letter id" in line


def test_a_dead_letter_list_limit_is_range_checked(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["deadletters", "list", "--env", "stage", "--limit", str(10**30)], "--limit")


@pytest.mark.parametrize("seconds", ["nan", "inf", "-inf", "0", "-1", "1e400"])
def test_watch_needs_a_finite_positive_number(project: Path, seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["run", "--env", "stage", f"--watch={seconds}"], "--watch")
