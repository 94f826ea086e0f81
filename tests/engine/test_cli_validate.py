"""`mapsync validate`: exit codes, text and JSON output, the summary line, a misspelt field end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mapsync.dsl.schema import load_catalog
from mapsync.engine.commands import schema as schema_cmd
from mapsync.engine.commands import validate as validate_cmd

ROOT = Path(__file__).resolve().parent.parent.parent
MISSPELT = """flow contacts {
  from d365.contact
  to   campaign.profile
  key  contactid -> externalId
  map {
    email = lower(emailadress1)
  }
}
"""


def mapsync(argv: list[str]) -> int:
    """Parse with the command's own parser (as `mapsync` does) and run it."""
    parser = argparse.ArgumentParser(prog="mapsync")
    validate_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture(autouse=True)
def _in_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_shipped_mappings_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert mapsync(["validate", "mappings/"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("5 files, 6 flows: 0 errors, ")


def test_default_path_is_mappings(capsys: pytest.CaptureFixture[str]) -> None:
    assert mapsync(["validate"]) == 0
    assert "5 files, 6 flows" in capsys.readouterr().out


def test_misspelt_field_shows_location_caret_and_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.map"
    bad.write_text(MISSPELT, encoding="utf-8")
    assert mapsync(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].endswith("bad.map:6:19: error[E103]: unknown field `emailadress1` on d365.contact")
    assert lines[2] == "6 |     email = lower(emailadress1)"
    assert lines[3] == "  |                   ^^^^^^^^^^^^"
    assert lines[4] == "  = hint: did you mean `emailaddress1`?"
    assert lines[-1] == "1 file, 1 flow: 1 error, 0 warnings"


def test_json_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.map"
    bad.write_text(MISSPELT, encoding="utf-8")
    assert mapsync(["validate", "--format", "json", str(bad)]) == 1
    captured = capsys.readouterr()
    (item,) = json.loads(captured.out)
    assert (item["code"], item["line"], item["column"], item["severity"]) == ("E103", 6, 19, "error")
    assert item["hint"] == "did you mean `emailaddress1`?"
    assert "1 error" in captured.err


def test_warnings_only_exit_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "w.map").write_text(MISSPELT.replace("lower(emailadress1)", "emailaddress1\n    firstName = firstname"),
                                    encoding="utf-8")
    assert mapsync(["validate", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "warning[W101]" in out
    assert out.splitlines()[-1] == "1 file, 1 flow: 0 errors, 1 warning"


@pytest.mark.parametrize("argv", [["validate", "no/such/folder"], ["validate", "--format", "xml"]])
def test_usage_errors_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        code = mapsync(argv)
        raise SystemExit(code)
    assert exc.value.code == 2


def test_empty_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert mapsync(["validate", str(tmp_path)]) == 2
    assert "no .map files" in capsys.readouterr().err


def test_env_without_live_provider_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert mapsync(["validate", "--env", "stage"]) == 2


def test_env_uses_the_live_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A "live" schema where contact lacks emailaddress1: the shipped contacts flow then has an error.
    shipped = load_catalog()
    contact = shipped.table("d365", "contact")
    assert contact is not None
    import dataclasses

    fields = {k: v for k, v in contact.fields.items() if k != "emailaddress1"}
    live = shipped.replace([dataclasses.replace(contact, fields=fields)])
    seen: list[str] = []

    def provider(args: argparse.Namespace) -> object:
        seen.append(args.env)
        return live

    monkeypatch.setattr(schema_cmd, "live_catalog", provider)  # what `--env` asks, instead of a live service
    assert mapsync(["validate", "--env", "stage", "mappings/"]) == 1
    assert seen == ["stage"]
    assert "unknown field `emailaddress1` on d365.contact" in capsys.readouterr().out


def test_through_the_mapsync_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mapsync.engine.commands.fmt")  # every command of COMMANDS must exist to build the CLI
    from mapsync.engine.cli import main

    assert main(["validate", "mappings/"]) == 0


def test_env_needs_no_other_module_imported_first(tmp_path: Path) -> None:
    """`validate --env` used to work only once importing commands/schema.py had set a global in validate.py."""
    import subprocess
    import sys

    script = ("import argparse, sys\n"
              "from mapsync.engine.commands import validate\n"
              "args = argparse.Namespace(env='stage', config='missing.yaml', paths=['mappings/'], format='text')\n"
              "sys.exit(validate.run(args))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not built yet" not in done.stderr
    assert "missing.yaml" in done.stderr  # it went for the live schema: the configuration is what is missing
